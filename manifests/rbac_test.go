package manifests

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/admission"
	admissionregistrationv1ac "k8s.io/client-go/applyconfigurations/admissionregistration/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/brokerport/brokerport/certs"
	"github.com/brokerport/brokerport/patches"
	"github.com/brokerport/brokerport/webhook"
	"github.com/brokerport/brokerport/webhook/controller"
	"github.com/brokerport/brokerport/webhook/matchconditions"
)

// call is one API request brokerport makes: a verb on a resource, in a namespace ("" for
// cluster-scoped), optionally on one named object.
type call struct {
	verb, group, resource, namespace, name string
}

func (c call) String() string {
	return fmt.Sprintf("%s %s/%s ns=%q name=%q", c.verb, c.group, c.resource, c.namespace, c.name)
}

// recorder turns client calls into API calls. Reads through a cached client are served by
// informers, which list and watch; reads through a direct client are gets and lists.
type recorder struct {
	scheme *runtime.Scheme
	calls  []call
	writes []write
}

// write is a create, update, patch or delete brokerport made, as the API server's admission sees
// it: the object after the write (nil on delete) and before (nil on create).
type write struct {
	op       string
	obj, old client.Object
}

// before reads the stored object a write is about to change.
func before(ctx context.Context, c client.WithWatch, obj client.Object) client.Object {
	old := obj.DeepCopyObject().(client.Object)
	if err := c.Get(ctx, client.ObjectKeyFromObject(obj), old); err != nil {
		return nil
	}
	return old
}

func (r *recorder) record(verb string, obj runtime.Object, namespace, name string) {
	gvk, err := apiutil.GVKForObject(obj, r.scheme)
	if err != nil {
		panic(err)
	}
	gvk.Kind = strings.TrimSuffix(gvk.Kind, "List")
	mapping := map[string]string{"StatefulSet": "statefulsets", "Pod": "pods", "Service": "services", "ConfigMap": "configmaps", "Node": "nodes", "Namespace": "namespaces", "Secret": "secrets", "MutatingWebhookConfiguration": "mutatingwebhookconfigurations", "Certificate": "certificates"}
	r.calls = append(r.calls, call{verb: verb, group: gvk.Group, resource: mapping[gvk.Kind], namespace: namespace, name: name})
}

// client records calls to store as made through a cached or a direct client.
func (r *recorder) client(store client.WithWatch, cached bool) client.Client {
	read := func(obj runtime.Object, namespace, name string) {
		if cached {
			r.record("list", obj, "", "")
			r.record("watch", obj, "", "")
			return
		}
		r.record("get", obj, namespace, name)
	}
	return interceptor.NewClient(store, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			read(obj, key.Namespace, key.Name)
			return c.Get(ctx, key, obj, opts...)
		},
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			if cached {
				read(list, "", "")
			} else {
				r.record("list", list, "", "")
			}
			return c.List(ctx, list, opts...)
		},
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			r.record("create", obj, obj.GetNamespace(), "")
			if svc, ok := obj.(*corev1.Service); ok {
				svc.Spec.Ports[0].NodePort = 30000 // what the Service webhook would do
			}
			r.writes = append(r.writes, write{op: "CREATE", obj: obj.DeepCopyObject().(client.Object)})
			return c.Create(ctx, obj, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			r.record("update", obj, obj.GetNamespace(), obj.GetName())
			r.writes = append(r.writes, write{op: "UPDATE", obj: obj.DeepCopyObject().(client.Object), old: before(ctx, c, obj)})
			return c.Update(ctx, obj, opts...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			r.record("patch", obj, obj.GetNamespace(), obj.GetName())
			old := before(ctx, c, obj)
			if err := c.Patch(ctx, obj, patch, opts...); err != nil {
				return err
			}
			r.writes = append(r.writes, write{op: "UPDATE", obj: obj.DeepCopyObject().(client.Object), old: old})
			return nil
		},
		Apply: func(ctx context.Context, c client.WithWatch, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
			// Server-side apply is a patch; brokerport applies only its webhook configuration.
			mwc := obj.(*admissionregistrationv1ac.MutatingWebhookConfigurationApplyConfiguration)
			r.calls = append(r.calls, call{verb: "patch", group: "admissionregistration.k8s.io", resource: "mutatingwebhookconfigurations", name: *mwc.Name})
			return c.Apply(ctx, obj, opts...)
		},
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			r.record("delete", obj, obj.GetNamespace(), obj.GetName())
			r.writes = append(r.writes, write{op: "DELETE", old: before(ctx, c, obj)})
			return c.Delete(ctx, obj, opts...)
		},
	})
}

// exercise runs what brokerport does against recording clients and returns the API calls and
// the writes among them.
func exercise(t *testing.T) ([]call, []write) {
	r := &recorder{scheme: webhook.Scheme()}
	ctx := context.Background()
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "kafka", Namespace: "team-a", UID: "kafka-uid", Labels: map[string]string{patches.LabelExpose: patches.ExposeValue}, Annotations: map[string]string{patches.AnnotationPortBase: "30000"}},
		Spec:       appsv1.StatefulSetSpec{Replicas: ptr.To[int32](2)},
	}
	controlledBy := []metav1.OwnerReference{*metav1.NewControllerRef(sts, appsv1.SchemeGroupVersion.WithKind("StatefulSet"))}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "kafka-0", Namespace: "team-a", Labels: map[string]string{patches.LabelExpose: patches.ExposeValue, patches.LabelCluster: "kafka"}, Annotations: map[string]string{patches.AnnotationPortBase: "30000"}, OwnerReferences: controlledBy},
		Spec:       corev1.PodSpec{NodeName: "node-0"},
	}
	// A broker still waiting for a node when its StatefulSet opts out is deleted.
	pending := pod.DeepCopy()
	pending.Name, pending.UID, pending.Spec.NodeName = "kafka-1", "kafka-1-uid", ""
	pending.Status.Phase = corev1.PodPending
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-0"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeExternalIP, Address: "203.0.113.1"}}}}
	// Services brokerport made earlier, labeled and owned as it makes them.
	stale := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "kafka-0-external", Namespace: "team-a", OwnerReferences: controlledBy,
		Labels: map[string]string{patches.LabelExpose: patches.ExposeValue, patches.LabelCluster: "kafka", patches.LabelManagedBy: patches.ManagedByValue}},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "old", Port: 1}}}}
	surplus := stale.DeepCopy()
	surplus.Name = "kafka-5-external"
	surplus.Spec.Selector = map[string]string{"statefulset.kubernetes.io/pod-name": "kafka-5"}

	// Controller: create a ConfigMap, update and delete Services, repair a pod; then opt out.
	objects := []client.Object{sts, pod, pending, node, stale, surplus}
	store := fake.NewClientBuilder().WithScheme(r.scheme).WithObjects(objects...).Build()
	cached, direct := r.client(store, true), r.client(store, false)
	reconciler := &controller.Reconciler{Client: cached, API: direct, Events: events.NewFakeRecorder(100), Options: patches.DefaultOptions()}
	_, err := reconciler.Reconcile(ctx, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(sts)})
	require.NoError(t, err)
	// Calls made for the test's sake, not brokerport's, are not recorded.
	asUser := func(do func()) {
		calls, writes := len(r.calls), len(r.writes)
		do()
		r.calls, r.writes = r.calls[:calls], r.writes[:writes]
	}
	// The node's address changes: the pod is repaired. Someone edits the ConfigMap: it is restored.
	asUser(func() {
		moved := node.DeepCopy()
		require.NoError(t, cached.Get(ctx, client.ObjectKeyFromObject(moved), moved))
		moved.Status.Addresses[0].Address = "203.0.113.9"
		require.NoError(t, cached.Status().Update(ctx, moved))
		cm := &corev1.ConfigMap{}
		require.NoError(t, cached.Get(ctx, client.ObjectKey{Namespace: "team-a", Name: controller.ConfigMapName("kafka")}, cm))
		cm.Data = map[string]string{"edited": "by hand"}
		require.NoError(t, cached.Update(ctx, cm))
	})
	_, err = reconciler.Reconcile(ctx, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(sts)})
	require.NoError(t, err)
	// The user opts out.
	asUser(func() {
		require.NoError(t, cached.Get(ctx, client.ObjectKeyFromObject(sts), sts))
		sts.Labels = nil
		require.NoError(t, cached.Update(ctx, sts))
	})
	_, err = reconciler.Reconcile(ctx, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(sts)})
	require.NoError(t, err)

	// Two StatefulSets given overlapping blocks at the same moment: the later one gives its up.
	asUser(func() {
		for i, name := range []string{"early", "late"} {
			require.NoError(t, cached.Create(ctx, &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{
				Name: name, Namespace: "team-b", UID: types.UID(name), CreationTimestamp: metav1.NewTime(time.Unix(int64(1000+i), 0)),
				Labels: map[string]string{patches.LabelExpose: patches.ExposeValue}, Annotations: map[string]string{patches.AnnotationPortBase: "31000"},
			}}))
		}
	})
	_, err = reconciler.Reconcile(ctx, reconcile.Request{NamespacedName: client.ObjectKey{Namespace: "team-b", Name: "late"}})
	require.NoError(t, err)

	// The ConfigMap the cache does not show yet (created moments ago) is read from the API server.
	asUser(func() {
		require.NoError(t, cached.Get(ctx, client.ObjectKeyFromObject(sts), sts))
		sts.Labels = map[string]string{patches.LabelExpose: patches.ExposeValue}
		require.NoError(t, cached.Update(ctx, sts))
		require.NoError(t, cached.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: controller.ConfigMapName("kafka"),
			Labels: map[string]string{patches.LabelCluster: "kafka", patches.LabelManagedBy: patches.ManagedByValue}, OwnerReferences: controlledBy}}))
	})
	lagging := &controller.Reconciler{Client: configMapsNotCached{cached}, API: direct, Events: events.NewFakeRecorder(100), Options: patches.DefaultOptions()}
	_, err = lagging.Reconcile(ctx, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(sts)})
	require.NoError(t, err)

	// Per-broker TLS (brokerport.io/tls-issuer) on a cluster with cert-manager: the broker's
	// Certificate is created, updated when its host changes, and deleted on opt-out.
	secure := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "secure", Namespace: "team-c", UID: "secure-uid", Labels: map[string]string{patches.LabelExpose: patches.ExposeValue},
			Annotations: map[string]string{patches.AnnotationPortBase: "30050", patches.AnnotationTLSIssuer: "ClusterIssuer/brokers-ca"}},
		Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](1), ServiceName: "secure"},
	}
	asUser(func() {
		require.NoError(t, cached.Create(ctx, secure))
		require.NoError(t, cached.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeExternalIP, Address: "203.0.113.2"}}}}))
		require.NoError(t, cached.Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "secure-0", Namespace: "team-c", Labels: map[string]string{patches.LabelExpose: patches.ExposeValue, patches.LabelCluster: "secure"},
				Annotations:     map[string]string{patches.AnnotationPortBase: "30050", patches.AnnotationTLSIssuer: "ClusterIssuer/brokers-ca"},
				OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(secure, appsv1.SchemeGroupVersion.WithKind("StatefulSet"))}},
			// As admitted: on its node port.
			Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "kafka", Ports: []corev1.ContainerPort{{ContainerPort: 9094, HostPort: 30050}}}}},
		}))
	})
	withCertManager := &controller.Reconciler{Client: cached, API: direct, Events: events.NewFakeRecorder(100), Options: patches.DefaultOptions(), CertManager: true}
	certificate := client.ObjectKey{Namespace: "team-c", Name: patches.TLSSecretName("secure", 0)}
	_, err = withCertManager.Reconcile(ctx, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(secure)})
	require.NoError(t, err)
	asUser(func() {
		require.NoError(t, cached.Get(ctx, certificate, &cmapi.Certificate{}), "created")
		moved := &corev1.Node{}
		require.NoError(t, cached.Get(ctx, client.ObjectKey{Name: "node-1"}, moved))
		moved.Status.Addresses[0].Address = "203.0.113.3"
		require.NoError(t, cached.Status().Update(ctx, moved))
	})
	_, err = withCertManager.Reconcile(ctx, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(secure)})
	require.NoError(t, err)
	asUser(func() {
		cert := &cmapi.Certificate{}
		require.NoError(t, cached.Get(ctx, certificate, cert))
		require.Equal(t, []string{"203.0.113.3"}, cert.Spec.IPAddresses, "updated for the new host")
		require.NoError(t, cached.Get(ctx, client.ObjectKeyFromObject(secure), secure))
		secure.Labels = nil
		require.NoError(t, cached.Update(ctx, secure))
	})
	_, err = withCertManager.Reconcile(ctx, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(secure)})
	require.NoError(t, err)
	asUser(func() {
		require.True(t, apierrors.IsNotFound(cached.Get(ctx, certificate, &cmapi.Certificate{})), "deleted on opt-out")
	})

	// The loadbalancer strategy: a LoadBalancer Service per broker, replaced by a NodePort one
	// (deleted and created again) when the StatefulSet switches back.
	balanced := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "balanced", Namespace: "team-d", UID: "balanced-uid", Labels: map[string]string{patches.LabelExpose: patches.ExposeValue},
			Annotations: map[string]string{patches.AnnotationPortBase: "30060", patches.AnnotationStrategy: string(patches.StrategyLoadBalancer)}},
		Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](1)},
	}
	asUser(func() { require.NoError(t, cached.Create(ctx, balanced)) })
	_, err = reconciler.Reconcile(ctx, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(balanced)})
	require.NoError(t, err)
	balancer := &corev1.Service{}
	asUser(func() {
		require.NoError(t, cached.Get(ctx, client.ObjectKey{Namespace: "team-d", Name: "balanced-0-external"}, balancer))
		require.Equal(t, corev1.ServiceTypeLoadBalancer, balancer.Spec.Type)
		require.NoError(t, cached.Get(ctx, client.ObjectKeyFromObject(balanced), balanced))
		delete(balanced.Annotations, patches.AnnotationStrategy)
		require.NoError(t, cached.Update(ctx, balanced))
	})
	_, err = reconciler.Reconcile(ctx, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(balanced)})
	require.NoError(t, err)
	asUser(func() {
		require.NoError(t, cached.Get(ctx, client.ObjectKeyFromObject(balancer), balancer))
		require.Equal(t, corev1.ServiceTypeNodePort, balancer.Spec.Type, "switched back")
	})

	// Webhook snapshot (cached; live for what the cache cannot answer) and the binding webhook's
	// GET on a cache miss (direct).
	snapshot := webhook.ReaderSnapshot{Reader: cached, Live: direct}
	_, err = snapshot.PortsInUse(ctx, "team-a", "kafka")
	require.NoError(t, err)
	_, err = snapshot.Namespace(ctx, "created-with-its-statefulset")
	require.NoError(t, err)
	_, err = snapshot.LiveStatefulSet(ctx, "team-a", "kafka")
	require.NoError(t, err)
	require.NoError(t, direct.Get(ctx, client.ObjectKeyFromObject(pod), &corev1.Pod{}))

	// Self-managed certificates: create the Secret, renew it, patch the webhook configuration.
	certClient := r.client(fake.NewClientBuilder().WithScheme(r.scheme).WithObjects(&admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "brokerport"}, Webhooks: []admissionregistrationv1.MutatingWebhook{{Name: "x"}, {Name: "bindings.brokerport.io"}},
	}).Build(), false)
	// The binding webhook's matchConditions, applied to the same configuration.
	conditions := &matchconditions.Reconciler{Cache: cached, API: certClient, Client: certClient, Events: events.NewFakeRecorder(10),
		Options: matchconditions.Options{WebhookConfig: "brokerport"}}
	_, err = conditions.Reconcile(ctx, reconcile.Request{})
	require.NoError(t, err)
	now := time.Now()
	m := certs.NewManager(certClient, certs.Options{Namespace: "brokerport-system", SecretName: "brokerport-webhook-tls", WebhookConfig: "brokerport", Hosts: []string{"h"}, CertDir: t.TempDir(), Lifetime: time.Hour, Now: func() time.Time { return now }})
	_, err = m.Ensure(ctx)
	require.NoError(t, err)
	now = now.Add(time.Hour)
	_, err = m.Ensure(ctx)
	require.NoError(t, err)

	calls, writes := r.calls, r.writes
	// Informers the manager starts (webhook.CachedTypes), Events (events.k8s.io, through the
	// manager's recorder) and leader election (a Lease in brokerport's namespace) do not pass
	// through these clients.
	for _, obj := range webhook.CachedTypes() {
		r.calls = nil
		r.record("list", obj, "", "")
		r.record("watch", obj, "", "")
		calls = append(calls, r.calls...)
	}
	calls = append(calls,
		call{verb: "create", group: "events.k8s.io", resource: "events", namespace: "team-a"},
		call{verb: "patch", group: "events.k8s.io", resource: "events", namespace: "team-a"},
		call{verb: "get", group: "coordination.k8s.io", resource: "leases", namespace: "brokerport-system", name: "brokerport-controller"},
		call{verb: "create", group: "coordination.k8s.io", resource: "leases", namespace: "brokerport-system"},
		call{verb: "update", group: "coordination.k8s.io", resource: "leases", namespace: "brokerport-system", name: "brokerport-controller"},
		call{verb: "create", group: "", resource: "events", namespace: "brokerport-system"},
		call{verb: "patch", group: "", resource: "events", namespace: "brokerport-system"},
		// The metrics server's authentication and authorization filter.
		call{verb: "create", group: "authentication.k8s.io", resource: "tokenreviews"},
		call{verb: "create", group: "authorization.k8s.io", resource: "subjectaccessreviews"},
	)
	return calls, writes
}

// rule is a policy rule with where it applies.
type rule struct {
	rbacv1.PolicyRule
	namespace string // "" for a ClusterRole
	from      string
	used      map[string]bool
}

func (r *rule) allows(c call) bool {
	if r.namespace != "" && r.namespace != c.namespace {
		return false
	}
	if !slices.Contains(r.APIGroups, c.group) || !slices.Contains(r.Resources, c.resource) || !slices.Contains(r.Verbs, c.verb) {
		return false
	}
	return len(r.ResourceNames) == 0 || (c.name != "" && slices.Contains(r.ResourceNames, c.name))
}

// rules are the rules of the roles an overlay binds to brokerport's ServiceAccount (not, for
// example, brokerport-metrics-reader, which is for the scraper).
func rules(t *testing.T, overlay string) []*rule {
	objects := decode(t, overlay)
	isBrokerport := func(subjects []rbacv1.Subject) bool {
		return slices.ContainsFunc(subjects, func(s rbacv1.Subject) bool {
			return s.Kind == "ServiceAccount" && s.Name == "brokerport" && s.Namespace == "brokerport-system"
		})
	}
	bound := map[string]bool{} // "ClusterRole/name" or "Role/namespace/name"
	for _, o := range objects {
		switch b := o.(type) {
		case *rbacv1.ClusterRoleBinding:
			if isBrokerport(b.Subjects) {
				bound[b.RoleRef.Kind+"/"+b.RoleRef.Name] = true
			}
		case *rbacv1.RoleBinding:
			if isBrokerport(b.Subjects) {
				bound[b.RoleRef.Kind+"/"+b.Namespace+"/"+b.RoleRef.Name] = true
			}
		}
	}
	var out []*rule
	for _, o := range objects {
		switch role := o.(type) {
		case *rbacv1.ClusterRole:
			if !bound["ClusterRole/"+role.Name] {
				continue
			}
			for _, p := range role.Rules {
				out = append(out, &rule{PolicyRule: p, from: "ClusterRole " + role.Name, used: map[string]bool{}})
			}
		case *rbacv1.Role:
			if !bound["Role/"+role.Namespace+"/"+role.Name] {
				continue
			}
			for _, p := range role.Rules {
				out = append(out, &rule{PolicyRule: p, namespace: role.Namespace, from: "Role " + role.Namespace + "/" + role.Name, used: map[string]bool{}})
			}
		}
	}
	return out
}

// Every write brokerport's code makes passes the ValidatingAdmissionPolicies that bound its
// identity: the policies are no tighter than the code.
func TestWritesStayWithinThePolicy(t *testing.T) {
	ps := identityPolicies(t)
	_, writes := exercise(t)
	require.NotEmpty(t, writes)
	for _, w := range writes {
		some := w.obj
		if some == nil {
			some = w.old
		}
		if some == nil {
			continue // deleting what is gone already
		}
		kind := strings.TrimPrefix(fmt.Sprintf("%T", some), "*v1.")
		gvr, ok := resources[kind]
		if !ok {
			// RBAC names the one object of this kind brokerport may write.
			assert.Equal(t, "MutatingWebhookConfiguration", kind, "brokerport writes %s, which no policy bounds", kind)
			continue
		}
		// A kind the policy does not match would pass unchecked.
		require.NotNil(t, ps[gvr.Resource], "no policy bounds brokerport's writes of %s", gvr.Resource)
		assert.True(t, ps[gvr.Resource].matches(gvr, admission.Operation(w.op)), "policy %s does not match %s %s", ps[gvr.Resource].Name, w.op, gvr)
		msg := admitAsBrokerport(t, ps, req{op: admission.Operation(w.op), user: brokerportUser, obj: w.obj, old: w.old})
		assert.Empty(t, msg, "%s %T %s/%s", w.op, some, some.GetNamespace(), some.GetName())
	}
}

// Every call brokerport makes is allowed by the standalone overlay's roles, and every verb the
// roles grant is used: the RBAC is exactly what the code needs.
func TestRBACIsExactlyWhatTheCodeCalls(t *testing.T) {
	calls, _ := exercise(t)
	rs := rules(t, "standalone")
	for _, c := range calls {
		allowed := false
		for _, r := range rs {
			if r.allows(c) {
				allowed = true
				r.used[c.verb+" "+c.resource] = true
			}
		}
		assert.True(t, allowed, "forbidden: %s", c)
	}
	for _, r := range rs {
		for _, v := range r.Verbs {
			for _, res := range r.Resources {
				assert.True(t, r.used[v+" "+res], "%s grants %s on %s, which brokerport never does", r.from, v, res)
			}
		}
	}
	// The default overlay (cert-manager) needs no Secret access; its webhook configuration only
	// for the binding webhook's matchConditions.
	for _, r := range rules(t, "default") {
		assert.NotContains(t, r.Resources, "secrets", r.from)
	}
}

// configMapsNotCached reads like a ConfigMap cache that has not caught up with a create.
type configMapsNotCached struct{ client.Client }

func (c configMapsNotCached) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if _, ok := obj.(*corev1.ConfigMap); ok {
		return apierrors.NewNotFound(corev1.Resource("configmaps"), key.Name)
	}
	return c.Client.Get(ctx, key, obj, opts...)
}
