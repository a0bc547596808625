//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/brokerport/brokerport/patches"
	"github.com/brokerport/brokerport/webhook/controller"
)

// TestTrust is issue 13's "nothing is trusted after admission": whoever can edit a broker pod
// writes `kubectl annotate pod redpanda-1 --overwrite brokerport.io/host-template=attacker.example.com
// brokerport.io/host=attacker.example.com`. Nothing published ever says attacker.example.com,
// the host annotation is put back to the node's address, and Warning Events say what was ignored
// and that the broker must restart. A labeled pod that no opted-in StatefulSet controls is
// refused at admission.
func TestTrust(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	const namespace, replicas, attacker = "trust", 2, "attacker.example.com"
	convergeNamespace(t, ctx, namespace, nil)
	sts := redpandaStatefulSet()
	sts.Namespace = namespace
	sts.Spec.Replicas = ptrTo(int32(replicas))
	sts.Labels = map[string]string{patches.LabelExpose: patches.ExposeValue}
	sts.Annotations[patches.AnnotationMaxBrokers] = "2" // a small block: the band is shared with the other tests
	require.NoError(t, env.admin.Create(ctx, sts))
	require.NoError(t, waitFor(ctx, 3*time.Minute, "2 brokers rolled out, exposed", func() error { return rolledOut(ctx, namespace, stsName, replicas, true) }))
	require.NoError(t, waitFor(ctx, time.Minute, "addresses published", func() error { return converged(ctx, namespace, stsName, replicas) }))

	// Every version of the ConfigMap from now on, not samples: a repair fast enough to win a
	// poll must not hide a publication.
	configMaps, err := env.admin.Watch(ctx, &corev1.ConfigMapList{}, client.InNamespace(namespace))
	require.NoError(t, err)
	defer configMaps.Stop()

	victim := stsName + "-1"
	pod := &corev1.Pod{}
	require.NoError(t, env.admin.Get(ctx, client.ObjectKey{Namespace: namespace, Name: victim}, pod))
	node := &corev1.Node{}
	require.NoError(t, env.admin.Get(ctx, client.ObjectKey{Name: pod.Spec.NodeName}, node))
	require.Equal(t, externalIP(node), pod.Annotations[patches.AnnotationHost], "the host before the edit")

	edited := time.Now()
	patchLabels(t, ctx, &corev1.Pod{}, client.ObjectKey{Namespace: namespace, Name: victim}, fmt.Sprintf(`{"metadata":{"annotations":{%q:%q,%q:%q}}}`,
		patches.AnnotationHostTemplate, attacker, patches.AnnotationHost, attacker))

	require.NoError(t, waitFor(ctx, 30*time.Second, "the host annotation put back to the node's address", func() error {
		if err := env.admin.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
			return err
		}
		if got := pod.Annotations[patches.AnnotationHost]; got != externalIP(node) {
			return fmt.Errorf("%s=%q, want %q", patches.AnnotationHost, got, externalIP(node))
		}
		return nil
	}))
	require.NoError(t, waitFor(ctx, 30*time.Second, "Warning Events for "+victim, func() error {
		return errors.Join(
			warningEvent(ctx, namespace, victim, "AnnotationIgnored", patches.AnnotationHostTemplate, edited),
			warningEvent(ctx, namespace, victim, "RestartRequired", attacker, edited))
	}))

	// A few more seconds of reconciles (the Events are written beside them): still nothing of
	// the attacker's in any version of the ConfigMap.
	deadline := time.After(5 * time.Second)
	versions := 0
watching:
	for {
		select {
		case ev, open := <-configMaps.ResultChan():
			require.True(t, open, "the ConfigMap watch ended early")
			cm, ok := ev.Object.(*corev1.ConfigMap)
			if !ok || ev.Type == watch.Error || cm.Name != controller.ConfigMapName(stsName) {
				continue
			}
			versions++
			for key, value := range cm.Data {
				assert.NotContains(t, value, attacker, "ConfigMap %s/%s %s (resourceVersion %s)", namespace, cm.Name, key, cm.ResourceVersion)
			}
		case <-deadline:
			break watching
		}
	}
	assert.NotZero(t, versions, "the watch saw no version of ConfigMap %s", controller.ConfigMapName(stsName))
	require.NoError(t, converged(ctx, namespace, stsName, replicas), "published from the StatefulSet and the nodes")

	// A bare pod with the opt-in label: no StatefulSet controls it, so it chooses nothing, not
	// even by naming a StatefulSet and a port block of its own.
	for name, labels := range map[string]map[string]string{
		"bare":         {patches.LabelExpose: patches.ExposeValue},
		"impersonator": {patches.LabelExpose: patches.ExposeValue, patches.LabelCluster: stsName},
	} {
		bare := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: labels,
				Annotations: map[string]string{patches.AnnotationPortBase: "30080", patches.AnnotationHostTemplate: attacker}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "kafka", Image: "kafka:e2e", Ports: []corev1.ContainerPort{{ContainerPort: 9094}}}}},
		}
		err := env.admin.Create(ctx, bare)
		if assert.Error(t, err, "pod %s was admitted", name) {
			assert.Contains(t, err.Error(), "label the StatefulSet, not the pod", "pod %s", name)
		}
	}
}

// warningEvent finds a Warning Event about pod with reason, last seen at or after since, whose
// note mentions about.
func warningEvent(ctx context.Context, namespace, pod, reason, about string, since time.Time) error {
	var list eventsv1.EventList
	if err := env.admin.List(ctx, &list, client.InNamespace(namespace)); err != nil {
		return err
	}
	var seen []string
	for _, e := range list.Items {
		if e.Regarding.Kind != "Pod" || e.Regarding.Name != pod {
			continue
		}
		at := e.EventTime.Time
		if e.Series != nil {
			at = e.Series.LastObservedTime.Time
		}
		seen = append(seen, fmt.Sprintf("%s %s %s: %s", at.Format("15:04:05.000"), e.Type, e.Reason, e.Note))
		// Whole seconds: the Event's time is the recorder's clock, not the test's.
		if e.Type == corev1.EventTypeWarning && e.Reason == reason && !at.Before(since.Truncate(time.Second)) && strings.Contains(e.Note, about) {
			return nil
		}
	}
	return fmt.Errorf("no Warning %s Event mentioning %q since %s; Events of pod %s: %v", reason, about, since.Format("15:04:05.000"), pod, seen)
}
