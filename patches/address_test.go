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

	tests := map[string]struct {
		node     *corev1.Node
		types    []corev1.NodeAddressType
		template *HostTemplate
		want     string
		wantErr  string
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
		"template giving no valid host": {
			node: node("n4", ""), template: tmpl,
			wantErr: `template "{{.Node}}.{{.Zone}}.nodes.example.com" gives "n4..nodes.example.com" for node "n4", which is neither a DNS name nor an IP address`,
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
			assert.Equal(t, tc.node.Name, got.Node)
			assert.Equal(t, tc.node.Labels[LabelZone], got.Zone)
		})
	}
}
