package patches

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"text/template"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// HostTemplate builds a broker's host from its node, e.g. "{{.Node}}.nodes.example.com".
type HostTemplate struct {
	text string
	tmpl *template.Template
}

// HostData is what a host template can use.
type HostData struct {
	Node string // the node's name
	Zone string // the node's topology.kubernetes.io/zone label, "" when it has none
}

// ParseHostTemplate parses and test-runs a host template, so that a broken one is refused when
// the StatefulSet is labeled, not when a broker is bound.
func ParseHostTemplate(text string) (*HostTemplate, error) {
	tmpl, err := template.New("host").Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, fmt.Errorf("not a Go template: %v; fields available: {{.Node}}, {{.Zone}}", err)
	}
	t := &HostTemplate{text: text, tmpl: tmpl}
	if _, err := t.Execute(HostData{Node: "node-0", Zone: "zone-a"}); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *HostTemplate) String() string { return t.text }

// Execute renders the host and checks it is a DNS name or an IP address.
func (t *HostTemplate) Execute(data HostData) (string, error) {
	var b bytes.Buffer
	if err := t.tmpl.Execute(&b, data); err != nil {
		return "", fmt.Errorf("template %q: %v; fields available: {{.Node}}, {{.Zone}}", t.text, err)
	}
	host := b.String()
	if !isHost(host) {
		return "", fmt.Errorf("template %q gives %q for node %q, which is neither a DNS name nor an IP address", t.text, host, data.Node)
	}
	return host, nil
}

func isHost(s string) bool {
	return net.ParseIP(s) != nil || len(validation.IsDNS1123Subdomain(strings.ToLower(s))) == 0
}

// NodeAddress is where a broker on a node is reached from outside.
type NodeAddress struct {
	Node string
	Host string
	Zone string
}

// SelectAddress picks a node's host: the template when there is one, else the node's first
// address of the most preferred type. A node with none of the accepted types is an error that
// says which types it has, never an empty or guessed host.
func SelectAddress(node *corev1.Node, cfg Config) (NodeAddress, error) {
	out := NodeAddress{Node: node.Name, Zone: node.Labels[LabelZone]}
	if cfg.HostTemplate != nil {
		host, err := cfg.HostTemplate.Execute(HostData{Node: node.Name, Zone: out.Zone})
		out.Host = host
		return out, err
	}
	for _, want := range cfg.AddressTypes {
		for _, a := range node.Status.Addresses {
			if a.Type == want && a.Address != "" {
				out.Host = a.Address
				return out, nil
			}
		}
	}
	have := make([]string, 0, len(node.Status.Addresses))
	for _, a := range node.Status.Addresses {
		have = append(have, fmt.Sprintf("%s=%s", a.Type, a.Address))
	}
	return out, fmt.Errorf("node %q has no address of the accepted types %v (it has %v); set %s or %s", node.Name, cfg.AddressTypes, have, AnnotationAddressTypes, AnnotationHostTemplate)
}
