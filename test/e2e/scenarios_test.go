//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/brokerport/brokerport/patches"
)

const (
	ns        = "redpanda"
	stsName   = "redpanda"
	listeners = "kafka=9094,http=8083,schema-registry=8084,admin=9645"
)

// The scenarios run in order on one cluster, each starting where the previous one left it.
func TestBrokerport(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	steps := []struct {
		name string
		run  func(*testing.T, context.Context)
	}{
		{"1 opt-in exposes every broker", optIn},
		{"7 real Kafka clients reach every advertised broker", kafkaClients},
		{"2 scale up takes the next ports, scale down removes Services", scale},
		{"4 a node's address change is repaired and a restart asked for", nodeAddressChange},
		{"5 a dry-run create returns the mutation and persists nothing", dryRun},
		{"6 brokerport's own namespace is never touched", ownNamespace},
		{"8 brokerport down mid-rollout: brokers refused, then completed", brokerportDown},
		{"9 20 StatefulSets labeled at once get distinct blocks", concurrentOptIns},
		{"11 a node deleted while a broker is pending", nodeGoneWhilePending},
		{"3 removing the label rolls everything back", optOut},
		{"10 brokerport made no call its RBAC forbids", noForbiddenCalls},
	}
	for _, s := range steps {
		if !t.Run(s.name, func(t *testing.T) { s.run(t, ctx) }) {
			return // later scenarios build on this one
		}
	}
}

// redpandaStatefulSet is shaped like the Redpanda chart's: four external listeners declared as
// container ports, the chart's own (preferred) anti-affinity, a configurator init container.
func redpandaStatefulSet() *appsv1.StatefulSet {
	labels := map[string]string{"app.kubernetes.io/name": "redpanda", "app.kubernetes.io/instance": "redpanda"}
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: stsName, Namespace: ns, Annotations: map[string]string{
			patches.AnnotationListeners: listeners, patches.AnnotationAddressTypes: "ExternalIP,InternalIP",
		}},
		Spec: appsv1.StatefulSetSpec{
			Replicas:    ptrTo(int32(3)),
			ServiceName: stsName,
			Selector:    &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
						PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
							Weight: 100,
							PodAffinityTerm: corev1.PodAffinityTerm{
								TopologyKey:   corev1.LabelTopologyZone,
								LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/name": "redpanda"}},
							},
						}},
					}},
					InitContainers: []corev1.Container{{Name: "redpanda-configurator", Image: "redpanda:e2e"}},
					Containers: []corev1.Container{{
						Name:  "redpanda",
						Image: "redpanda:e2e",
						Ports: []corev1.ContainerPort{
							{Name: "admin", ContainerPort: 9644}, {Name: "admin-default", ContainerPort: 9645},
							{Name: "http", ContainerPort: 8082}, {Name: "http-default", ContainerPort: 8083},
							{Name: "kafka", ContainerPort: 9093}, {Name: "kafka-default", ContainerPort: 9094},
							{Name: "schemaregistry", ContainerPort: 8081}, {Name: "schema-default", ContainerPort: 8084},
						},
					}},
				},
			},
		},
	}
}

// externalPorts maps a listener's containerPort to its index in the annotation.
var externalPorts = map[int32]int{9094: 0, 8083: 1, 8084: 2, 9645: 3}

func optIn(t *testing.T, ctx context.Context) {
	c := env.admin
	require.NoError(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	require.NoError(t, c.Create(ctx, redpandaStatefulSet()))
	waitRolledOut(t, ctx, 3, false)

	// From here on, watch every broker pod: none may ever have a node without its host.
	violations := watchBrokers(t, ctx)

	start := time.Now()
	patchLabels(t, ctx, &appsv1.StatefulSet{}, client.ObjectKey{Namespace: ns, Name: stsName}, `{"metadata":{"labels":{"brokerport.io/expose":"true"}}}`)
	waitRolledOut(t, ctx, 3, true)
	require.NoError(t, waitFor(ctx, 60*time.Second, "3 Services and the ConfigMap", func() error { return checkPublished(ctx, 3) }))
	t.Logf("label to fully exposed: %s", time.Since(start).Round(10*time.Millisecond))

	sts := &appsv1.StatefulSet{}
	require.NoError(t, c.Get(ctx, client.ObjectKey{Namespace: ns, Name: stsName}, sts))
	assert.Equal(t, "30000", sts.Annotations[patches.AnnotationPortBase], "the lowest free block")
	checkBrokers(t, ctx, 3)
	require.NoError(t, checkPublished(ctx, 3))
	assert.Empty(t, violations(), "broker pods seen with a node but no host")
}

func scale(t *testing.T, ctx context.Context) {
	setReplicas(t, ctx, 4)
	waitRolledOut(t, ctx, 4, true)
	require.NoError(t, waitFor(ctx, 60*time.Second, "4 Services", func() error { return checkPublished(ctx, 4) }))
	checkBrokers(t, ctx, 4)
	pod := &corev1.Pod{}
	require.NoError(t, env.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: "redpanda-3"}, pod))
	assert.Equal(t, []int32{30012, 30013, 30014, 30015}, hostPorts(pod), "broker 3 takes the next ports")

	setReplicas(t, ctx, 2)
	waitRolledOut(t, ctx, 2, true)
	require.NoError(t, waitFor(ctx, 60*time.Second, "surplus Services removed", func() error { return checkPublished(ctx, 2) }))

	// kubectl scale past the 8 brokers of the block, through the scale subresource: refused.
	scaleObj, err := env.clientset.AppsV1().StatefulSets(ns).GetScale(ctx, stsName, metav1.GetOptions{})
	require.NoError(t, err)
	scaleObj.Spec.Replicas = 9
	_, err = env.clientset.AppsV1().StatefulSets(ns).UpdateScale(ctx, stsName, scaleObj, metav1.UpdateOptions{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "spec.replicas: Forbidden: broker ordinal 8 would be past the 8 brokers")
}

func nodeAddressChange(t *testing.T, ctx context.Context) {
	c := env.admin
	pod := &corev1.Pod{}
	require.NoError(t, c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "redpanda-0"}, pod))
	node := &corev1.Node{}
	require.NoError(t, c.Get(ctx, client.ObjectKey{Name: pod.Spec.NodeName}, node))
	before := pod.Annotations[patches.AnnotationHost]
	const moved = "127.0.4.1"
	for i, a := range node.Status.Addresses {
		if a.Type == corev1.NodeExternalIP {
			node.Status.Addresses[i].Address = moved
		}
	}
	require.NoError(t, c.Status().Update(ctx, node))

	require.NoError(t, waitFor(ctx, 60*time.Second, "the annotation repaired", func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
			return err
		}
		if got := pod.Annotations[patches.AnnotationHost]; got != moved {
			return fmt.Errorf("host is %s", got)
		}
		return nil
	}))
	require.NoError(t, waitFor(ctx, 30*time.Second, "a RestartRequired Event", func() error {
		var list eventsv1.EventList
		if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range list.Items {
			if e.Reason == "RestartRequired" && e.Regarding.Name == pod.Name &&
				strings.Contains(e.Note, fmt.Sprintf("said %s, but node %s's address is %s", before, node.Name, moved)) {
				return nil
			}
		}
		return fmt.Errorf("no RestartRequired event for %s among %d", pod.Name, len(list.Items))
	}))
	require.NoError(t, waitFor(ctx, 30*time.Second, "the ConfigMap updated", func() error { return checkPublished(ctx, 2) }))
}

func dryRun(t *testing.T, ctx context.Context) {
	sts := &appsv1.StatefulSet{}
	require.NoError(t, env.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: stsName}, sts))
	// As the StatefulSet controller would make it: controlled by the StatefulSet.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "redpanda-7", Namespace: ns, Labels: sts.Spec.Template.Labels, Annotations: sts.Spec.Template.Annotations,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(sts, appsv1.SchemeGroupVersion.WithKind("StatefulSet"))}},
		Spec: *sts.Spec.Template.Spec.DeepCopy(),
	}
	require.NoError(t, env.admin.Create(ctx, pod, client.DryRunAll))
	assert.Equal(t, []int32{30028, 30029, 30030, 30031}, hostPorts(pod), "the response carries the mutation")
	assert.Equal(t, "BROKERPORT_NODE_NAME", pod.Spec.Containers[0].Env[0].Name)
	err := env.admin.Get(ctx, client.ObjectKeyFromObject(pod), &corev1.Pod{})
	assert.True(t, apierrors.IsNotFound(err), "a dry run persists nothing: %v", err)
}

func ownNamespace(t *testing.T, ctx context.Context) {
	sts := redpandaStatefulSet()
	sts.Namespace = "brokerport-system"
	sts.Labels = map[string]string{patches.LabelExpose: patches.ExposeValue}
	sts.Spec.Replicas = ptrTo(int32(0))
	require.NoError(t, env.admin.Create(ctx, sts))
	got := &appsv1.StatefulSet{}
	require.NoError(t, env.admin.Get(ctx, client.ObjectKeyFromObject(sts), got))
	assert.NotContains(t, got.Annotations, patches.AnnotationPortBase)
	assert.NotContains(t, got.Spec.Template.Labels, patches.LabelCluster)
}

func optOut(t *testing.T, ctx context.Context) {
	patchLabels(t, ctx, &appsv1.StatefulSet{}, client.ObjectKey{Namespace: ns, Name: stsName}, `{"metadata":{"labels":{"brokerport.io/expose":null}}}`)
	waitRolledOut(t, ctx, 2, false)
	require.NoError(t, waitFor(ctx, 60*time.Second, "Services and ConfigMap removed", func() error {
		var services corev1.ServiceList
		if err := env.admin.List(ctx, &services, client.InNamespace(ns), client.MatchingLabels{patches.LabelCluster: stsName}); err != nil {
			return err
		}
		if len(services.Items) > 0 {
			return fmt.Errorf("%d Services left", len(services.Items))
		}
		err := env.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: stsName + "-external"}, &corev1.ConfigMap{})
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("ConfigMap still there (%v)", err)
		}
		return nil
	}))
	sts := &appsv1.StatefulSet{}
	require.NoError(t, env.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: stsName}, sts))
	for k := range sts.Spec.Template.Annotations {
		assert.False(t, patches.IsBrokerportKey(k), "template annotation %s left", k)
	}
	var pods corev1.PodList
	require.NoError(t, env.admin.List(ctx, &pods, client.InNamespace(ns)))
	for _, p := range pods.Items {
		assert.Empty(t, hostPorts(&p), "pod %s still has hostPorts", p.Name)
		assert.NotContains(t, p.Labels, patches.LabelExpose)
	}
}

// waitRolledOut waits until the StatefulSet has replicas ready pods of its current revision,
// every one exposed or every one not.
func waitRolledOut(t *testing.T, ctx context.Context, replicas int, exposed bool) {
	t.Helper()
	require.NoError(t, waitFor(ctx, 3*time.Minute, fmt.Sprintf("%d pods rolled out (exposed=%v)", replicas, exposed), func() error {
		sts := &appsv1.StatefulSet{}
		if err := env.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: stsName}, sts); err != nil {
			return err
		}
		st := sts.Status
		if st.ObservedGeneration != sts.Generation || st.UpdateRevision != st.CurrentRevision || int(st.ReadyReplicas) != replicas || int(st.Replicas) != replicas {
			return fmt.Errorf("status %+v", st)
		}
		var pods corev1.PodList
		if err := env.admin.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{"app.kubernetes.io/name": "redpanda"}); err != nil {
			return err
		}
		if len(pods.Items) != replicas {
			return fmt.Errorf("%d pods", len(pods.Items))
		}
		for _, p := range pods.Items {
			if patches.IsExposed(p.Labels) != exposed || p.DeletionTimestamp != nil {
				return fmt.Errorf("pod %s not rolled yet", p.Name)
			}
		}
		return nil
	}))
}

// checkBrokers asserts what each broker pod looks like once exposed.
func checkBrokers(t *testing.T, ctx context.Context, replicas int) {
	t.Helper()
	nodes := map[string]string{}
	for i := range replicas {
		pod := &corev1.Pod{}
		require.NoError(t, env.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: fmt.Sprintf("redpanda-%d", i)}, pod))
		require.NotEmpty(t, pod.Spec.NodeName)
		assert.NotContains(t, nodes, pod.Spec.NodeName, "two brokers on one node")
		nodes[pod.Spec.NodeName] = pod.Name

		want := []int32{}
		for l := range 4 {
			want = append(want, int32(30000+i*4+l))
		}
		assert.Equal(t, want, hostPorts(pod), pod.Name)

		node := &corev1.Node{}
		require.NoError(t, env.admin.Get(ctx, client.ObjectKey{Name: pod.Spec.NodeName}, node))
		assert.Equal(t, externalIP(node), pod.Annotations[patches.AnnotationHost], pod.Name)
		assert.Equal(t, pod.Spec.NodeName, pod.Annotations[patches.AnnotationNode], pod.Name)
		assert.Equal(t, node.Labels[corev1.LabelTopologyZone], pod.Annotations[patches.AnnotationZone], pod.Name)

		terms := pod.Spec.Affinity.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution
		require.Len(t, terms, 1)
		assert.Equal(t, stsName, terms[0].LabelSelector.MatchLabels[patches.LabelCluster])
		assert.Len(t, pod.Spec.Affinity.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution, 1, "the chart's affinity is kept")
		assert.Equal(t, patches.GateContainer, pod.Spec.InitContainers[0].Name)
		assert.Equal(t, strconv.Itoa(i), envValue(pod.Spec.Containers[0], "BROKERPORT_ORDINAL"))
	}
}

// checkPublished checks the broker Services and the ConfigMap against the pods.
func checkPublished(ctx context.Context, replicas int) error {
	var services corev1.ServiceList
	if err := env.admin.List(ctx, &services, client.InNamespace(ns), client.MatchingLabels{patches.LabelCluster: stsName}); err != nil {
		return err
	}
	if len(services.Items) != replicas {
		return fmt.Errorf("%d Services, want %d", len(services.Items), replicas)
	}
	var servers []string
	for i := range replicas {
		svc := &corev1.Service{}
		if err := env.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: fmt.Sprintf("redpanda-%d-external", i)}, svc); err != nil {
			return err
		}
		if svc.Spec.Type != corev1.ServiceTypeNodePort || svc.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
			return fmt.Errorf("Service %s: type %s, policy %s", svc.Name, svc.Spec.Type, svc.Spec.ExternalTrafficPolicy)
		}
		for l, p := range svc.Spec.Ports {
			if want := int32(30000 + i*4 + l); p.NodePort != want {
				return fmt.Errorf("Service %s port %s: nodePort %d, want %d", svc.Name, p.Name, p.NodePort, want)
			}
		}
		pod := &corev1.Pod{}
		if err := env.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: fmt.Sprintf("redpanda-%d", i)}, pod); err != nil {
			return err
		}
		servers = append(servers, fmt.Sprintf("%s:%d", pod.Annotations[patches.AnnotationHost], 30000+i*4))
	}
	cm := &corev1.ConfigMap{}
	if err := env.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: stsName + "-external"}, cm); err != nil {
		return err
	}
	if want := strings.Join(servers, ","); cm.Data["bootstrap.servers"] != want {
		return fmt.Errorf("bootstrap.servers %q, want %q", cm.Data["bootstrap.servers"], want)
	}
	return nil
}

// watchBrokers records every broker pod state seen with a node but without a host.
func watchBrokers(t *testing.T, ctx context.Context) (violations func() []string) {
	w, err := env.admin.Watch(ctx, &corev1.PodList{}, client.InNamespace(ns))
	require.NoError(t, err)
	var mu sync.Mutex
	var seen []string
	go func() {
		for ev := range w.ResultChan() {
			pod, ok := ev.Object.(*corev1.Pod)
			if !ok || ev.Type == watch.Deleted || !patches.IsExposed(pod.Labels) {
				continue
			}
			if pod.Spec.NodeName != "" && pod.Annotations[patches.AnnotationHost] == "" {
				mu.Lock()
				seen = append(seen, fmt.Sprintf("%s on %s (resourceVersion %s)", pod.Name, pod.Spec.NodeName, pod.ResourceVersion))
				mu.Unlock()
			}
		}
	}()
	t.Cleanup(w.Stop)
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}
}

func setReplicas(t *testing.T, ctx context.Context, n int) {
	t.Helper()
	patchLabels(t, ctx, &appsv1.StatefulSet{}, client.ObjectKey{Namespace: ns, Name: stsName}, fmt.Sprintf(`{"spec":{"replicas":%d}}`, n))
}

func patchLabels(t *testing.T, ctx context.Context, obj client.Object, key client.ObjectKey, patch string) {
	t.Helper()
	obj.SetNamespace(key.Namespace)
	obj.SetName(key.Name)
	require.NoError(t, env.admin.Patch(ctx, obj, client.RawPatch(types.MergePatchType, []byte(patch))))
}

// hostPorts lists a pod's hostPorts in listener order.
func hostPorts(pod *corev1.Pod) []int32 {
	out := make([]int32, 0, 4)
	byListener := map[int]int32{}
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.HostPort != 0 {
				byListener[externalPorts[p.ContainerPort]] = p.HostPort
			}
		}
	}
	for l := range len(byListener) {
		out = append(out, byListener[l])
	}
	return out
}

func externalIP(node *corev1.Node) string {
	for _, a := range node.Status.Addresses {
		if a.Type == corev1.NodeExternalIP {
			return a.Address
		}
	}
	return ""
}

func envValue(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// noForbiddenCalls reads brokerport's log for the whole run: it ran with its ServiceAccount under
// --authorization-mode=Node,RBAC, so a call the manifests' RBAC does not allow shows there.
func noForbiddenCalls(t *testing.T, _ context.Context) {
	data, err := os.ReadFile(env.brokerport.Log)
	require.NoError(t, err)
	for _, line := range strings.Split(string(data), "\n") {
		assert.NotContains(t, strings.ToLower(line), "forbidden")
	}
}
