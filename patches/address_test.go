package patches

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func node(name, zone string, addrs ...corev1.NodeAddress) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NodeStatus{Addresses: addrs}}
	if zone != "" {
		n.Labels = map[string]string{LabelZone: zone}
	}
	return n
}

func addr(t corev1.NodeAddressType, a string) corev1.NodeAddress {
	return corev1.NodeAddress{Type: t, Address: a}
}

func TestSelectAddress(t *testing.T) {
	all := node("n1", "z1",
		addr(corev1.NodeHostName, "n1"),
		addr(corev1.NodeInternalIP, "10.0.0.1"),
		addr(corev1.NodeInternalDNS, "n1.internal"),
		addr(corev1.NodeExternalIP, "203.0.113.1"),
		addr(corev1.NodeExternalDNS, "n1.example.com"),
	)
	tmpl, err := ParseHostTemplate("{{.Node}}.{{.Zone}}.nodes.example.com")
	require.NoError(t, err)
	nodeOnly, err := ParseHostTemplate("{{.Node}}.nodes.example.com")
	require.NoError(t, err)

	zoneLess := node("n4", "", addr(corev1.NodeInternalIP, "10.0.0.4"), addr(corev1.NodeExternalIP, "203.0.113.4"))
	badZone := node("n6", "zone_a", addr(corev1.NodeInternalIP, "10.0.0.6"))

	tests := map[string]struct {
		node         *corev1.Node
		types        []corev1.NodeAddressType
		template     *HostTemplate
		want         string
		wantFallback string
		wantErr      string
	}{
		"ExternalDNS first":                    {node: all, types: DefaultAddressTypes, want: "n1.example.com"},
		"ExternalIP":                           {node: all, types: []corev1.NodeAddressType{corev1.NodeExternalIP}, want: "203.0.113.1"},
		"InternalDNS":                          {node: all, types: []corev1.NodeAddressType{corev1.NodeInternalDNS}, want: "n1.internal"},
		"InternalIP":                           {node: all, types: []corev1.NodeAddressType{corev1.NodeInternalIP}, want: "10.0.0.1"},
		"Hostname":                             {node: all, types: []corev1.NodeAddressType{corev1.NodeHostName}, want: "n1"},
		"preference order is the annotation's": {node: all, types: []corev1.NodeAddressType{corev1.NodeInternalIP, corev1.NodeExternalIP}, want: "10.0.0.1"},
		"fallback to the next type": {
			node:  node("n2", "", addr(corev1.NodeInternalIP, "10.0.0.2")),
			types: DefaultAddressTypes, want: "10.0.0.2",
		},
		"empty address is skipped": {
			node:  node("n3", "", addr(corev1.NodeExternalIP, ""), addr(corev1.NodeInternalIP, "10.0.0.3")),
			types: DefaultAddressTypes, want: "10.0.0.3",
		},
		"template wins over addresses": {node: all, types: DefaultAddressTypes, template: tmpl, want: "n1.z1.nodes.example.com"},
		"template without zone on a zone-less node": {
			node: zoneLess, types: DefaultAddressTypes, template: nodeOnly, want: "n4.nodes.example.com",
		},
		// Rendering {{.Zone}} as "" would give n4..nodes.example.com (refused) or, for
		// {{.Node}}{{.Zone}}.example.com, a valid but wrong host: the node's address is used instead.
		"zone-less node falls back to its address by preference": {
			node: zoneLess, types: DefaultAddressTypes, template: tmpl, want: "203.0.113.4",
			wantFallback: `node "n4" has no topology.kubernetes.io/zone label, which brokerport.io/host-template uses; using its ExternalIP 203.0.113.4 instead`,
		},
		"zone-less node falls back in the annotation's order": {
			node: zoneLess, types: []corev1.NodeAddressType{corev1.NodeInternalIP}, template: tmpl, want: "10.0.0.4",
			wantFallback: `node "n4" has no topology.kubernetes.io/zone label, which brokerport.io/host-template uses; using its InternalIP 10.0.0.4 instead`,
		},
		"a zone that makes no DNS name falls back": {
			node: badZone, types: DefaultAddressTypes, template: tmpl, want: "10.0.0.6",
			wantFallback: `brokerport.io/host-template gives "n6.zone_a.nodes.example.com" for node "n6", which is neither an IP address nor a DNS name: '_' is not a letter, digit, '-' or '.'; using its InternalIP 10.0.0.6 instead`,
		},
		"zone-less node without an accepted address": {
			node: node("n7", "", addr(corev1.NodeInternalIP, "10.0.0.7")), types: []corev1.NodeAddressType{corev1.NodeExternalIP}, template: tmpl,
			wantErr: `node "n7" has no topology.kubernetes.io/zone label, which brokerport.io/host-template uses, and it has no address of the accepted types [ExternalIP] either (it has [InternalIP=10.0.0.7])`,
		},
		"none of the accepted types": {
			node:    node("n5", "", addr(corev1.NodeInternalIP, "10.0.0.5")),
			types:   []corev1.NodeAddressType{corev1.NodeExternalIP},
			wantErr: `node "n5" has no address of the accepted types [ExternalIP] (it has [InternalIP=10.0.0.5]); set brokerport.io/address-types or brokerport.io/host-template`,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := SelectAddress(tc.node, Config{AddressTypes: tc.types, HostTemplate: tc.template})
			if tc.wantErr != "" {
				require.EqualError(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got.Host)
			assert.Equal(t, tc.wantFallback, got.Fallback)
			assert.Equal(t, tc.node.Name, got.Node)
			assert.Equal(t, tc.node.Labels[LabelZone], got.Zone)
		})
	}
}
