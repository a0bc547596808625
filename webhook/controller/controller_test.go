package controller

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/brokerport/brokerport/patches"
	"github.com/brokerport/brokerport/webhook"
)

// fixture is a namespace with a labeled 3-broker StatefulSet (two listeners, block 30000), its
// pods bound to nodes 127.0.1.1-3, and a client that counts writes and applies the Service
// webhook's mutation on Service writes, as the API server would.
type fixture struct {
	t      *testing.T
	client client.Client
	writes []string
	events *events.FakeRecorder
	r      *Reconciler
	sts    *appsv1.StatefulSet
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{t: t, events: events.NewFakeRecorder(100)}
	f.sts = &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "redpanda", Namespace: "kafka", UID: "sts-uid",
			Labels:      map[string]string{patches.LabelExpose: patches.ExposeValue},
			Annotations: map[string]string{patches.AnnotationListeners: "kafka=9094,http=8083", patches.AnnotationPortBase: "30000"}},
		Spec:   appsv1.StatefulSetSpec{Replicas: ptr.To[int32](3)},
		Status: appsv1.StatefulSetStatus{UpdateRevision: "redpanda-1"},
	}
	objects := []client.Object{f.sts}
	for i := range 3 {
		objects = append(objects, node(i, fmt.Sprintf("127.0.1.%d", i+1)), f.pod(i, fmt.Sprintf("127.0.1.%d", i+1)))
	}
	scheme := webhook.Scheme()
	mutateServices := func(obj client.Object) {
		if svc, ok := obj.(*corev1.Service); ok {
			require.Empty(t, patches.MutateService(svc, f.sts, patches.DefaultOptions()))
		}
	}
	f.client = fake.NewClientBuilder().WithScheme(scheme).WithObjects(objects...).WithInterceptorFuncs(interceptor.Funcs{
		// The controller's lists come from brokerport's cache, which keeps only what its
		// transforms keep: list through the same transforms.
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			if err := c.List(ctx, list, opts...); err != nil {
				return err
			}
			return slimmed(list)
		},
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			mutateServices(obj)
			switch obj.(type) {
			case *corev1.Service, *cmapi.Certificate:
				obj.SetCreationTimestamp(metav1.Now()) // as the API server does; the fake does not
			}
			if err := nodePortsFree(ctx, c, obj); err != nil {
				return err
			}
			f.writes = append(f.writes, fmt.Sprintf("create %T %s", obj, obj.GetName()))
			return c.Create(ctx, obj, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			mutateServices(obj)
			bumpGeneration(ctx, c, obj)
			if err := nodePortsFree(ctx, c, obj); err != nil {
				return err
			}
			f.writes = append(f.writes, fmt.Sprintf("update %T %s", obj, obj.GetName()))
			return c.Update(ctx, obj, opts...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			f.writes = append(f.writes, fmt.Sprintf("patch %T %s", obj, obj.GetName()))
			return c.Patch(ctx, obj, patch, opts...)
		},
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			f.writes = append(f.writes, fmt.Sprintf("delete %T %s", obj, obj.GetName()))
			return c.Delete(ctx, obj, opts...)
		},
	}).Build()
	f.r = &Reconciler{Client: f.client, API: f.client, Events: f.events, Options: patches.DefaultOptions()}
	return f
}

// bumpGeneration moves a Certificate's generation on when its spec changes, as the API server
// does for a custom resource with a status subresource (the fake does not).
func bumpGeneration(ctx context.Context, c client.Client, obj client.Object) {
	cert, ok := obj.(*cmapi.Certificate)
	if !ok {
		return
	}
	stored := &cmapi.Certificate{}
	if c.Get(ctx, client.ObjectKeyFromObject(cert), stored) == nil && !apiequality.Semantic.DeepEqual(stored.Spec, cert.Spec) {
		cert.Generation = stored.Generation + 1
	}
}

// nodePortsFree refuses a Service write that claims a nodePort another Service holds, as the API
// server's allocator does ("provided port is already allocated").
func nodePortsFree(ctx context.Context, c client.Client, obj client.Object) error {
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return nil
	}
	var all corev1.ServiceList
	if err := c.List(ctx, &all); err != nil {
		return err
	}
	for _, other := range all.Items {
		if other.Namespace == svc.Namespace && other.Name == svc.Name {
			continue
		}
		for _, held := range other.Spec.Ports {
			for i, p := range svc.Spec.Ports {
				if p.NodePort != 0 && p.NodePort == held.NodePort {
					return apierrors.NewInvalid(corev1.SchemeGroupVersion.WithKind("Service").GroupKind(), svc.Name, field.ErrorList{
						field.Invalid(field.NewPath("spec", "ports").Index(i).Child("nodePort"), p.NodePort, "provided port is already allocated")})
				}
			}
		}
	}
	return nil
}

// slimmed applies brokerport's cache transforms to a listed page, as the informers would.
func slimmed(list client.ObjectList) error {
	for obj, by := range webhook.CacheOptions().ByObject {
		if by.Transform == nil {
			continue
		}
		switch l := list.(type) {
		case *corev1.ServiceList:
			if _, ok := obj.(*corev1.Service); ok {
				for i := range l.Items {
					out, err := by.Transform(&l.Items[i])
					if err != nil {
						return err
					}
					l.Items[i] = *out.(*corev1.Service)
				}
			}
		case *corev1.PodList:
			if _, ok := obj.(*corev1.Pod); ok {
				for i := range l.Items {
					out, err := by.Transform(&l.Items[i])
					if err != nil {
						return err
					}
					l.Items[i] = *out.(*corev1.Pod)
				}
			}
		}
	}
	return nil
}

func node(i int, ip string) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("node-%d", i)},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeExternalIP, Address: ip}}},
	}
}

func (f *fixture) pod(i int, host string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("redpanda-%d", i), Namespace: "kafka", UID: types.UID(fmt.Sprintf("pod-%d", i)),
			Labels: map[string]string{patches.LabelExpose: patches.ExposeValue, patches.LabelCluster: "redpanda", appsv1.ControllerRevisionHashLabelKey: "redpanda-1"},
			Annotations: map[string]string{
				patches.AnnotationListeners: "kafka=9094,http=8083", patches.AnnotationPortBase: "30000",
				patches.AnnotationHost: host, patches.AnnotationZone: "", patches.AnnotationNode: fmt.Sprintf("node-%d", i),
			}},
		Spec: corev1.PodSpec{NodeName: fmt.Sprintf("node-%d", i), Containers: []corev1.Container{{Name: "redpanda", Ports: []corev1.ContainerPort{
			{Name: "kafka", ContainerPort: 9094, HostPort: int32(30000 + 2*i)}, {Name: "http", ContainerPort: 8083, HostPort: int32(30001 + 2*i)},
		}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
}

func (f *fixture) reconcile() {
	f.t.Helper()
	f.writes = nil
	_, err := f.r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKey{Namespace: "kafka", Name: "redpanda"}})
	require.NoError(f.t, err)
}

func (f *fixture) serviceNames() []string {
	var list corev1.ServiceList
	require.NoError(f.t, f.client.List(context.Background(), &list))
	var names []string
	for _, s := range list.Items {
		names = append(names, s.Name)
	}
	return names
}

func TestReconcileCreatesServicesAndConfigMapThenWritesNothing(t *testing.T) {
	f := newFixture(t)
	f.reconcile()
	assert.Equal(t, []string{
		"create *v1.Service redpanda-0-external", "create *v1.Service redpanda-1-external", "create *v1.Service redpanda-2-external",
		"create *v1.ConfigMap redpanda-external",
	}, f.writes)

	svc := &corev1.Service{}
	require.NoError(t, f.client.Get(context.Background(), client.ObjectKey{Namespace: "kafka", Name: "redpanda-1-external"}, svc))
	assert.Equal(t, []int32{30002, 30003}, []int32{svc.Spec.Ports[0].NodePort, svc.Spec.Ports[1].NodePort})
	assert.Equal(t, "redpanda", svc.OwnerReferences[0].Name)

	cm := &corev1.ConfigMap{}
	require.NoError(t, f.client.Get(context.Background(), client.ObjectKey{Namespace: "kafka", Name: "redpanda-external"}, cm))
	assert.Equal(t, map[string]string{
		"bootstrap.servers":       "127.0.1.1:30000,127.0.1.2:30002,127.0.1.3:30004",
		"kafka.bootstrap.servers": "127.0.1.1:30000,127.0.1.2:30002,127.0.1.3:30004",
		"kafka.addresses":         "redpanda-0 127.0.1.1:30000\nredpanda-1 127.0.1.2:30002\nredpanda-2 127.0.1.3:30004",
		"http.bootstrap.servers":  "127.0.1.1:30001,127.0.1.2:30003,127.0.1.3:30005",
		"http.addresses":          "redpanda-0 127.0.1.1:30001\nredpanda-1 127.0.1.2:30003\nredpanda-2 127.0.1.3:30005",
		"status":                  "redpanda-0 exposed\nredpanda-1 exposed\nredpanda-2 exposed",
	}, cm.Data)
	assert.Contains(t, <-f.events.Events, "Normal Exposed all 3 brokers exposed on ports 30000-30015; addresses in ConfigMap redpanda-external")

	f.reconcile()
	assert.Empty(t, f.writes, "a second reconcile writes nothing")
}

func TestReconcileScaleDownRemovesServicesOnceTheirPodsAreGone(t *testing.T) {
	f := newFixture(t)
	f.reconcile()
	ctx := context.Background()

	f.sts.Spec.Replicas = ptr.To[int32](2)
	require.NoError(t, f.client.Update(ctx, f.sts))
	f.reconcile()
	assert.Contains(t, f.serviceNames(), "redpanda-2-external", "kept while broker 2 is still going away")

	require.NoError(t, f.client.Delete(ctx, f.pod(2, "")))
	f.reconcile()
	assert.Equal(t, []string{"redpanda-0-external", "redpanda-1-external"}, f.serviceNames())
	cm := &corev1.ConfigMap{}
	require.NoError(t, f.client.Get(ctx, client.ObjectKey{Namespace: "kafka", Name: "redpanda-external"}, cm))
	assert.Equal(t, "127.0.1.1:30000,127.0.1.2:30002", cm.Data["bootstrap.servers"])
}

func TestReconcileRepairsStaleAndMissingAddresses(t *testing.T) {
	f := newFixture(t)
	f.reconcile()
	drainEvents(f.events)
	ctx := context.Background()

	// Node 1's external address changes; broker 2 was bound while the webhook was down.
	moved := &corev1.Node{}
	require.NoError(t, f.client.Get(ctx, client.ObjectKey{Name: "node-1"}, moved))
	moved.Status.Addresses[0].Address = "127.0.9.2"
	require.NoError(t, f.client.Status().Update(ctx, moved))
	unbound := f.pod(2, "")
	require.NoError(t, f.client.Get(ctx, client.ObjectKeyFromObject(unbound), unbound))
	delete(unbound.Annotations, patches.AnnotationHost)
	require.NoError(t, f.client.Update(ctx, unbound))

	f.reconcile()
	assert.Contains(t, f.writes, "patch *v1.Pod redpanda-1")
	assert.Contains(t, f.writes, "patch *v1.Pod redpanda-2")
	for i, want := range map[int]string{1: "127.0.9.2", 2: "127.0.1.3"} {
		pod := &corev1.Pod{}
		require.NoError(t, f.client.Get(ctx, client.ObjectKey{Namespace: "kafka", Name: fmt.Sprintf("redpanda-%d", i)}, pod))
		assert.Equal(t, want, pod.Annotations[patches.AnnotationHost])
	}
	got := strings.Join(drainEvents(f.events), "\n")
	assert.Contains(t, got, "Warning RestartRequired the address annotations said 127.0.1.2, but node node-1's address is 127.0.9.2; the broker may still advertise 127.0.1.2: restart it (kubectl delete pod redpanda-1) to re-advertise")
	assert.Contains(t, got, "Normal AddressRepaired set brokerport.io/host=127.0.1.3 (node node-2): the broker can start")

	f.reconcile()
	assert.Empty(t, f.writes, "a second reconcile writes nothing")
}

func TestReconcileRemovesEverythingOnOptOut(t *testing.T) {
	f := newFixture(t)
	f.reconcile()
	f.sts.Labels = nil
	require.NoError(t, f.client.Update(context.Background(), f.sts))
	f.reconcile()
	assert.Empty(t, f.serviceNames())
	err := f.client.Get(context.Background(), client.ObjectKey{Namespace: "kafka", Name: "redpanda-external"}, &corev1.ConfigMap{})
	assert.True(t, client.IgnoreNotFound(err) == nil && err != nil, "ConfigMap removed")
}

func drainEvents(r *events.FakeRecorder) []string {
	var out []string
	for {
		select {
		case e := <-r.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func TestReconcileLeavesSomeoneElsesConfigMapAlone(t *testing.T) {
	f := newFixture(t)
	theirs := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "kafka", Name: "redpanda-external"}, Data: map[string]string{"mine": "yes"}}
	require.NoError(t, f.client.Create(context.Background(), theirs))
	// The cache would not show it (it lacks brokerport's label); the fake client does, so hide it.
	f.r.Client = hideUnlabeledConfigMaps{f.r.Client}
	_, err := f.r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKey{Namespace: "kafka", Name: "redpanda"}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "ConfigMap kafka/redpanda-external exists and is not brokerport's")
	require.NoError(t, f.client.Get(context.Background(), client.ObjectKeyFromObject(theirs), theirs))
	assert.Equal(t, map[string]string{"mine": "yes"}, theirs.Data, "untouched")
	assert.Contains(t, strings.Join(drainEvents(f.events), "\n"), "Warning ConfigMapTaken ConfigMap redpanda-external exists and is not brokerport's")
}

// hideUnlabeledConfigMaps reads like brokerport's label-filtered ConfigMap cache.
type hideUnlabeledConfigMaps struct{ client.Client }

func (h hideUnlabeledConfigMaps) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if err := h.Client.Get(ctx, key, obj, opts...); err != nil {
		return err
	}
	if cm, ok := obj.(*corev1.ConfigMap); ok && cm.Labels[patches.LabelCluster] == "" {
		return apierrors.NewNotFound(corev1.Resource("configmaps"), key.Name)
	}
	return nil
}

func TestReconcileLeavesSomeoneElsesServiceAlone(t *testing.T) {
	f := newFixture(t)
	theirs := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "kafka", Name: "redpanda-1-external"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "web", Port: 80}}}}
	require.NoError(t, f.client.Create(context.Background(), theirs))
	f.reconcile()
	require.NoError(t, f.client.Get(context.Background(), client.ObjectKeyFromObject(theirs), theirs))
	assert.Equal(t, "web", theirs.Spec.Ports[0].Name, "untouched")
	assert.Contains(t, strings.Join(drainEvents(f.events), "\n"), "Warning BrokerNotExposed broker redpanda-1 is not exposed: Service redpanda-1-external exists and is not brokerport's")
	assert.Equal(t, "127.0.1.1:30000,127.0.1.3:30004", f.configMap()["bootstrap.servers"], "the other brokers are published")
}

// Two replicas, each with a cache that did not show the other's assignment yet, gave two
// StatefulSets overlapping blocks: the one created later gives its block up.
func TestReconcileGivesUpAnOverlappingBlock(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	require.NoError(t, f.client.Get(ctx, client.ObjectKeyFromObject(f.sts), f.sts))
	older := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "older", Namespace: "other", UID: "older-uid",
		CreationTimestamp: metav1.NewTime(f.sts.CreationTimestamp.Add(-time.Minute)),
		Labels:            map[string]string{patches.LabelExpose: patches.ExposeValue},
		Annotations:       map[string]string{patches.AnnotationPortBase: "30004"}}}
	require.NoError(t, f.client.Create(ctx, older))

	f.reconcile()
	assert.Equal(t, []string{"patch *v1.StatefulSet redpanda"}, f.writes, "no Service is made on the contested ports")
	require.NoError(t, f.client.Get(ctx, client.ObjectKeyFromObject(f.sts), f.sts))
	assert.NotContains(t, f.sts.Annotations, patches.AnnotationPortBase, "given up, for the webhook to reassign")
	require.NoError(t, f.client.Get(ctx, client.ObjectKeyFromObject(older), older))
	assert.Equal(t, "30004", older.Annotations[patches.AnnotationPortBase], "the older keeps its block")
	assert.Contains(t, strings.Join(drainEvents(f.events), "\n"), "Warning PortBlockConflict ports 30000-30015 overlapped StatefulSet other/older's 30004-30011")
}

func (f *fixture) configMap() map[string]string {
	f.t.Helper()
	cm := &corev1.ConfigMap{}
	require.NoError(f.t, f.client.Get(context.Background(), client.ObjectKey{Namespace: "kafka", Name: "redpanda-external"}, cm))
	return cm.Data
}

func (f *fixture) service(name string) []int32 {
	f.t.Helper()
	svc := &corev1.Service{}
	require.NoError(f.t, f.client.Get(context.Background(), client.ObjectKey{Namespace: "kafka", Name: name}, svc))
	return nodePorts(svc)
}

// rollPod replaces broker i as the StatefulSet controller and the webhook would: a new pod, on
// node, with the hostPorts the current configuration gives it.
func (f *fixture) rollPod(i, node int, listeners int) {
	f.t.Helper()
	ctx := context.Background()
	require.NoError(f.t, f.client.Delete(ctx, f.pod(i, "")))
	pod := f.pod(i, "")
	pod.Spec.NodeName = fmt.Sprintf("node-%d", node)
	pod.Labels[appsv1.ControllerRevisionHashLabelKey] = f.sts.Status.UpdateRevision
	pod.Spec.Containers[0].Ports = nil
	for l, containerPort := range []int32{9094, 8083, 8084, 9645, 33145}[:listeners] {
		pod.Spec.Containers[0].Ports = append(pod.Spec.Containers[0].Ports, corev1.ContainerPort{ContainerPort: containerPort, HostPort: int32(30000 + i*listeners + l)})
	}
	require.NoError(f.t, f.client.Create(ctx, pod))
}

// The listener change seen on make demo's cluster: a listener added to a running StatefulSet
// moves every Service's nodePorts onto ports another of its Services holds. The API server
// refuses a claim on a held port, so the Services must move in order; the ConfigMap publishes
// what the brokers really listen on until they have rolled.
func TestReconcileListenerAddedMovesEveryServiceInOrder(t *testing.T) {
	f := newFixture(t)
	f.reconcile()
	drainEvents(f.events)
	ctx := context.Background()

	f.sts.Annotations[patches.AnnotationListeners] = "kafka=9094,http=8083,schema-registry=8084"
	require.NoError(t, f.client.Update(ctx, f.sts))
	f.sts.Status.UpdateRevision = "redpanda-2" // as the StatefulSet controller records the new template
	require.NoError(t, f.client.Status().Update(ctx, f.sts))
	f.reconcile()
	assert.Equal(t, []string{
		"update *v1.Service redpanda-2-external", "update *v1.Service redpanda-1-external", "update *v1.Service redpanda-0-external",
		"update *v1.ConfigMap redpanda-external",
	}, f.writes)
	for i := range 3 {
		assert.Equal(t, []int32{int32(30000 + 3*i), int32(30001 + 3*i), int32(30002 + 3*i)}, f.service(fmt.Sprintf("redpanda-%d-external", i)))
	}
	data := f.configMap()
	assert.Equal(t, "127.0.1.1:30000,127.0.1.2:30002,127.0.1.3:30004", data["bootstrap.servers"], "where the brokers still listen")
	assert.Equal(t, "", data["schema-registry.bootstrap.servers"], "no broker listens on the new listener yet")
	assert.Contains(t, data["status"], "redpanda-1 not exposed: its pod was created before listeners [schema-registry] were configured")
	assert.NotContains(t, strings.Join(drainEvents(f.events), "\n"), "Warning", "a rollout's steps are not faults")

	// The brokers roll; redpanda-2 comes back on node-0's neighbour... node 1 is taken, so on a
	// fourth node.
	require.NoError(t, f.client.Create(ctx, node(3, "127.0.1.4")))
	f.rollPod(0, 0, 3)
	f.rollPod(1, 1, 3)
	f.rollPod(2, 3, 3)
	f.reconcile()
	data = f.configMap()
	assert.Equal(t, "127.0.1.1:30000,127.0.1.2:30003,127.0.1.4:30006", data["bootstrap.servers"])
	assert.Equal(t, "redpanda-0 127.0.1.1:30002\nredpanda-1 127.0.1.2:30005\nredpanda-2 127.0.1.4:30008", data["schema-registry.addresses"])
	assert.Equal(t, "redpanda-0 exposed\nredpanda-1 exposed\nredpanda-2 exposed", data["status"])
	assert.Contains(t, strings.Join(drainEvents(f.events), "\n"), "Normal Exposed all 3 brokers exposed on ports 30000-30023")
}

// A NodePort Service of another namespace holding a port of the block: that broker is not
// exposed, the Warning names the port and the holder, and every other broker goes on.
func TestReconcileSquatterBlocksOneBrokerOnly(t *testing.T) {
	f := newFixture(t)
	squat := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "squat"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Ports: []corev1.ServicePort{{Name: "web", Port: 80, NodePort: 30003}}}}
	require.NoError(t, f.client.Create(context.Background(), squat))
	res, err := f.r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(f.sts)})
	require.NoError(t, err)
	assert.Equal(t, blockedRetry, res.RequeueAfter, "looked at again: the squatter may go")

	assert.Equal(t, []string{"redpanda-0-external", "redpanda-2-external", "squat"}, f.serviceNames())
	data := f.configMap()
	assert.Equal(t, "127.0.1.1:30000,127.0.1.3:30004", data["bootstrap.servers"])
	assert.Equal(t, "redpanda-0 exposed\nredpanda-1 not exposed: port 30003 is held by Service other/squat\nredpanda-2 exposed", data["status"])
	events := strings.Join(drainEvents(f.events), "\n")
	assert.Contains(t, events, "Warning BrokerNotExposed broker redpanda-1 is not exposed: port 30003 is held by Service other/squat")
	assert.NotContains(t, events, "Normal Exposed", "Exposed only when every broker is")

	f.reconcile()
	assert.Empty(t, drainEvents(f.events), "said once, not on every look")

	require.NoError(t, f.client.Delete(context.Background(), squat))
	f.reconcile()
	assert.Equal(t, "redpanda-0 exposed\nredpanda-1 exposed\nredpanda-2 exposed", f.configMap()["status"])
	assert.Contains(t, strings.Join(drainEvents(f.events), "\n"), "Normal Exposed all 3 brokers")
}

// What a pod editor writes on a broker pod is never published: the address comes from the
// StatefulSet's configuration and the node, and the pod's annotations are put back.
func TestReconcileIgnoresEditedPodAnnotations(t *testing.T) {
	f := newFixture(t)
	f.reconcile()
	ctx := context.Background()
	pod := f.pod(1, "")
	require.NoError(t, f.client.Get(ctx, client.ObjectKeyFromObject(pod), pod))
	pod.Annotations[patches.AnnotationHostTemplate] = "attacker.example.com"
	pod.Annotations[patches.AnnotationHost] = "attacker.example.com"
	pod.Annotations[patches.AnnotationPortBase] = "30050"
	require.NoError(t, f.client.Update(ctx, pod))

	f.reconcile()
	assert.Equal(t, "127.0.1.1:30000,127.0.1.2:30002,127.0.1.3:30004", f.configMap()["bootstrap.servers"])
	require.NoError(t, f.client.Get(ctx, client.ObjectKeyFromObject(pod), pod))
	assert.Equal(t, "127.0.1.2", pod.Annotations[patches.AnnotationHost], "put back")
	events := strings.Join(drainEvents(f.events), "\n")
	assert.Contains(t, events, "Warning RestartRequired the address annotations said attacker.example.com")
	assert.Contains(t, events, "Warning AnnotationIgnored annotations [brokerport.io/port-base brokerport.io/host-template] of pod redpanda-1 differ from StatefulSet redpanda's and are ignored")
	f.reconcile()
	assert.Empty(t, drainEvents(f.events), "said once")
}

// A broker deleted and rescheduled onto another node is published at its new node at once.
func TestReconcileBrokerMovedToAnotherNode(t *testing.T) {
	f := newFixture(t)
	f.reconcile()
	require.NoError(t, f.client.Create(context.Background(), node(3, "127.0.1.4")))
	f.rollPod(2, 3, 2)
	f.reconcile()
	assert.Equal(t, "127.0.1.1:30000,127.0.1.2:30002,127.0.1.4:30004", f.configMap()["bootstrap.servers"])
}

// Opting out while a broker waits (for a node, or in its gate for an address brokerport no
// longer gives) releases it: it is deleted, to be created again without brokerport.
func TestReconcileOptOutReleasesPendingBrokers(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	require.NoError(t, f.client.Delete(ctx, f.pod(2, "")))
	pending := f.pod(2, "")
	pending.Status.Phase = corev1.PodPending
	pending.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(f.sts, appsv1.SchemeGroupVersion.WithKind("StatefulSet"))}
	require.NoError(t, f.client.Create(ctx, pending))
	f.reconcile()

	f.sts.Labels = nil
	require.NoError(t, f.client.Update(ctx, f.sts))
	f.reconcile()
	assert.Contains(t, f.writes, "delete *v1.Pod redpanda-2")
	assert.NotContains(t, f.writes, "delete *v1.Pod redpanda-0", "a running broker rolls with the StatefulSet")
	assert.Contains(t, strings.Join(drainEvents(f.events), "\n"), "Normal BrokerReleased broker redpanda-2 had not started")
}

// brokerport's own ConfigMap, created moments ago, that the cache does not show yet is not
// someone else's: no ConfigMapTaken.
func TestReconcileOwnConfigMapNotYetCached(t *testing.T) {
	f := newFixture(t)
	f.reconcile()
	drainEvents(f.events)
	f.r.Client = hideConfigMaps{f.r.Client}
	f.reconcile()
	assert.NotContains(t, strings.Join(drainEvents(f.events), "\n"), "ConfigMapTaken")
}

// hideConfigMaps reads like a ConfigMap cache that has not caught up.
type hideConfigMaps struct{ client.Client }

func (h hideConfigMaps) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if _, ok := obj.(*corev1.ConfigMap); ok {
		return apierrors.NewNotFound(corev1.Resource("configmaps"), key.Name)
	}
	return h.Client.Get(ctx, key, obj, opts...)
}

func TestDescribeSaysWhichBrokersAreNotExposed(t *testing.T) {
	cm := &corev1.ConfigMap{Data: map[string]string{
		"bootstrap.servers": "127.0.1.1:30000",
		"kafka.addresses":   "redpanda-0 127.0.1.1:30000",
		"status":            "redpanda-0 exposed\nredpanda-1 not exposed: port 30002 is held by Service other/squat",
	}}
	assert.Equal(t, `bootstrap.servers=127.0.1.1:30000

kafka:
  redpanda-0 127.0.1.1:30000

not exposed:
  redpanda-1 not exposed: port 30002 is held by Service other/squat
`, Describe(cm))
}

func TestAddressesBracketIPv6(t *testing.T) {
	cfg, errs := patches.ParseConfig(map[string]string{patches.AnnotationPortBase: "30000"}, nil, patches.DefaultOptions())
	require.Empty(t, errs)
	data := Addresses(cfg, []patches.BrokerState{{Pod: "r-0", Host: "2001:db8::10", Ports: []int32{30000}, Exposed: true}})
	assert.Equal(t, "[2001:db8::10]:30000", data["bootstrap.servers"])
}

// A ConfigMap that carries brokerport's cluster label but was not made by brokerport (no
// managed-by label) is someone else's: brokerport may not write it, and says so.
func TestReconcileLeavesALookalikeConfigMapAlone(t *testing.T) {
	f := newFixture(t)
	lookalike := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "kafka", Name: "redpanda-external",
		Labels: map[string]string{patches.LabelCluster: "redpanda"}}, Data: map[string]string{"mine": "yes"}}
	require.NoError(t, f.client.Create(context.Background(), lookalike))
	_, err := f.r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(f.sts)})
	require.ErrorContains(t, err, "ConfigMap kafka/redpanda-external exists and is not brokerport's")
	require.NoError(t, f.client.Get(context.Background(), client.ObjectKeyFromObject(lookalike), lookalike))
	assert.Equal(t, map[string]string{"mine": "yes"}, lookalike.Data, "untouched")
}

type fixedReachability map[string]string

func (f fixedReachability) For(namespace, sts string) map[string]string { return f }

// The external probe's keys are published beside the addresses, never over one of them.
func TestReconcilePublishesTheProbesKeys(t *testing.T) {
	f := newFixture(t)
	f.r.Reachability = fixedReachability{"kafka.reachability": "redpanda-0 reachable", "bootstrap.servers": "attacker:1"}
	f.reconcile()
	data := f.configMap()
	assert.Equal(t, "redpanda-0 reachable", data["kafka.reachability"])
	assert.Equal(t, "127.0.1.1:30000,127.0.1.2:30002,127.0.1.3:30004", data["bootstrap.servers"])
}

func TestBrokerGaugeStates(t *testing.T) {
	f := newFixture(t)
	squat := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "squat"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Ports: []corev1.ServicePort{{Name: "web", Port: 80, NodePort: 30003}}}}
	require.NoError(t, f.client.Create(context.Background(), squat))
	f.sts.Spec.Replicas = ptr.To[int32](4) // broker 3 has no pod yet
	require.NoError(t, f.client.Update(context.Background(), f.sts))
	_, err := f.r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(f.sts)})
	require.NoError(t, err)
	for state, want := range map[string]float64{"exposed": 2, "pending": 1, "failed": 1} {
		var m dto.Metric
		require.NoError(t, brokerGauge.WithLabelValues("kafka", "redpanda", state).Write(&m))
		assert.Equal(t, want, m.GetGauge().GetValue(), state)
	}
}
