package webhook

import (
	"context"
	"fmt"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/brokerport/brokerport/patches"
)

// apiServer answers brokerport's dry-run writes as the API server does once the named policies
// are loaded: refused, naming the policy; any other write is admitted.
func apiServer(t *testing.T, loaded map[string]bool, objects ...client.Object) client.Client {
	t.Helper()
	return apiServerRecording(t, loaded, nil, objects...)
}

// apiServerRecording is apiServer, appending "namespace/name" of every patched object to patched.
func apiServerRecording(t *testing.T, loaded map[string]bool, patched *[]string, objects ...client.Object) client.Client {
	t.Helper()
	return apiServerWith(t, true, loaded, patched, objects...)
}

// apiServerWith is apiServerRecording, with cert-manager's Certificates served or not.
func apiServerWith(t *testing.T, certManager bool, loaded map[string]bool, patched *[]string, objects ...client.Object) client.Client {
	t.Helper()
	mapper := meta.NewDefaultRESTMapper(nil)
	for _, gvk := range []schema.GroupVersionKind{corev1.SchemeGroupVersion.WithKind("ConfigMap"), corev1.SchemeGroupVersion.WithKind("Pod"), appsv1.SchemeGroupVersion.WithKind("StatefulSet")} {
		mapper.Add(gvk, meta.RESTScopeNamespace)
	}
	if certManager {
		mapper.Add(cmapi.SchemeGroupVersion.WithKind(cmapi.CertificateKind), meta.RESTScopeNamespace)
	}
	refuse := func(policy string, obj client.Object, opts []string) error {
		require.Equal(t, []string{metav1.DryRunAll}, opts, "every check is a dry run")
		if !loaded[policy] {
			return nil
		}
		return apierrors.NewForbidden(schema.GroupResource{Resource: fmt.Sprintf("%T", obj)}, obj.GetName(),
			fmt.Errorf("ValidatingAdmissionPolicy '%s' with binding '%s' denied request: no", policy, policy))
	}
	return fake.NewClientBuilder().WithScheme(Scheme()).WithRESTMapper(mapper).WithObjects(objects...).WithInterceptorFuncs(interceptor.Funcs{
		Create: func(_ context.Context, _ client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			o := &client.CreateOptions{}
			o.ApplyOptions(opts)
			if _, ok := obj.(*cmapi.Certificate); ok {
				return refuse("brokerport-certificate-writes", obj, o.DryRun)
			}
			return refuse("brokerport-writes", obj, o.DryRun)
		},
		Patch: func(_ context.Context, _ client.WithWatch, obj client.Object, _ client.Patch, opts ...client.PatchOption) error {
			o := &client.PatchOptions{}
			o.ApplyOptions(opts)
			if patched != nil {
				*patched = append(*patched, obj.GetNamespace()+"/"+obj.GetName())
			}
			switch obj.(type) {
			case *corev1.Pod:
				return refuse("brokerport-pod-writes", obj, o.DryRun)
			case *appsv1.StatefulSet:
				return refuse("brokerport-statefulset-writes", obj, o.DryRun)
			}
			t.Fatalf("unexpected patch of %T", obj)
			return nil
		},
	}).Build()
}

func TestCheckPolicies(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "coredns", Namespace: "kube-system"}}
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "team-a"}}
	all := map[string]bool{"brokerport-writes": true, "brokerport-certificate-writes": true, "brokerport-pod-writes": true, "brokerport-statefulset-writes": true}
	tests := map[string]struct {
		loaded    map[string]bool
		objects   []client.Object
		unchecked []string
		missing   []string // policies the error names
	}{
		"every policy in force":              {loaded: all, objects: []client.Object{pod, sts}},
		"none loaded yet":                    {loaded: nil, objects: []client.Object{pod, sts}, missing: []string{"brokerport-writes", "brokerport-certificate-writes", "brokerport-pod-writes", "brokerport-statefulset-writes"}},
		"the StatefulSet one is late":        {loaded: map[string]bool{"brokerport-writes": true, "brokerport-pod-writes": true}, objects: []client.Object{pod, sts}, missing: []string{"brokerport-statefulset-writes"}},
		"no pod nor StatefulSet to check on": {loaded: all, unchecked: []string{"brokerport-pod-writes", "brokerport-statefulset-writes"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			unchecked, err := CheckPolicies(context.Background(), apiServer(t, tc.loaded, tc.objects...))
			assert.Equal(t, tc.unchecked, unchecked)
			if len(tc.missing) == 0 {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			for _, policy := range tc.missing {
				assert.Contains(t, err.Error(), "ValidatingAdmissionPolicy "+policy+" is not in force")
			}
			for policy := range tc.loaded {
				assert.NotContains(t, err.Error(), "ValidatingAdmissionPolicy "+policy+" ")
			}
		})
	}
}

// The checks touch kube-system's objects first, and never an opted-in one: brokerport's own
// webhook is called for those, and it is not reachable while no replica is ready.
func TestPolicyChecksPickTheirObjects(t *testing.T) {
	all := map[string]bool{"brokerport-writes": true, "brokerport-certificate-writes": true, "brokerport-pod-writes": true, "brokerport-statefulset-writes": true}
	exposed := map[string]string{patches.LabelExpose: patches.ExposeValue}
	var patched []string
	unchecked, err := CheckPolicies(context.Background(), apiServerRecording(t, all, &patched,
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "a-team"}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "coredns", Namespace: "kube-system"}},
		&appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "kafka", Namespace: "a-team", Labels: exposed}}))
	require.NoError(t, err)
	assert.Equal(t, []string{"kube-system/coredns"}, patched)
	assert.Equal(t, []string{"brokerport-statefulset-writes"}, unchecked, "an opted-in StatefulSet is not checked on")

	patched = nil
	_, err = CheckPolicies(context.Background(), apiServerRecording(t, all, &patched,
		&appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "kafka", Namespace: "a-team", Labels: exposed}},
		&appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "b-team"}}))
	require.NoError(t, err)
	assert.Equal(t, []string{"b-team/db"}, patched)
}

// Without cert-manager there is no Certificate to write, and no policy of its to check.
func TestPolicyChecksWithoutCertManager(t *testing.T) {
	unchecked, err := CheckPolicies(context.Background(), apiServerWith(t, false, map[string]bool{"brokerport-writes": true}, nil))
	require.NoError(t, err)
	assert.Equal(t, []string{"brokerport-certificate-writes", "brokerport-pod-writes", "brokerport-statefulset-writes"}, unchecked)
}

func TestPolicyGate(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "a"}}
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "a"}}
	gate := &PolicyGate{Client: apiServer(t, map[string]bool{"brokerport-writes": true, "brokerport-certificate-writes": true, "brokerport-pod-writes": true}, pod, sts)}
	assert.False(t, gate.InForce())
	require.ErrorContains(t, gate.Ready(), "not been checked yet")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = gate.Start(ctx) }()
	require.Eventually(t, func() bool { return gate.Ready() != nil && gate.last.Load() != nil }, 10*time.Second, time.Millisecond)
	assert.False(t, gate.InForce(), "a policy of brokerport's is missing")
	assert.ErrorContains(t, gate.Ready(), "brokerport-statefulset-writes", "readiness names what is missing")
	cancel()
	<-done

	inForce := &PolicyGate{Client: apiServer(t, map[string]bool{"brokerport-writes": true, "brokerport-certificate-writes": true, "brokerport-pod-writes": true, "brokerport-statefulset-writes": true}, pod, sts)}
	require.NoError(t, inForce.Start(context.Background()), "returns once in force")
	assert.True(t, inForce.InForce())
	assert.NoError(t, inForce.Ready())
}
