package matchconditions

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/brokerport/brokerport/certs"
	"github.com/brokerport/brokerport/patches"
)

func gauge(t *testing.T, g prometheus.Gauge) float64 {
	var m dto.Metric
	require.NoError(t, g.Write(&m))
	return m.GetGauge().GetValue()
}

func webhookConfig() *admissionregistrationv1.MutatingWebhookConfiguration {
	hook := func(name string) admissionregistrationv1.MutatingWebhook {
		return admissionregistrationv1.MutatingWebhook{
			Name:                    name,
			AdmissionReviewVersions: []string{"v1"},
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: ptr.To("https://127.0.0.1:9443/" + name)},
		}
	}
	bindings := hook("bindings.brokerport.io")
	// An administrator's own condition: ANDed with brokerport's, never touched.
	bindings.MatchConditions = []admissionregistrationv1.MatchCondition{{Name: "not-dry-run", Expression: "!request.dryRun"}}
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "brokerport"},
		Webhooks:   []admissionregistrationv1.MutatingWebhook{hook("pods.brokerport.io"), bindings},
	}
}

func statefulSet(namespace, name string) *appsv1.StatefulSet {
	return &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name,
		Labels: map[string]string{patches.LabelExpose: patches.ExposeValue}}}
}

func bindingConditions(t *testing.T, c client.Client) ([]admissionregistrationv1.MatchCondition, [][]byte) {
	t.Helper()
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	require.NoError(t, c.Get(context.Background(), client.ObjectKey{Name: "brokerport"}, mwc))
	var bundles [][]byte
	for _, w := range mwc.Webhooks {
		bundles = append(bundles, w.ClientConfig.CABundle)
	}
	return mwc.Webhooks[1].MatchConditions, bundles
}

func built(t *testing.T, sets ...types.NamespacedName) []admissionregistrationv1.MatchCondition {
	conditions, err := Build(sets, DefaultLimits)
	require.NoError(t, err)
	return conditions
}

// The conditions follow opt-in and opt-out, through brokerport's own CA patch (certs), which
// neither wipes them nor is wiped by them; an administrator's own condition stays throughout.
func TestReconcile(t *testing.T) {
	ctx := context.Background()
	c := fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).WithObjects(webhookConfig(), statefulSet("kafka", "redpanda")).Build()
	recorder := events.NewFakeRecorder(10)
	r := &Reconciler{Cache: c, API: c, Client: c, Events: recorder, Options: Options{}.withDefaults()}
	reconcileOnce := func() {
		t.Helper()
		res, err := r.Reconcile(ctx, reconcile.Request{})
		require.NoError(t, err)
		assert.Equal(t, r.Options.Resync, res.RequeueAfter)
	}
	admins := admissionregistrationv1.MatchCondition{Name: "not-dry-run", Expression: "!request.dryRun"}

	reconcileOnce()
	got, _ := bindingConditions(t, c)
	assert.Equal(t, append([]admissionregistrationv1.MatchCondition{admins}, built(t, types.NamespacedName{Namespace: "kafka", Name: "redpanda"})...), got)
	assert.Equal(t, 1.0, gauge(t, coveredGauge))

	// Standalone mode's CA patch: a merge patch of the whole webhook list, under optimistic lock.
	certManager := certs.NewManager(c, certs.Options{Namespace: "brokerport-system", SecretName: "brokerport-webhook-tls",
		WebhookConfig: "brokerport", Hosts: []string{"127.0.0.1"}, CertDir: t.TempDir()})
	_, err := certManager.Ensure(ctx)
	require.NoError(t, err)
	got, bundles := bindingConditions(t, c)
	assert.Equal(t, append([]admissionregistrationv1.MatchCondition{admins}, built(t, types.NamespacedName{Namespace: "kafka", Name: "redpanda"})...), got)
	for _, b := range bundles {
		assert.NotEmpty(t, b, "caBundle injected")
	}

	require.NoError(t, c.Create(ctx, statefulSet("other", "kafka")))
	reconcileOnce()
	got, after := bindingConditions(t, c)
	assert.Equal(t, append([]admissionregistrationv1.MatchCondition{admins}, built(t, types.NamespacedName{Namespace: "kafka", Name: "redpanda"}, types.NamespacedName{Namespace: "other", Name: "kafka"})...), got)
	assert.Equal(t, bundles, after, "the caBundle survives the apply")

	// Unchanged: nothing is written.
	before := &admissionregistrationv1.MutatingWebhookConfiguration{}
	require.NoError(t, c.Get(ctx, client.ObjectKey{Name: "brokerport"}, before))
	reconcileOnce()
	unchanged := &admissionregistrationv1.MutatingWebhookConfiguration{}
	require.NoError(t, c.Get(ctx, client.ObjectKey{Name: "brokerport"}, unchanged))
	assert.Equal(t, before.ResourceVersion, unchanged.ResourceVersion)

	require.NoError(t, c.Delete(ctx, statefulSet("kafka", "redpanda")))
	require.NoError(t, c.Delete(ctx, statefulSet("other", "kafka")))
	reconcileOnce()
	got, _ = bindingConditions(t, c)
	assert.Equal(t, append([]admissionregistrationv1.MatchCondition{admins}, built(t)...), got, "no broker: no binding is sent")
	assert.Empty(t, recorder.Events)
}

// Beyond the limits: brokerport's conditions are removed (every binding is sent, decided by name
// as before), with one Warning Event and the fallback metric; back within them, conditions return.
func TestReconcileFallsBack(t *testing.T) {
	ctx := context.Background()
	c := fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).WithObjects(webhookConfig(), statefulSet("kafka", "redpanda")).Build()
	recorder := events.NewFakeRecorder(10)
	r := &Reconciler{Cache: c, API: c, Client: c, Events: recorder, Options: Options{}.withDefaults()}
	admins := admissionregistrationv1.MatchCondition{Name: "not-dry-run", Expression: "!request.dryRun"}
	_, err := r.Reconcile(ctx, reconcile.Request{})
	require.NoError(t, err)

	r.Options.Limits = Limits{MaxExpressionBytes: 200, MaxTotalBytes: 300, MaxConditions: 64}
	require.NoError(t, c.Create(ctx, statefulSet("kafka", "a-statefulset-with-a-name-long-enough-to-overflow")))
	for range 2 {
		_, err = r.Reconcile(ctx, reconcile.Request{})
		require.NoError(t, err)
	}
	got, _ := bindingConditions(t, c)
	assert.Equal(t, []admissionregistrationv1.MatchCondition{admins}, got)
	assert.Equal(t, 1.0, gauge(t, fallbackGauge))
	require.Len(t, recorder.Events, 1, "one Event per entry into fallback")
	assert.Contains(t, <-recorder.Events, "Warning MatchConditionsTooLarge")

	r.Options.Limits = DefaultLimits
	_, err = r.Reconcile(ctx, reconcile.Request{})
	require.NoError(t, err)
	got, _ = bindingConditions(t, c)
	assert.Len(t, got, 3)
	assert.Equal(t, 0.0, gauge(t, fallbackGauge))
}

// No configuration, or one without the binding webhook: nothing to write, no error (applying
// would create an invalid object).
func TestReconcileWithoutWebhook(t *testing.T) {
	c := fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).WithObjects(statefulSet("kafka", "redpanda")).Build()
	r := &Reconciler{Cache: c, API: c, Client: c, Events: events.NewFakeRecorder(1), Options: Options{}.withDefaults()}
	_, err := r.Reconcile(context.Background(), reconcile.Request{})
	require.NoError(t, err)

	mwc := webhookConfig()
	mwc.Webhooks = mwc.Webhooks[:1]
	require.NoError(t, c.Create(context.Background(), mwc))
	_, err = r.Reconcile(context.Background(), reconcile.Request{})
	require.NoError(t, err)
	require.NoError(t, c.Get(context.Background(), client.ObjectKey{Name: "brokerport"}, mwc))
	assert.Len(t, mwc.Webhooks, 1)
}
