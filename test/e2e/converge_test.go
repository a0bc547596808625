//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/brokerport/brokerport/patches"
	"github.com/brokerport/brokerport/webhook/controller"
)

// The TestConverge* scenarios (issue 12) each run in a namespace of their own and delete it, and
// untaint what they tainted, before they end: the scenarios after them find the port range and
// the nodes as they were.

// TestConvergeListenerChange is the change seen on `make demo`: a fifth listener added to a
// running, exposed Redpanda-like StatefulSet. Once the brokers have rolled, every Service holds
// exactly the new nodePorts, the ConfigMap publishes where the brokers now listen, an Exposed
// Event says so, the API server never refused a nodePort, and a real Kafka client reaches every
// broker at the published addresses.
func TestConvergeListenerChange(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	const namespace, replicas = "converge-listeners", 3
	convergeNamespace(t, ctx, namespace, nil)
	sts := redpandaStatefulSet()
	sts.Namespace = namespace
	sts.Labels = map[string]string{patches.LabelExpose: patches.ExposeValue}
	require.NoError(t, env.admin.Create(ctx, sts))
	require.NoError(t, waitFor(ctx, 3*time.Minute, "3 brokers rolled out, exposed", func() error { return rolledOut(ctx, namespace, stsName, replicas, true) }))
	require.NoError(t, waitFor(ctx, time.Minute, "4 listeners converged", func() error { return converged(ctx, namespace, stsName, replicas) }))

	logOffset := fileSize(t, env.brokerport.Log)
	changed := time.Now()
	const fiveListeners = "kafka=9094,rpc=33145,http=8083,schema-registry=8084,admin=9645"
	patchLabels(t, ctx, &appsv1.StatefulSet{}, client.ObjectKey{Namespace: namespace, Name: stsName},
		fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, patches.AnnotationListeners, fiveListeners))

	// The StatefulSet controller rolls the brokers onto their new hostPorts by itself.
	require.NoError(t, waitFor(ctx, 3*time.Minute, "3 brokers rolled onto 5 listeners", func() error { return rolledOut(ctx, namespace, stsName, replicas, true) }))
	require.NoError(t, waitFor(ctx, time.Minute, "Services and ConfigMap converged on 5 listeners", func() error {
		cfg, err := stsConfig(ctx, namespace, stsName)
		if err != nil {
			return err
		}
		if len(cfg.Listeners) != 5 {
			return fmt.Errorf("%d listeners configured", len(cfg.Listeners))
		}
		return converged(ctx, namespace, stsName, replicas)
	}))
	require.NoError(t, waitFor(ctx, 30*time.Second, "an Exposed Event after the change", func() error {
		return eventSince(ctx, namespace, stsName, "Exposed", "", changed)
	}))

	logged, err := readFrom(env.brokerport.Log, logOffset)
	require.NoError(t, err)
	assert.NotContains(t, logged, "provided port is already allocated", "the API server refused a nodePort another Service still held")

	require.NoError(t, checkKafka(ctx, namespace, stsName, "redpanda", replicas, addressVar, nil), "a Kafka client at the published addresses")
}

// TestConvergeOptOutPending removes the label while a broker waits for a node (5 brokers, 4
// nodes, one broker per node): brokerport deletes the waiting broker, and the StatefulSet rolls
// out to 5 pods without brokerport, none left Pending or in Init (without brokerport's
// anti-affinity, 5 pods fit on 4 nodes).
func TestConvergeOptOutPending(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	const namespace, name, replicas = "converge-optout", "opt", 5
	convergeNamespace(t, ctx, namespace, nil)
	require.NoError(t, env.admin.Create(ctx, brokerSet(namespace, name, replicas, true)))

	pending := fmt.Sprintf("%s-%d", name, replicas-1)
	require.NoError(t, waitFor(ctx, 3*time.Minute, pending+" unschedulable, the others ready", func() error {
		var pods corev1.PodList
		if err := env.admin.List(ctx, &pods, client.InNamespace(namespace)); err != nil {
			return err
		}
		for _, p := range pods.Items {
			switch {
			case !patches.IsExposed(p.Labels):
				return fmt.Errorf("pod %s not exposed", p.Name)
			case p.Name == pending && (p.Spec.NodeName != "" || !unschedulable(&p)):
				return fmt.Errorf("pod %s on %q, not (yet) unschedulable", p.Name, p.Spec.NodeName)
			case p.Name != pending && !podReady(&p):
				return fmt.Errorf("pod %s not ready", p.Name)
			}
		}
		if len(pods.Items) != replicas {
			return fmt.Errorf("%d pods", len(pods.Items))
		}
		return nil
	}))

	optedOut := time.Now()
	patchLabels(t, ctx, &appsv1.StatefulSet{}, client.ObjectKey{Namespace: namespace, Name: name}, fmt.Sprintf(`{"metadata":{"labels":{%q:null}}}`, patches.LabelExpose))
	require.NoError(t, waitFor(ctx, time.Minute, "a BrokerReleased Event for "+pending, func() error {
		return eventSince(ctx, namespace, name, "BrokerReleased", pending, optedOut)
	}))
	require.NoError(t, waitFor(ctx, 3*time.Minute, "5 pods rolled out without brokerport", func() error { return rolledOut(ctx, namespace, name, replicas, false) }))

	var pods corev1.PodList
	require.NoError(t, env.admin.List(ctx, &pods, client.InNamespace(namespace)))
	for _, p := range pods.Items {
		for k := range p.Labels {
			assert.False(t, patches.IsBrokerportKey(k), "pod %s keeps label %s", p.Name, k)
		}
		for _, c := range p.Spec.InitContainers {
			assert.NotEqual(t, patches.GateContainer, c.Name, "pod %s keeps the gate", p.Name)
		}
		assert.Equal(t, corev1.PodRunning, p.Status.Phase, p.Name)
		assert.NotEmpty(t, p.Spec.NodeName, p.Name)
		for _, c := range p.Spec.Containers {
			for _, port := range c.Ports {
				assert.Zero(t, port.HostPort, "pod %s keeps hostPort %d", p.Name, port.HostPort)
			}
		}
	}
	require.NoError(t, waitFor(ctx, time.Minute, "Services and ConfigMap removed", func() error {
		var services corev1.ServiceList
		if err := env.admin.List(ctx, &services, client.InNamespace(namespace)); err != nil {
			return err
		}
		if len(services.Items) > 0 {
			return fmt.Errorf("%d Services left", len(services.Items))
		}
		if err := env.admin.Get(ctx, client.ObjectKey{Namespace: namespace, Name: controller.ConfigMapName(name)}, &corev1.ConfigMap{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("ConfigMap still there (%v)", err)
		}
		return nil
	}))
}

// TestConvergePodSecurity: in a namespace whose Pod Security level refuses hostPorts, opting a
// StatefulSet in is refused at once, saying which namespace label is at fault, instead of
// admitting a StatefulSet whose every broker the API server would refuse.
func TestConvergePodSecurity(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const enforce = "pod-security.kubernetes.io/enforce"
	for _, level := range []string{"baseline", "restricted"} {
		t.Run(level, func(t *testing.T) {
			namespace := "converge-pss-" + level
			convergeNamespace(t, ctx, namespace, map[string]string{enforce: level})

			// Labeling a running StatefulSet.
			require.NoError(t, env.admin.Create(ctx, brokerSet(namespace, "pss", 0, false)))
			err := env.admin.Patch(ctx, &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "pss"}},
				client.RawPatch(types.MergePatchType, []byte(fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, patches.LabelExpose, patches.ExposeValue))))
			require.Error(t, err, "opt-in admitted in a namespace enforcing %s", level)
			assert.Contains(t, err.Error(), enforce)
			assert.Contains(t, err.Error(), namespace)
			got := &appsv1.StatefulSet{}
			require.NoError(t, env.admin.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "pss"}, got))
			assert.NotContains(t, got.Labels, patches.LabelExpose)

			// Creating one opted in.
			err = env.admin.Create(ctx, brokerSet(namespace, "pss-new", 0, true))
			require.Error(t, err, "an opted-in StatefulSet created in a namespace enforcing %s", level)
			assert.Contains(t, err.Error(), enforce)
			assert.Contains(t, err.Error(), namespace)
		})
	}
	t.Run("privileged", func(t *testing.T) {
		// The level that allows hostPorts is not refused.
		namespace := "converge-pss-privileged"
		convergeNamespace(t, ctx, namespace, map[string]string{enforce: "privileged"})
		require.NoError(t, env.admin.Create(ctx, brokerSet(namespace, "pss", 0, true)))
	})
}

// TestConvergeQuota: a namespace whose ResourceQuota makes every container declare cpu and
// memory requests and limits: the brokers, gate included, are admitted, run and are published.
func TestConvergeQuota(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const namespace, name, replicas = "converge-quota", "q", 2
	convergeNamespace(t, ctx, namespace, nil)
	quota := &corev1.ResourceQuota{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "compute"},
		Spec: corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{
			corev1.ResourceRequestsCPU: resource.MustParse("2"), corev1.ResourceRequestsMemory: resource.MustParse("2Gi"),
			corev1.ResourceLimitsCPU: resource.MustParse("4"), corev1.ResourceLimitsMemory: resource.MustParse("4Gi"),
		}},
	}
	require.NoError(t, env.admin.Create(ctx, quota))
	// Until kube-controller-manager's quota controller has computed its status, the quota
	// admission plugin refuses every pod of the namespace.
	require.NoError(t, waitFor(ctx, time.Minute, "the quota's status computed", func() error {
		got := &corev1.ResourceQuota{}
		if err := env.admin.Get(ctx, client.ObjectKeyFromObject(quota), got); err != nil {
			return err
		}
		if len(got.Status.Hard) != len(quota.Spec.Hard) {
			return fmt.Errorf("status.hard %v", got.Status.Hard)
		}
		return nil
	}))

	sts := brokerSet(namespace, name, replicas, true)
	sts.Spec.Template.Spec.Containers[0].Resources = corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("200m"), corev1.ResourceMemory: resource.MustParse("256Mi")},
	}
	require.NoError(t, env.admin.Create(ctx, sts))
	err := waitFor(ctx, 2*time.Minute, "2 brokers running under the quota", func() error { return rolledOut(ctx, namespace, name, replicas, true) })
	require.NoError(t, err, "the StatefulSet controller's events: %s", coreEvents(ctx, namespace))
	require.NoError(t, waitFor(ctx, time.Minute, "2 brokers published", func() error { return converged(ctx, namespace, name, replicas) }))

	pod := &corev1.Pod{}
	require.NoError(t, env.admin.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name + "-0"}, pod))
	require.NotEmpty(t, pod.Spec.InitContainers)
	gate := pod.Spec.InitContainers[0]
	require.Equal(t, patches.GateContainer, gate.Name)
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		assert.Contains(t, gate.Resources.Requests, r, "the gate's requests")
		assert.Contains(t, gate.Resources.Limits, r, "the gate's limits")
	}
}

// TestConvergeMigration moves a broker to another node (its node tainted, its pod deleted) and
// measures the time from its new binding to the ConfigMap showing its new address, three times.
func TestConvergeMigration(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	const namespace, name, replicas = "converge-migrate", "mig", 3
	const taintKey = "brokerport.io/e2e-migration"
	convergeNamespace(t, ctx, namespace, nil)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for i := range nodeIPs {
			assert.NoError(t, setTaint(ctx, fmt.Sprintf("kwok-node-%d", i), taintKey, false))
		}
	})
	require.NoError(t, env.admin.Create(ctx, brokerSet(namespace, name, replicas, true)))
	require.NoError(t, waitFor(ctx, 3*time.Minute, "3 brokers rolled out, exposed", func() error { return rolledOut(ctx, namespace, name, replicas, true) }))
	require.NoError(t, waitFor(ctx, time.Minute, "3 brokers published", func() error { return converged(ctx, namespace, name, replicas) }))

	broker := name + "-0"
	var measured []time.Duration
	for run := 1; run <= 3; run++ {
		old := &corev1.Pod{}
		require.NoError(t, env.admin.Get(ctx, client.ObjectKey{Namespace: namespace, Name: broker}, old))
		// Only the broker's current node is tainted: with one broker per node, the one node
		// without a broker is where it can go.
		for i := range nodeIPs {
			node := fmt.Sprintf("kwok-node-%d", i)
			require.NoError(t, setTaint(ctx, node, taintKey, node == old.Spec.NodeName))
		}
		d, newNode := migrate(t, ctx, namespace, name, old)
		t.Logf("migration: binding→ConfigMap %s (run %d, %s from %s to %s)", d, run, broker, old.Spec.NodeName, newNode)
		assert.LessOrEqual(t, d, 5*time.Second, "binding to ConfigMap, run %d", run)
		measured = append(measured, d)
		require.NoError(t, waitFor(ctx, 2*time.Minute, "3 brokers rolled out again", func() error { return rolledOut(ctx, namespace, name, replicas, true) }))
		require.NoError(t, waitFor(ctx, time.Minute, "3 brokers published again", func() error { return converged(ctx, namespace, name, replicas) }))
	}
	t.Logf("migration: binding→ConfigMap over %d runs: %v", len(measured), measured)
}

// migrate deletes the broker pod old and waits, through watches started before the deletion, for
// its successor to be bound and for the ConfigMap to publish the successor's node address. It
// returns the time between the two, as this process saw the two watch events.
func migrate(t *testing.T, ctx context.Context, namespace, sts string, old *corev1.Pod) (time.Duration, string) {
	t.Helper()
	pods, err := env.admin.Watch(ctx, &corev1.PodList{}, client.InNamespace(namespace),
		client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector("metadata.name", old.Name)})
	require.NoError(t, err)
	defer pods.Stop()
	maps, err := env.admin.Watch(ctx, &corev1.ConfigMapList{}, client.InNamespace(namespace),
		client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector("metadata.name", controller.ConfigMapName(sts))})
	require.NoError(t, err)
	defer maps.Stop()
	require.NoError(t, env.admin.Delete(ctx, old))

	var bound, published time.Time
	var node, want string // the new node, and the address line the ConfigMap must get
	var lastData string
	timeout := time.After(2 * time.Minute)
	for bound.IsZero() || published.IsZero() {
		select {
		case ev, ok := <-pods.ResultChan():
			require.True(t, ok, "the pod watch ended")
			pod, isPod := ev.Object.(*corev1.Pod)
			if !isPod || ev.Type == watch.Deleted || pod.UID == old.UID || pod.Spec.NodeName == "" || !bound.IsZero() {
				continue
			}
			bound, node = time.Now(), pod.Spec.NodeName
			require.NotEqual(t, old.Spec.NodeName, node, "rescheduled onto its tainted node")
			n := &corev1.Node{}
			require.NoError(t, env.admin.Get(ctx, client.ObjectKey{Name: node}, n))
			want = fmt.Sprintf("%s %s:%d", pod.Name, externalIP(n), kafkaHostPort(pod))
			if strings.Contains(lastData, want) { // seen before the binding's event: impossible, but say it
				t.Errorf("the ConfigMap published %q before this process saw the binding", want)
				published = bound
			}
		case ev, ok := <-maps.ResultChan():
			require.True(t, ok, "the ConfigMap watch ended")
			cm, isCM := ev.Object.(*corev1.ConfigMap)
			if !isCM || !published.IsZero() {
				continue
			}
			lastData = cm.Data["kafka.addresses"]
			if want != "" && slices.Contains(strings.Split(lastData, "\n"), want) {
				published = time.Now()
			}
		case <-timeout:
			t.Fatalf("%s: bound at %v (node %q); the ConfigMap's kafka.addresses is %q, want a line %q", old.Name, bound, node, lastData, want)
		}
	}
	return published.Sub(bound), node
}

// brokerSet is a minimal broker StatefulSet: one Kafka listener on 9094, addresses from the
// nodes' ExternalIPs, opted in or not.
func brokerSet(namespace, name string, replicas int32, exposed bool) *appsv1.StatefulSet {
	labels := map[string]string{"app": name}
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Annotations: map[string]string{patches.AnnotationAddressTypes: "ExternalIP"}},
		Spec: appsv1.StatefulSetSpec{
			Replicas: ptrTo(replicas), ServiceName: name,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "kafka", Image: "kafka:e2e", Ports: []corev1.ContainerPort{{Name: "external", ContainerPort: 9094}}}}}},
		},
	}
	if exposed {
		sts.Labels = map[string]string{patches.LabelExpose: patches.ExposeValue}
	}
	return sts
}

// convergeNamespace creates a namespace and, when the test ends, deletes it and waits until it
// is gone: its StatefulSets' port blocks and its brokers' nodes are then free again. The
// StatefulSets go first, and the namespace only once their brokers, Services and ConfigMaps are
// gone: brokerport writing to a namespace being terminated is refused with "forbidden", which
// TestBrokerport's noForbiddenCalls would count against brokerport's RBAC. Then brokerport's log
// of the scenario's span must hold no "forbidden" either.
func convergeNamespace(t *testing.T, ctx context.Context, name string, labels map[string]string) {
	t.Helper()
	namespace := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	require.NoError(t, env.admin.Create(ctx, namespace))
	logOffset := fileSize(t, env.brokerport.Log)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		defer func() {
			// What noForbiddenCalls checks for the whole run, for this scenario's span.
			logged, err := readFrom(env.brokerport.Log, logOffset)
			assert.NoError(t, err)
			var forbidden []string
			for _, line := range strings.Split(logged, "\n") {
				if strings.Contains(strings.ToLower(line), "forbidden") && len(forbidden) < 3 {
					forbidden = append(forbidden, line)
				}
			}
			assert.Empty(t, forbidden, "brokerport made calls its RBAC forbids while namespace %s existed", name)
		}()
		for _, kind := range []client.Object{&appsv1.StatefulSet{}, &appsv1.Deployment{}, &corev1.Pod{}} {
			if err := env.admin.DeleteAllOf(ctx, kind, client.InNamespace(name)); err != nil {
				t.Errorf("deleting the %T of %s: %v", kind, name, err)
			}
		}
		assert.NoError(t, waitFor(ctx, 2*time.Minute, "the pods, broker Services and ConfigMaps of "+name+" gone", func() error {
			var pods corev1.PodList
			var services corev1.ServiceList
			var maps corev1.ConfigMapList
			if err := env.admin.List(ctx, &pods, client.InNamespace(name)); err != nil {
				return err
			}
			for _, list := range []client.ObjectList{&services, &maps} {
				if err := env.admin.List(ctx, list, client.InNamespace(name), client.HasLabels{patches.LabelCluster}); err != nil {
					return err
				}
			}
			if n := len(pods.Items) + len(services.Items) + len(maps.Items); n > 0 {
				return fmt.Errorf("%d pods, %d Services, %d ConfigMaps left", len(pods.Items), len(services.Items), len(maps.Items))
			}
			return nil
		}))
		if err := env.admin.Delete(ctx, namespace); client.IgnoreNotFound(err) != nil {
			t.Errorf("deleting namespace %s: %v", name, err)
			return
		}
		assert.NoError(t, waitFor(ctx, 3*time.Minute, "namespace "+name+" gone", func() error {
			if err := env.admin.Get(ctx, client.ObjectKey{Name: name}, &corev1.Namespace{}); !apierrors.IsNotFound(err) {
				return fmt.Errorf("still there (%v)", err)
			}
			return nil
		}))
	})
}

// rolledOut tells whether a StatefulSet has rolled out: replicas pods of its update revision,
// each Running and Ready, none going away, every one exposed by brokerport or every one not.
func rolledOut(ctx context.Context, namespace, name string, replicas int, exposed bool) error {
	sts := &appsv1.StatefulSet{}
	if err := env.admin.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, sts); err != nil {
		return err
	}
	st := sts.Status
	if st.ObservedGeneration != sts.Generation || st.UpdateRevision != st.CurrentRevision || int(st.ReadyReplicas) != replicas || int(st.Replicas) != replicas || int(st.UpdatedReplicas) != replicas {
		return fmt.Errorf("status %+v", st)
	}
	var pods corev1.PodList
	if err := env.admin.List(ctx, &pods, client.InNamespace(namespace), client.MatchingLabels(sts.Spec.Selector.MatchLabels)); err != nil {
		return err
	}
	if len(pods.Items) != replicas {
		return fmt.Errorf("%d pods", len(pods.Items))
	}
	for _, p := range pods.Items {
		switch {
		case p.DeletionTimestamp != nil:
			return fmt.Errorf("pod %s going away", p.Name)
		case p.Labels[appsv1.ControllerRevisionHashLabelKey] != st.UpdateRevision:
			return fmt.Errorf("pod %s of revision %s, not %s", p.Name, p.Labels[appsv1.ControllerRevisionHashLabelKey], st.UpdateRevision)
		case patches.IsExposed(p.Labels) != exposed:
			return fmt.Errorf("pod %s exposed=%v", p.Name, !exposed)
		case p.Status.Phase != corev1.PodRunning || !podReady(&p):
			return fmt.Errorf("pod %s %s, ready=%v", p.Name, p.Status.Phase, podReady(&p))
		}
	}
	return nil
}

// converged tells whether what brokerport publishes is the truth: each broker's Service holds
// exactly the nodePorts the StatefulSet's configuration gives it, the ConfigMap's status says
// every broker is exposed, and each listener's addresses are the broker's node ExternalIP and the
// hostPort its pod was admitted with (which is the configured one).
func converged(ctx context.Context, namespace, name string, replicas int) error {
	sts := &appsv1.StatefulSet{}
	if err := env.admin.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, sts); err != nil {
		return err
	}
	cfg, errs := patches.ParseConfig(sts.Annotations, nil, patches.DefaultOptions())
	if len(errs) > 0 {
		return errs.ToAggregate()
	}
	cm := &corev1.ConfigMap{}
	if err := env.admin.Get(ctx, client.ObjectKey{Namespace: namespace, Name: controller.ConfigMapName(name)}, cm); err != nil {
		return err
	}
	var status []string
	lines := make([][]string, len(cfg.Listeners))
	for i := range replicas {
		broker := fmt.Sprintf("%s-%d", name, i)
		svc := &corev1.Service{}
		if err := env.admin.Get(ctx, client.ObjectKey{Namespace: namespace, Name: broker + "-external"}, svc); err != nil {
			return err
		}
		got := map[string]int32{}
		for _, p := range svc.Spec.Ports {
			got[p.Name] = p.NodePort
		}
		want := map[string]int32{}
		for l, listener := range cfg.Listeners {
			want[listener.Name] = cfg.Port(i, l)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("Service %s has nodePorts %v, want %v", svc.Name, got, want)
		}

		pod := &corev1.Pod{}
		if err := env.admin.Get(ctx, client.ObjectKey{Namespace: namespace, Name: broker}, pod); err != nil {
			return err
		}
		node := &corev1.Node{}
		if err := env.admin.Get(ctx, client.ObjectKey{Name: pod.Spec.NodeName}, node); err != nil {
			return fmt.Errorf("node of %s: %w", broker, err)
		}
		for l, listener := range cfg.Listeners {
			port := admittedPort(pod, listener.ContainerPort)
			if port != cfg.Port(i, l) {
				return fmt.Errorf("pod %s has hostPort %d for listener %s, want %d", broker, port, listener.Name, cfg.Port(i, l))
			}
			lines[l] = append(lines[l], fmt.Sprintf("%s %s:%d", broker, externalIP(node), port))
		}
		status = append(status, broker+" exposed")
	}
	if got, want := cm.Data[controller.StatusKey], strings.Join(status, "\n"); got != want {
		return fmt.Errorf("ConfigMap %s status %q, want %q", cm.Name, got, want)
	}
	for l, listener := range cfg.Listeners {
		if got, want := cm.Data[listener.Name+".addresses"], strings.Join(lines[l], "\n"); got != want {
			return fmt.Errorf("ConfigMap %s %s.addresses %q, want %q", cm.Name, listener.Name, got, want)
		}
	}
	var servers []string
	for _, line := range lines[0] {
		servers = append(servers, strings.Fields(line)[1])
	}
	if got, want := cm.Data["bootstrap.servers"], strings.Join(servers, ","); got != want {
		return fmt.Errorf("ConfigMap %s bootstrap.servers %q, want %q", cm.Name, got, want)
	}
	return nil
}

func stsConfig(ctx context.Context, namespace, name string) (patches.Config, error) {
	sts := &appsv1.StatefulSet{}
	if err := env.admin.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, sts); err != nil {
		return patches.Config{}, err
	}
	cfg, errs := patches.ParseConfig(sts.Annotations, nil, patches.DefaultOptions())
	return cfg, errs.ToAggregate()
}

// admittedPort is the hostPort of a pod's container port, 0 when it has none.
func admittedPort(pod *corev1.Pod, containerPort int32) int32 {
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.ContainerPort == containerPort && p.HostPort != 0 {
				return p.HostPort
			}
		}
	}
	return 0
}

// eventSince finds an Event on StatefulSet name with reason, last seen at or after since, whose
// note mentions about (when not empty).
func eventSince(ctx context.Context, namespace, name, reason, about string, since time.Time) error {
	var list eventsv1.EventList
	if err := env.admin.List(ctx, &list, client.InNamespace(namespace)); err != nil {
		return err
	}
	var seen []string
	for _, e := range list.Items {
		if e.Regarding.Name != name {
			continue
		}
		at := e.EventTime.Time
		if e.Series != nil {
			at = e.Series.LastObservedTime.Time
		}
		seen = append(seen, fmt.Sprintf("%s %s %s: %s", at.Format("15:04:05.000"), e.Type, e.Reason, e.Note))
		if e.Reason == reason && !at.Before(since) && strings.Contains(e.Note, about) {
			return nil
		}
	}
	return fmt.Errorf("no %s Event since %s mentioning %q; Events of StatefulSet %s: %v", reason, since.Format("15:04:05.000"), about, name, seen)
}

// coreEvents are the core/v1 Events of a namespace (kube-controller-manager's, such as a
// StatefulSet's FailedCreate), for a failure message.
func coreEvents(ctx context.Context, namespace string) string {
	var list corev1.EventList
	if err := env.admin.List(ctx, &list, client.InNamespace(namespace)); err != nil {
		return err.Error()
	}
	var out []string
	for _, e := range list.Items {
		out = append(out, fmt.Sprintf("%s %s/%s %s: %s", e.Type, e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, e.Message))
	}
	return strings.Join(out, "\n")
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func unschedulable(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled {
			return c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable
		}
	}
	return false
}

// setTaint puts a NoSchedule taint with key on a node, or takes it off, leaving its other
// taints alone.
func setTaint(ctx context.Context, name, key string, on bool) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		node := &corev1.Node{}
		if err := env.admin.Get(ctx, client.ObjectKey{Name: name}, node); err != nil {
			return err
		}
		has := slices.ContainsFunc(node.Spec.Taints, func(t corev1.Taint) bool { return t.Key == key })
		if has == on {
			return nil
		}
		node.Spec.Taints = slices.DeleteFunc(node.Spec.Taints, func(t corev1.Taint) bool { return t.Key == key })
		if on {
			node.Spec.Taints = append(node.Spec.Taints, corev1.Taint{Key: key, Effect: corev1.TaintEffectNoSchedule})
		}
		return env.admin.Update(ctx, node)
	})
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	info, err := os.Stat(path)
	require.NoError(t, err)
	return info.Size()
}

// readFrom reads a file from offset on: the log a scenario added.
func readFrom(path string, offset int64) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return "", err
	}
	data, err := io.ReadAll(f)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	return string(data), nil
}
