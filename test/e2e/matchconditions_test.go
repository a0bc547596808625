//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	admissionregistrationv1ac "k8s.io/client-go/applyconfigurations/admissionregistration/v1"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/brokerport/brokerport/patches"
	"github.com/brokerport/brokerport/webhook"
	"github.com/brokerport/brokerport/webhook/matchconditions"
)

const bindingsWebhook = "bindings.brokerport.io"

// TestMatchConditions proves, from the API server's own metrics, that with matchConditions the
// binding webhook is called for brokers only, that a broker the conditions missed is still
// exposed (the gate and the companion controller's repair), and that the conditions for 1,000
// StatefulSets pass the API server's validation while those beyond the limits are refused
// by Build before they reach it.
//
// The controller runs in this test process with brokerport's ServiceAccount token, so brokerport's
// real RBAC applies, and the brokerport process runs with --binding-match-conditions=false (see
// main_test.go): the test can then stop the controller to make the conditions lag.
func TestMatchConditions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	stopController := startMatchConditions(t, ctx)
	defer stopController()
	// Leave the cluster as the other scenarios expect it: no matchConditions (no controller keeps
	// them current once this test ends), and none of this test's port blocks.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		stopController()
		apply := admissionregistrationv1ac.MutatingWebhookConfiguration("brokerport").
			WithWebhooks(admissionregistrationv1ac.MutatingWebhook().WithName(bindingsWebhook))
		assert.NoError(t, env.admin.Apply(ctx, apply, client.FieldOwner(matchconditions.FieldManager), client.ForceOwnership))
		assert.Empty(t, bindingConditions(ctx))
	})
	// Gone, with everything brokerport made in them, before the next scenario takes their ports.
	convergeNamespace(t, ctx, "mc-plain", nil)
	convergeNamespace(t, ctx, "mc-brokers", nil)

	require.NoError(t, waitFor(ctx, 30*time.Second, "matchConditions written", func() error {
		if conds := bindingConditions(ctx); len(conds) == 0 {
			return fmt.Errorf("none yet")
		}
		return nil
	}))

	t.Run("limits", func(t *testing.T) {
		// Server-side dry run: the API server's own validation of 1,000 StatefulSets with the
		// longest names Kubernetes allows (two conditions), without changing anything.
		var sets []types.NamespacedName
		for i := range 1000 {
			sets = append(sets, types.NamespacedName{Namespace: fmt.Sprintf("ns-%d-%s", i/5, strings.Repeat("n", 63))[:63],
				Name: fmt.Sprintf("sts-%d-%s", i, strings.Repeat("s", 52))[:52]})
		}
		conditions, err := matchconditions.Build(sets, matchconditions.DefaultLimits)
		require.NoError(t, err)
		require.Len(t, conditions, 3)
		mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
		require.NoError(t, env.admin.Get(ctx, client.ObjectKey{Name: "brokerport"}, mwc))
		i := slices.IndexFunc(mwc.Webhooks, func(w admissionregistrationv1.MutatingWebhook) bool { return w.Name == bindingsWebhook })
		mwc.Webhooks[i].MatchConditions = conditions
		require.NoError(t, env.admin.Update(ctx, mwc, client.DryRunAll), "the API server refuses the conditions of 1,000 StatefulSets")

		// What Build refuses, the API server refuses too: past 100,000 code points a condition
		// does not parse.
		mwc.Webhooks[i].MatchConditions = []admissionregistrationv1.MatchCondition{{Name: "too-long",
			Expression: `object.metadata.name in ["` + strings.Repeat("a", 100_000) + `"]`}}
		err = env.admin.Update(ctx, mwc, client.DryRunAll)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "exceeds limit")
	})

	t.Run("other pods are never sent", func(t *testing.T) {
		before := bindingCalls(t, ctx)
		labels := map[string]string{"app": "web"}
		require.NoError(t, env.admin.Create(ctx, &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Namespace: "mc-plain", Name: "web"},
			Spec: appsv1.DeploymentSpec{
				Replicas: ptrTo(int32(200)), Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web"}}}},
			},
		}))
		// A bare pod named like a broker of a StatefulSet that is not opted in.
		require.NoError(t, env.admin.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "mc-plain", Name: "redpanda-0"},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web"}}}}))
		require.NoError(t, waitFor(ctx, 2*time.Minute, "201 pods bound", func() error { return bound(ctx, "mc-plain", 201) }))
		assert.Equal(t, 0.0, bindingCalls(t, ctx)-before, "calls to %s for pods that are not brokers", bindingsWebhook)
	})

	t.Run("every broker is sent", func(t *testing.T) {
		// Opt in with no replica, wait for the conditions, then scale: no binding can race them.
		require.NoError(t, env.admin.Create(ctx, brokerStatefulSet("mc-brokers", "kafka", 0)))
		require.NoError(t, waitFor(ctx, 30*time.Second, "the conditions name mc-brokers/kafka", func() error {
			return conditionsName(ctx, "mc-brokers/kafka-")
		}))
		before := bindingCalls(t, ctx)
		scaleTo(t, ctx, "mc-brokers", "kafka", 3)
		require.NoError(t, waitFor(ctx, 60*time.Second, "3 brokers bound with their host", func() error { return brokersWithHost(ctx, "mc-brokers", "kafka", 3) }))
		assert.Equal(t, 3.0, bindingCalls(t, ctx)-before, "calls to %s, one per broker", bindingsWebhook)
	})

	t.Run("a broker the conditions missed is repaired", func(t *testing.T) {
		// The conditions lag behind this opt-in for as long as the controller is stopped: its
		// brokers bind without brokerport, their gate holds them, and the companion controller
		// writes their address.
		stopController()
		before := bindingCalls(t, ctx)
		require.NoError(t, env.admin.Create(ctx, brokerStatefulSet("mc-brokers", "late", 2)))
		require.NoError(t, waitFor(ctx, 90*time.Second, "2 late brokers repaired with their host", func() error { return brokersWithHost(ctx, "mc-brokers", "late", 2) }))
		assert.Equal(t, 0.0, bindingCalls(t, ctx)-before, "the late brokers' bindings were not sent")
		assert.NotContains(t, bindingConditionsText(ctx), "mc-brokers/late-")
	})
}

// startMatchConditions runs the controller with brokerport's credentials until the returned
// function is called (at most once takes effect).
func startMatchConditions(t *testing.T, ctx context.Context) func() {
	restConfig, err := clientcmd.BuildConfigFromFlags("", filepath.Join(env.cp.Dir, "brokerport.kubeconfig"))
	require.NoError(t, err)
	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
		Scheme: webhook.Scheme(), Cache: webhook.CacheOptions(),
		Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		// Started again by later scenarios in this test binary: controller-runtime refuses a
		// second controller of the same name in one process (for its metrics) unless told.
		Controller: ctrlconfig.Controller{SkipNameValidation: ptrTo(true)},
	})
	require.NoError(t, err)
	require.NoError(t, matchconditions.Setup(mgr, matchconditions.Options{Debounce: 300 * time.Millisecond}))
	mgrCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mgrCtx) }()
	stopped := false
	return func() {
		if stopped {
			return
		}
		stopped = true
		stop()
		assert.NoError(t, <-done)
	}
}

func brokerStatefulSet(namespace, name string, replicas int32) *appsv1.StatefulSet {
	labels := map[string]string{"app": name}
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name,
			Labels:      map[string]string{patches.LabelExpose: patches.ExposeValue},
			Annotations: map[string]string{patches.AnnotationMaxBrokers: "3", patches.AnnotationAddressTypes: "ExternalIP"}},
		Spec: appsv1.StatefulSetSpec{
			Replicas: ptrTo(replicas), Selector: &metav1.LabelSelector{MatchLabels: labels},
			PodManagementPolicy: appsv1.ParallelPodManagement,
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "kafka", Image: "k", Ports: []corev1.ContainerPort{{ContainerPort: 9094}}}}}},
		},
	}
}

func scaleTo(t *testing.T, ctx context.Context, namespace, name string, replicas int32) {
	sts := &appsv1.StatefulSet{}
	require.NoError(t, env.admin.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, sts))
	sts.Spec.Replicas = ptrTo(replicas)
	require.NoError(t, env.admin.Update(ctx, sts))
}

// bindingCalls is the API server's count of calls to the binding webhook, over all label sets
// of apiserver_admission_webhook_admission_duration_seconds.
func bindingCalls(t *testing.T, ctx context.Context) float64 {
	raw, err := env.clientset.RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	require.NoError(t, err)
	total := 0.0
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, "apiserver_admission_webhook_admission_duration_seconds_count{") ||
			!strings.Contains(line, `name="`+bindingsWebhook+`"`) {
			continue
		}
		var v float64
		_, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v)
		require.NoError(t, err, line)
		total += v
	}
	return total
}

func bindingConditions(ctx context.Context) []admissionregistrationv1.MatchCondition {
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := env.admin.Get(ctx, client.ObjectKey{Name: "brokerport"}, mwc); err != nil {
		return nil
	}
	for _, w := range mwc.Webhooks {
		if w.Name == bindingsWebhook {
			return w.MatchConditions
		}
	}
	return nil
}

func bindingConditionsText(ctx context.Context) string {
	var b strings.Builder
	for _, c := range bindingConditions(ctx) {
		b.WriteString(c.Expression + "\n")
	}
	return b.String()
}

func conditionsName(ctx context.Context, key string) error {
	if !strings.Contains(bindingConditionsText(ctx), fmt.Sprintf("%q", key)) {
		return fmt.Errorf("%s not in the matchConditions yet", key)
	}
	return nil
}

func bound(ctx context.Context, namespace string, n int) error {
	var pods corev1.PodList
	if err := env.admin.List(ctx, &pods, client.InNamespace(namespace)); err != nil {
		return err
	}
	count := 0
	for _, p := range pods.Items {
		if p.Spec.NodeName != "" {
			count++
		}
	}
	if count != n {
		return fmt.Errorf("%d of %d bound", count, n)
	}
	return nil
}

func brokersWithHost(ctx context.Context, namespace, sts string, n int) error {
	for i := range n {
		pod := &corev1.Pod{}
		if err := env.admin.Get(ctx, client.ObjectKey{Namespace: namespace, Name: fmt.Sprintf("%s-%d", sts, i)}, pod); err != nil {
			return err
		}
		if pod.Spec.NodeName == "" || pod.Annotations[patches.AnnotationHost] == "" {
			return fmt.Errorf("pod %s: node %q, host %q", pod.Name, pod.Spec.NodeName, pod.Annotations[patches.AnnotationHost])
		}
	}
	return nil
}
