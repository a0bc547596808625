package patches

import (
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// NodeAddress is where a broker on a node is reached from outside.
type NodeAddress struct {
	Node string
	Host string
	Zone string
	// Fallback, when set, says why the host is the node's address by preference rather than what
	// the host template gives: the caller records it as a Warning Event, so that the fallback is
	// never silent.
	Fallback string
}

// SelectAddress picks a node's host: the template when there is one, else the node's first
// address of the most preferred type. A node with none of the accepted types is an error that
// says which types it has, never an empty or guessed host.
//
// When the template cannot give this node a valid host (it uses {{.Zone}} and the node has no
// zone label, or what it gives is not a DNS name or an IP address), the node's address by
// preference is used instead and Fallback says why: the broker starts with an address that
// reaches its node rather than with none.
func SelectAddress(node *corev1.Node, cfg Config) (NodeAddress, error) {
	out := NodeAddress{Node: node.Name, Zone: node.Labels[LabelZone]}
	if t := cfg.HostTemplate; t != nil {
		if t.UsesZone() && out.Zone == "" {
			out.Fallback = fmt.Sprintf("node %q has no %s label, which %s uses", node.Name, LabelZone, AnnotationHostTemplate)
		} else if host, err := t.Execute(HostData{Node: node.Name, Zone: out.Zone}); err != nil {
			out.Fallback = fmt.Sprintf("%s %v", AnnotationHostTemplate, err)
		} else {
			out.Host = host
			return out, nil
		}
	}
	for _, want := range cfg.AddressTypes {
		for _, a := range node.Status.Addresses {
			if a.Type == want && a.Address != "" && cfg.IPFamily.accepts(a.Address) {
				out.Host = a.Address
				if out.Fallback != "" {
					out.Fallback += fmt.Sprintf("; using its %s %s instead", a.Type, a.Address)
				}
				return out, nil
			}
		}
	}
	have := make([]string, 0, len(node.Status.Addresses))
	for _, a := range node.Status.Addresses {
		have = append(have, fmt.Sprintf("%s=%s", a.Type, a.Address))
	}
	accepted := fmt.Sprint(cfg.AddressTypes)
	if cfg.IPFamily != "" {
		accepted += " of family " + string(cfg.IPFamily) + " (" + AnnotationIPFamily + ")"
	}
	if out.Fallback != "" {
		return out, fmt.Errorf("%s, and it has no address of the accepted types %s either (it has %v)", out.Fallback, accepted, have)
	}
	return out, fmt.Errorf("node %q has no address of the accepted types %s (it has %v); set %s or %s", node.Name, accepted, have, AnnotationAddressTypes, AnnotationHostTemplate)
}

// IPFamily restricts a dual-stack node's IP addresses to one family; "" takes the first address
// of the preferred type, whatever its family.
type IPFamily string

const (
	IPFamilyAny IPFamily = ""
	IPv4        IPFamily = "IPv4"
	IPv6        IPFamily = "IPv6"
)

// accepts tells whether a node address is of the family. Names (DNS, Hostname) have no family
// of their own and are always accepted.
func (f IPFamily) accepts(address string) bool {
	ip, err := netip.ParseAddr(address)
	if f == IPFamilyAny || err != nil {
		return true
	}
	return (f == IPv6) == (ip.Is6() && !ip.Is4In6())
}

// HostURI is a host as it goes before ":port" in an address: an IPv6 literal in brackets
// (RFC 3986), any other host as it is.
func HostURI(host string) string {
	if strings.Contains(host, ":") && !strings.HasPrefix(host, "[") {
		return "[" + host + "]"
	}
	return host
}
