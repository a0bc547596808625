//go:build e2e && scale

package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/brokerport/brokerport/patches"
	"github.com/brokerport/brokerport/test/cluster"
)

// TestScale (make bench: -tags e2e,scale) labels a 100-broker StatefulSet on 100 more kwok
// nodes and reports the time from the label to every broker exposed, and the API server's mean
// admission time of brokerport's webhooks per quarter of the rollout: flat means the cost of an
// admission does not grow with the brokers.
func TestScale(t *testing.T) {
	const n = 100
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	var ips []string
	for i := range n {
		ips = append(ips, fmt.Sprintf("127.0.3.%d", i+1))
	}
	require.NoError(t, cluster.CreateNodes(ctx, env.admin, "scale-node", ips))
	// 100 brokers need more ports than the NodePort static band holds.
	env.brokerport.Stop()
	var err error
	env.brokerport, err = env.cp.StartBrokerport(ctx, env.admin, env.clientset, env.binary, env.port, append([]string{"--port-range=30000-32767"}, brokerportArgs...)...)
	require.NoError(t, err)

	labels := map[string]string{"app": "big"}
	require.NoError(t, env.admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "scale"}}))
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "big", Namespace: "scale", Annotations: map[string]string{patches.AnnotationMaxBrokers: fmt.Sprint(n), patches.AnnotationAddressTypes: "ExternalIP"}},
		Spec: appsv1.StatefulSetSpec{
			Replicas: ptrTo(int32(n)), PodManagementPolicy: appsv1.ParallelPodManagement,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "kafka", Image: "k", Ports: []corev1.ContainerPort{{ContainerPort: 9094}}}}}},
		},
	}
	require.NoError(t, env.admin.Create(ctx, sts))
	require.NoError(t, waitFor(ctx, 5*time.Minute, "100 pods ready", func() error { return stsReady(ctx, n) }))

	before, err := admissionMetrics(ctx)
	require.NoError(t, err)
	// brokerport's own footprint (see TestFootprint), over the rollout.
	footprintBefore, err := readFootprint(env.brokerport.Pid())
	require.NoError(t, err)
	start := time.Now()
	require.NoError(t, env.admin.Patch(ctx, sts, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"brokerport.io/expose":"true"}}}`))))

	var rows []string
	last, lastUpdated := before, 0
	for _, quarter := range []int{25, 50, 75, 100} {
		require.NoError(t, waitFor(ctx, 10*time.Minute, fmt.Sprintf("%d brokers rolled", quarter), func() error {
			var pods corev1.PodList
			if err := env.admin.List(ctx, &pods, client.InNamespace("scale"), client.MatchingLabels{patches.LabelExpose: patches.ExposeValue}); err != nil {
				return err
			}
			bound := 0
			for _, p := range pods.Items {
				if p.Spec.NodeName != "" {
					bound++
				}
			}
			if bound < quarter {
				return fmt.Errorf("%d exposed brokers bound", bound)
			}
			return nil
		}))
		now, err := admissionMetrics(ctx)
		require.NoError(t, err)
		rows = append(rows, fmt.Sprintf("| %d–%d | %s | %s |", lastUpdated+1, quarter, now.mean(last, "pods.brokerport.io"), now.mean(last, "bindings.brokerport.io")))
		last, lastUpdated = now, quarter
	}
	require.NoError(t, waitFor(ctx, 10*time.Minute, "100 brokers exposed", func() error {
		if err := stsReady(ctx, n); err != nil {
			return err
		}
		return published(ctx, "scale", "big", n)
	}))
	elapsed := time.Since(start)
	footprintAfter, err := readFootprint(env.brokerport.Pid())
	require.NoError(t, err)

	report := fmt.Sprintf("%d brokers on %d kwok nodes: label to every broker exposed (rolled, Services and ConfigMap published) in %s.\n\n"+
		"| brokers rolled | mean pod admission (brokerport) | mean binding admission (brokerport) |\n|---|---|---|\n%s\n",
		n, n+len(nodeIPs), elapsed.Round(100*time.Millisecond), strings.Join(rows, "\n"))
	report += fmt.Sprintf("\nbrokerport's process (/proc/<pid>/status VmRSS and VmHWM, /proc/<pid>/stat utime+stime): "+
		"RSS %s before the label, %s once every broker was exposed (peak %s); %.2f CPU seconds during the rollout (%.2f since its start).\n",
		mib(footprintBefore.rss), mib(footprintAfter.rss), mib(footprintAfter.hwm), footprintAfter.cpu-footprintBefore.cpu, footprintAfter.cpu)
	t.Log("\n" + report)
	if out := os.Getenv("BROKERPORT_SCALE_OUT"); out != "" {
		require.NoError(t, os.WriteFile(out, []byte(report), 0o644))
	}
}

func stsReady(ctx context.Context, n int) error {
	got := &appsv1.StatefulSet{}
	if err := env.admin.Get(ctx, client.ObjectKey{Namespace: "scale", Name: "big"}, got); err != nil {
		return err
	}
	st := got.Status
	if st.ObservedGeneration != got.Generation || st.UpdateRevision != st.CurrentRevision || int(st.ReadyReplicas) != n || int(st.UpdatedReplicas) != n {
		return fmt.Errorf("status %+v", st)
	}
	return nil
}

// webhookTimes is the API server's apiserver_admission_webhook_admission_duration_seconds sum
// and count per webhook.
type webhookTimes map[string][2]float64

func admissionMetrics(ctx context.Context) (webhookTimes, error) {
	raw, err := env.clientset.RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, err
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(raw)))
	if err != nil {
		return nil, err
	}
	out := webhookTimes{}
	family := families["apiserver_admission_webhook_admission_duration_seconds"]
	if family == nil {
		return out, nil
	}
	for _, m := range family.Metric {
		for _, l := range m.Label {
			if l.GetName() == "name" {
				v := out[l.GetValue()]
				v[0] += m.GetHistogram().GetSampleSum()
				v[1] += float64(m.GetHistogram().GetSampleCount())
				out[l.GetValue()] = v
			}
		}
	}
	return out, nil
}

// mean is the mean admission time of a webhook since an earlier reading.
func (w webhookTimes) mean(since webhookTimes, name string) string {
	sum, count := w[name][0]-since[name][0], w[name][1]-since[name][1]
	if count == 0 {
		return "no calls"
	}
	return fmt.Sprintf("%.2f ms (%d calls)", sum/count*1000, int(count))
}
