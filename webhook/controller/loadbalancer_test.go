package controller

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/brokerport/brokerport/patches"
)

// newLoadBalancerFixture is the fixture's StatefulSet switched to the loadbalancer strategy, its
// brokers admitted for it (no hostPorts) and bound with no address yet, and a clock.
func newLoadBalancerFixture(t *testing.T) (*fixture, *time.Time) {
	f := newFixture(t)
	ctx := context.Background()
	f.sts.Annotations = map[string]string{
		patches.AnnotationListeners:          "kafka=9094,http=8083",
		patches.AnnotationStrategy:           string(patches.StrategyLoadBalancer),
		patches.AnnotationServiceAnnotations: `{"lb.example.com/scheme":"internet-facing","lb.example.com/type":"nlb"}`,
	}
	require.NoError(t, f.client.Update(ctx, f.sts))
	for i := range 3 {
		pod := f.pod(i, "")
		require.NoError(t, f.client.Get(ctx, client.ObjectKeyFromObject(pod), pod))
		pod.Annotations = maps.Clone(f.sts.Annotations) // as admitted from the StatefulSet's template
		pod.Spec.Containers[0].Ports = nil
		require.NoError(t, f.client.Update(ctx, pod))
	}
	now := time.Now()
	f.r.Now = func() time.Time { return now }
	return f, &now
}

// giveIngress is the load balancer giving broker i's Service an address.
func (f *fixture) giveIngress(i int, ingress corev1.LoadBalancerIngress) {
	f.t.Helper()
	svc := &corev1.Service{}
	require.NoError(f.t, f.client.Get(context.Background(), client.ObjectKey{Namespace: "kafka", Name: fmt.Sprintf("redpanda-%d-external", i)}, svc))
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{ingress}
	require.NoError(f.t, f.client.Status().Update(context.Background(), svc))
}

func (f *fixture) host(i int) string {
	f.t.Helper()
	pod := &corev1.Pod{}
	require.NoError(f.t, f.client.Get(context.Background(), client.ObjectKey{Namespace: "kafka", Name: fmt.Sprintf("redpanda-%d", i)}, pod))
	return pod.Annotations[patches.AnnotationHost]
}

func TestLoadBalancerServicesThenAddressesAsTheyCome(t *testing.T) {
	f, _ := newLoadBalancerFixture(t)
	ctx := context.Background()
	res, err := f.r.Reconcile(ctx, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(f.sts)})
	require.NoError(t, err)
	assert.Equal(t, blockedRetry, res.RequeueAfter, "looked at again while the load balancers are late")

	svc := &corev1.Service{}
	require.NoError(t, f.client.Get(ctx, client.ObjectKey{Namespace: "kafka", Name: "redpanda-1-external"}, svc))
	assert.Equal(t, corev1.ServiceTypeLoadBalancer, svc.Spec.Type)
	assert.Equal(t, corev1.ServiceExternalTrafficPolicyLocal, svc.Spec.ExternalTrafficPolicy)
	assert.Equal(t, map[string]string{"statefulset.kubernetes.io/pod-name": "redpanda-1"}, svc.Spec.Selector)
	assert.Equal(t, []int32{9094, 8083}, []int32{svc.Spec.Ports[0].Port, svc.Spec.Ports[1].Port})
	assert.Equal(t, []int32{0, 0}, []int32{svc.Spec.Ports[0].NodePort, svc.Spec.Ports[1].NodePort}, "nodePorts are the API server's to allocate")
	assert.Equal(t, "nlb", svc.Annotations["lb.example.com/type"])
	assert.Equal(t, "internet-facing", svc.Annotations["lb.example.com/scheme"])

	assert.Equal(t, "redpanda-0 not exposed: Service redpanda-0-external has no load-balancer address yet\n"+
		"redpanda-1 not exposed: Service redpanda-1-external has no load-balancer address yet\n"+
		"redpanda-2 not exposed: Service redpanda-2-external has no load-balancer address yet", f.configMap()["status"])
	assert.NotContains(t, strings.Join(drainEvents(f.events), "\n"), "Warning", "waiting for a load balancer is not a fault, at first")
	assert.Empty(t, f.host(0), "no address is written before the load balancer gives one: the gate waits")

	f.giveIngress(0, corev1.LoadBalancerIngress{IP: "203.0.113.10"})
	f.giveIngress(1, corev1.LoadBalancerIngress{Hostname: "b1.elb.example.com"})
	f.reconcile()
	assert.Equal(t, "203.0.113.10", f.host(0))
	assert.Equal(t, "b1.elb.example.com", f.host(1))
	assert.Empty(t, f.host(2))
	data := f.configMap()
	assert.Equal(t, "203.0.113.10:9094,b1.elb.example.com:9094", data["bootstrap.servers"])
	assert.Equal(t, "redpanda-0 203.0.113.10:8083\nredpanda-1 b1.elb.example.com:8083", data["http.addresses"])
	assert.Contains(t, strings.Join(drainEvents(f.events), "\n"), "Normal AddressRepaired set brokerport.io/host=203.0.113.10 (node node-0): the broker can start")

	f.giveIngress(2, corev1.LoadBalancerIngress{IP: "2001:db8::12"})
	f.reconcile()
	data = f.configMap()
	assert.Equal(t, "redpanda-0 exposed\nredpanda-1 exposed\nredpanda-2 exposed", data["status"])
	assert.Equal(t, "203.0.113.10:9094,b1.elb.example.com:9094,[2001:db8::12]:9094", data["bootstrap.servers"])
	assert.Contains(t, strings.Join(drainEvents(f.events), "\n"), "Normal Exposed all 3 brokers exposed through their load balancers")

	f.reconcile()
	assert.Empty(t, f.writes, "a second reconcile writes nothing")

	// The API server allocates nodePorts to a LoadBalancer Service (the fake does not): they are
	// kept, not asked away on every reconcile.
	for i := range 3 {
		svc := &corev1.Service{}
		require.NoError(t, f.client.Get(ctx, client.ObjectKey{Namespace: "kafka", Name: fmt.Sprintf("redpanda-%d-external", i)}, svc))
		svc.Spec.Ports[0].NodePort, svc.Spec.Ports[1].NodePort = int32(31000+2*i), int32(31001+2*i)
		require.NoError(t, f.client.Update(ctx, svc))
	}
	f.reconcile()
	assert.Empty(t, f.writes, "allocated nodePorts are no change")
}

// A load balancer that never comes (no controller serves the Service's class or annotations):
// still coming at first, then said, naming the Service and what to check.
func TestLoadBalancerLateIsSaid(t *testing.T) {
	f, now := newLoadBalancerFixture(t)
	f.reconcile()
	f.giveIngress(0, corev1.LoadBalancerIngress{IP: "203.0.113.10"})
	f.giveIngress(1, corev1.LoadBalancerIngress{IP: "203.0.113.11"})
	drainEvents(f.events)

	*now = now.Add(loadBalancerPatience + time.Second)
	res, err := f.r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(f.sts)})
	require.NoError(t, err)
	assert.Zero(t, res.RequeueAfter, "said; the Service's own event brings the next look")
	events := strings.Join(drainEvents(f.events), "\n")
	assert.Contains(t, events, "Warning BrokerNotExposed broker redpanda-2 is not exposed: Service redpanda-2-external has no load-balancer address yet: is a load-balancer controller running")
	assert.NotContains(t, events, "redpanda-0 is not exposed", "one late load balancer hides no other broker")
	assert.Equal(t, "203.0.113.10:9094,203.0.113.11:9094", f.configMap()["bootstrap.servers"])
}

// A load balancer that moves a Service to a new address: the annotations follow, and the
// broker, which still advertises the old one, is told to restart.
func TestLoadBalancerAddressChangedRestartRequired(t *testing.T) {
	f, _ := newLoadBalancerFixture(t)
	f.reconcile()
	f.giveIngress(0, corev1.LoadBalancerIngress{IP: "203.0.113.10"})
	f.reconcile()
	f.giveIngress(0, corev1.LoadBalancerIngress{IP: "203.0.113.99"})
	drainEvents(f.events)
	f.reconcile()
	assert.Equal(t, "203.0.113.99", f.host(0))
	assert.Contains(t, strings.Join(drainEvents(f.events), "\n"), "Warning RestartRequired the address annotations said 203.0.113.10, but Service redpanda-0-external's load-balancer address is 203.0.113.99")
}

// The passed annotations follow the StatefulSet's: a key removed there is removed from the
// Services, one written by someone else (a load-balancer controller) is kept.
func TestLoadBalancerServiceAnnotationsFollow(t *testing.T) {
	f, _ := newLoadBalancerFixture(t)
	ctx := context.Background()
	f.reconcile()
	svc := &corev1.Service{}
	key := client.ObjectKey{Namespace: "kafka", Name: "redpanda-0-external"}
	require.NoError(t, f.client.Get(ctx, key, svc))
	svc.Annotations["metallb.universe.tf/ip-allocated-from-pool"] = "loopback"
	require.NoError(t, f.client.Update(ctx, svc))

	f.sts.Annotations[patches.AnnotationServiceAnnotations] = `{"lb.example.com/type":"alb","lb.example.com/idle":"60"}`
	f.sts.Annotations[patches.AnnotationExternalTrafficPolicy] = "Cluster"
	require.NoError(t, f.client.Update(ctx, f.sts))
	f.reconcile()
	require.NoError(t, f.client.Get(ctx, key, svc))
	assert.Equal(t, "alb", svc.Annotations["lb.example.com/type"])
	assert.Equal(t, "60", svc.Annotations["lb.example.com/idle"])
	assert.NotContains(t, svc.Annotations, "lb.example.com/scheme", "removed from the StatefulSet, removed from the Service")
	assert.Equal(t, "loopback", svc.Annotations["metallb.universe.tf/ip-allocated-from-pool"], "someone else's annotation is kept")
	assert.Equal(t, corev1.ServiceExternalTrafficPolicyCluster, svc.Spec.ExternalTrafficPolicy)

	f.reconcile()
	assert.Empty(t, f.writes, "a second reconcile writes nothing")
}

// Switching strategy on a running StatefulSet converges: the NodePort Services become
// LoadBalancer Services (deleted and created: the two types share no allocation), the brokers
// still on node ports are published where they listen until they roll; and back.
func TestLoadBalancerStrategySwitchConverges(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.reconcile()
	drainEvents(f.events)

	f.sts.Annotations = map[string]string{patches.AnnotationListeners: "kafka=9094,http=8083", patches.AnnotationStrategy: string(patches.StrategyLoadBalancer)}
	require.NoError(t, f.client.Update(ctx, f.sts))
	f.sts.Status.UpdateRevision = "redpanda-2" // as the StatefulSet controller records the new template
	require.NoError(t, f.client.Status().Update(ctx, f.sts))
	f.reconcile()
	assert.Equal(t, []string{
		"delete *v1.Service redpanda-0-external", "create *v1.Service redpanda-0-external",
		"delete *v1.Service redpanda-1-external", "create *v1.Service redpanda-1-external",
		"delete *v1.Service redpanda-2-external", "create *v1.Service redpanda-2-external",
		"update *v1.ConfigMap redpanda-external",
	}, f.writes)
	svc := &corev1.Service{}
	require.NoError(t, f.client.Get(ctx, client.ObjectKey{Namespace: "kafka", Name: "redpanda-0-external"}, svc))
	assert.Equal(t, corev1.ServiceTypeLoadBalancer, svc.Spec.Type)
	assert.Contains(t, f.configMap()["status"], "redpanda-0 not exposed: it still listens on a node port of the nodeport strategy until it restarts")
	assert.NotContains(t, strings.Join(drainEvents(f.events), "\n"), "Warning", "a rollout's steps are not faults")

	f.sts.Annotations = map[string]string{patches.AnnotationListeners: "kafka=9094,http=8083", patches.AnnotationPortBase: "30000"}
	require.NoError(t, f.client.Update(ctx, f.sts))
	f.reconcile()
	require.NoError(t, f.client.Get(ctx, client.ObjectKey{Namespace: "kafka", Name: "redpanda-0-external"}, svc))
	assert.Equal(t, corev1.ServiceTypeNodePort, svc.Spec.Type)
	assert.Equal(t, []int32{30000, 30001}, nodePorts(svc))
	assert.Equal(t, "redpanda-0 exposed\nredpanda-1 exposed\nredpanda-2 exposed", f.configMap()["status"])
}

// Back from loadbalancer to nodeport: the brokers admitted for the load balancer keep their
// address (no node address written over it, no RestartRequired) until they roll.
func TestLoadBalancerBrokersLeftAloneAfterSwitchingBack(t *testing.T) {
	f, _ := newLoadBalancerFixture(t)
	ctx := context.Background()
	f.reconcile()
	f.giveIngress(0, corev1.LoadBalancerIngress{IP: "203.0.113.10"})
	f.reconcile()
	drainEvents(f.events)

	f.sts.Annotations = map[string]string{patches.AnnotationListeners: "kafka=9094,http=8083", patches.AnnotationPortBase: "30000"}
	require.NoError(t, f.client.Update(ctx, f.sts))
	f.sts.Status.UpdateRevision = "redpanda-2"
	require.NoError(t, f.client.Status().Update(ctx, f.sts))
	f.reconcile()
	assert.Equal(t, "203.0.113.10", f.host(0), "left as it was admitted")
	assert.NotContains(t, strings.Join(drainEvents(f.events), "\n"), "Warning")
	assert.Contains(t, f.configMap()["status"], "redpanda-0 not exposed: it listens on no node port (a pod of the loadbalancer strategy) until it restarts")
	assert.Empty(t, f.configMap()["bootstrap.servers"])
}
