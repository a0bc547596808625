package patches

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestHostURI(t *testing.T) {
	for host, want := range map[string]string{
		"203.0.113.10":              "203.0.113.10",
		"2001:db8::10":              "[2001:db8::10]",
		"::1":                       "[::1]",
		"::ffff:203.0.113.10":       "[::ffff:203.0.113.10]",
		"node-1.nodes.example.com":  "node-1.nodes.example.com",
		"":                          "",
		"[2001:db8::10]":            "[2001:db8::10]",
		"fe80::1%eth0":              "[fe80::1%eth0]",
		"broker.example.com.":       "broker.example.com.",
		"2001:db8:0:0:0:0:0:10":     "[2001:db8:0:0:0:0:0:10]",
		"xn--bcher-kva.example.com": "xn--bcher-kva.example.com",
	} {
		assert.Equal(t, want, HostURI(host), host)
	}
}

func TestSelectAddressIPFamily(t *testing.T) {
	dual := node("n1", "z1",
		addr(corev1.NodeInternalIP, "10.0.0.1"),
		addr(corev1.NodeInternalIP, "fd00::1"),
		addr(corev1.NodeExternalIP, "203.0.113.1"),
		addr(corev1.NodeExternalIP, "2001:db8::1"),
	)
	v6First := node("n2", "", addr(corev1.NodeExternalIP, "2001:db8::2"), addr(corev1.NodeExternalIP, "203.0.113.2"))
	named := node("n3", "", addr(corev1.NodeExternalDNS, "n3.example.com"), addr(corev1.NodeExternalIP, "2001:db8::3"))
	tests := map[string]struct {
		node    *corev1.Node
		family  IPFamily
		want    string
		wantErr string
	}{
		"default: the first of the preferred type":            {node: dual, want: "203.0.113.1"},
		"default keeps the node's order":                      {node: v6First, want: "2001:db8::2"},
		"IPv6 on dual-stack":                                  {node: dual, family: IPv6, want: "2001:db8::1"},
		"IPv4 on dual-stack":                                  {node: v6First, family: IPv4, want: "203.0.113.2"},
		"a DNS name has no family":                            {node: named, family: IPv4, want: "n3.example.com"},
		"the family before the next type":                     {node: node("n4", "", addr(corev1.NodeExternalIP, "203.0.113.4"), addr(corev1.NodeInternalIP, "fd00::4")), family: IPv6, want: "fd00::4"},
		"IPv4-mapped IPv6 is not an IPv6 node address family": {node: node("n5", "", addr(corev1.NodeExternalIP, "::ffff:203.0.113.5")), family: IPv6, wantErr: "of family IPv6 (brokerport.io/ip-family)"},
		"no address of the family": {node: node("n6", "", addr(corev1.NodeExternalIP, "203.0.113.6")), family: IPv6,
			wantErr: `node "n6" has no address of the accepted types [ExternalDNS ExternalIP InternalDNS InternalIP Hostname] of family IPv6 (brokerport.io/ip-family) (it has [ExternalIP=203.0.113.6])`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := SelectAddress(tc.node, Config{AddressTypes: DefaultAddressTypes, IPFamily: tc.family})
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got.Host)
		})
	}
}

func TestParseIPFamily(t *testing.T) {
	for v, want := range map[string]IPFamily{"IPv4": IPv4, "IPv6": IPv6} {
		cfg, errs := ParseConfig(map[string]string{AnnotationIPFamily: v}, nil, DefaultOptions())
		require.Empty(t, errs)
		assert.Equal(t, want, cfg.IPFamily)
	}
	for _, v := range []string{"", "ipv6", "IPv4,IPv6", "SingleStack"} {
		_, errs := ParseConfig(map[string]string{AnnotationIPFamily: v}, nil, DefaultOptions())
		require.Len(t, errs, 1, v)
		assert.Contains(t, errs[0].Error(), `brokerport.io/ip-family`)
	}
}

// Every host:port brokerport writes brackets an IPv6 host: the annotations, and the variables and
// listener entries built on them.
func TestIPv6AddressesAreBracketed(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "kafka-0", Labels: map[string]string{LabelExpose: ExposeValue, LabelCluster: "kafka"}, Annotations: map[string]string{AnnotationPortBase: "30000", AnnotationFlavor: "kafka"}},
		Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "kafka", Env: []corev1.EnvVar{
			{Name: "KAFKA_LISTENERS", Value: "INTERNAL://:9092"},
			{Name: "KAFKA_ADVERTISED_LISTENERS", Value: "INTERNAL://kafka-0.kafka:9092"},
			{Name: "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", Value: "INTERNAL:PLAINTEXT"},
		}}}},
	}
	require.Empty(t, MutatePod(pod, node("n1", "", addr(corev1.NodeExternalIP, "2001:db8::1")), DefaultOptions()))
	assert.Equal(t, "2001:db8::1", pod.Annotations[AnnotationHost])
	assert.Equal(t, "[2001:db8::1]", pod.Annotations[AnnotationHostURI])
	env := map[string]string{}
	for _, e := range pod.Spec.Containers[0].Env {
		env[e.Name] = e.Value
	}
	assert.Equal(t, "$(BROKERPORT_HOST_URI):$(BROKERPORT_KAFKA_PORT)", env["BROKERPORT_KAFKA_ADDRESS"])
	assert.Equal(t, "INTERNAL://kafka-0.kafka:9092,EXTERNAL://$(BROKERPORT_HOST_URI):$(BROKERPORT_KAFKA_PORT)", env["KAFKA_ADVERTISED_LISTENERS"])
	assert.Equal(t, "INTERNAL://:9092,EXTERNAL://:9094", env["KAFKA_LISTENERS"], "the external listener binds every address family")
	names := []string{}
	for _, e := range pod.Spec.Containers[0].Env {
		names = append(names, e.Name)
	}
	assert.Less(t, indexOf(names, "BROKERPORT_HOST"), indexOf(names, "BROKERPORT_HOST_URI"))
	assert.Less(t, indexOf(names, "BROKERPORT_HOST_URI"), indexOf(names, "BROKERPORT_KAFKA_ADDRESS"), "defined before the variables that refer to it")
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}
