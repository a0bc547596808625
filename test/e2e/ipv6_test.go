//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/brokerport/brokerport/patches"
	"github.com/brokerport/brokerport/webhook/controller"
)

// ipv6Taint keeps every other test's brokers off the IPv6 nodes, and ipv6Label puts this test's
// brokers on them.
const (
	ipv6Label = "brokerport-e2e/ipv6"
	ipv6Taint = "brokerport-e2e/ipv6"
)

// TestIPv6 exposes an Apache Kafka StatefulSet on dual-stack nodes whose IPv4 address is
// internal and whose ExternalIP is ::1, with brokerport.io/ip-family: IPv6: every broker must be
// given ::1, advertise [::1]:<its port> (brackets and all, as the kubelet resolves its
// environment), bind its external listener on every address family, and be reached there by
// franz-go and kcat bootstrapping from the published bootstrap.servers.
func TestIPv6(t *testing.T) {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback on this machine: %v", err)
	}
	ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	nodes := ipv6Nodes(3)
	for _, n := range nodes {
		require.NoError(t, env.admin.Create(ctx, n))
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			_ = env.admin.Delete(context.Background(), n)
		}
	})
	require.NoError(t, waitFor(ctx, time.Minute, "the IPv6 nodes Ready", func() error {
		for _, n := range nodes {
			got := &corev1.Node{}
			if err := env.admin.Get(ctx, client.ObjectKeyFromObject(n), got); err != nil {
				return err
			}
			if !ready(got) {
				return fmt.Errorf("node %s is not Ready", n.Name)
			}
		}
		return nil
	}))

	const ns = "ipv6"
	require.NoError(t, env.admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	t.Cleanup(func() {
		// Gone before the next test, which may count on the lowest port block being free.
		bg := context.Background()
		namespace := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}
		_ = env.admin.Delete(bg, namespace)
		_ = waitFor(bg, 2*time.Minute, "namespace ipv6 gone", func() error {
			if err := env.admin.Get(bg, client.ObjectKeyFromObject(namespace), namespace); err == nil {
				return fmt.Errorf("namespace %s is %s", ns, namespace.Status.Phase)
			}
			return nil
		})
	})
	sts := kafkaStatefulSet()
	sts.Namespace = ns
	// The IPv4 InternalIP comes first by preference: only the family makes it ::1.
	sts.Annotations[patches.AnnotationAddressTypes] = "InternalIP,ExternalIP"
	sts.Annotations[patches.AnnotationIPFamily] = "IPv6"
	sts.Spec.Template.Spec.NodeSelector = map[string]string{ipv6Label: "true"}
	sts.Spec.Template.Spec.Tolerations = []corev1.Toleration{{Key: ipv6Taint, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}
	require.NoError(t, env.admin.Create(ctx, sts))
	t.Cleanup(func() { _ = env.admin.Delete(context.Background(), sts) })
	require.NoError(t, waitFor(ctx, 2*time.Minute, "the IPv6 brokers published", func() error { return published(ctx, ns, sts.Name, 3) }))

	for i := range 3 {
		pod := &corev1.Pod{}
		require.NoError(t, env.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: fmt.Sprintf("kafka-%d", i)}, pod))
		require.Equal(t, "::1", pod.Annotations[patches.AnnotationHost], "pod %s", pod.Name)
		require.Equal(t, "[::1]", pod.Annotations[patches.AnnotationHostURI], "pod %s", pod.Name)
		resolved, err := resolveEnv(pod, "kafka")
		require.NoError(t, err)
		port := kafkaHostPort(pod)
		require.Equal(t, fmt.Sprintf("[::1]:%d", port), resolved["BROKERPORT_KAFKA_ADDRESS"])
		require.Contains(t, strings.Split(resolved["KAFKA_ADVERTISED_LISTENERS"], ","), fmt.Sprintf("EXTERNAL://[::1]:%d", port))
		require.Contains(t, strings.Split(resolved["KAFKA_LISTENERS"], ","), "EXTERNAL://:9094", "the external listener binds every address family")
	}
	cm := &corev1.ConfigMap{}
	require.NoError(t, env.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: controller.ConfigMapName(sts.Name)}, cm))
	for _, server := range strings.Split(cm.Data["bootstrap.servers"], ",") {
		require.True(t, strings.HasPrefix(server, "[::1]:"), "bootstrap.servers=%q", cm.Data["bootstrap.servers"])
	}

	require.NoError(t, checkKafka(ctx, ns, sts.Name, "kafka", 3, externalListener, nil))
}

// ipv6Nodes are kwok nodes with an IPv4 InternalIP and the IPv6 loopback as ExternalIP, tainted
// so that only this test's brokers land there (test/cluster.CreateNodes makes IPv4 nodes).
func ipv6Nodes(n int) []*corev1.Node {
	var nodes []*corev1.Node
	for i := range n {
		name := fmt.Sprintf("kwok-ipv6-%d", i)
		capacity := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("32"), corev1.ResourceMemory: resource.MustParse("256Gi"), corev1.ResourcePods: resource.MustParse("110")}
		nodes = append(nodes, &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{
				Name:        name,
				Annotations: map[string]string{"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
				Labels: map[string]string{
					corev1.LabelHostname: name, corev1.LabelTopologyZone: fmt.Sprintf("zone-%c", 'a'+i%2), ipv6Label: "true",
					"type": "kwok", corev1.LabelOSStable: "linux", corev1.LabelArchStable: "amd64",
				},
			},
			Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: ipv6Taint, Value: "true", Effect: corev1.TaintEffectNoSchedule}}},
			Status: corev1.NodeStatus{
				Addresses: []corev1.NodeAddress{
					{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("10.6.0.%d", i+1)},
					{Type: corev1.NodeExternalIP, Address: "::1"},
				},
				Allocatable: capacity,
				Capacity:    capacity,
			},
		})
	}
	return nodes
}

func ready(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
