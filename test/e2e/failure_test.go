//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/brokerport/brokerport/patches"
)

// brokerportDown stops brokerport mid-rollout: while it is down, a change to an opted-in
// StatefulSet is refused and a broker pod the StatefulSet controller recreates is refused
// (failurePolicy Fail) rather than created half-exposed; once brokerport is back, the rollout
// completes with every broker exposed.
func brokerportDown(t *testing.T, ctx context.Context) {
	env.brokerport.Stop()
	sts := &appsv1.StatefulSet{}
	require.NoError(t, env.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: stsName}, sts))
	sts.Spec.Replicas = ptrTo(int32(3))
	err := env.admin.Update(ctx, sts)
	require.Error(t, err, "a StatefulSet change went through without brokerport")
	assert.Contains(t, err.Error(), `failed calling webhook "statefulsets.brokerport.io"`)

	require.NoError(t, env.admin.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "redpanda-1"}}))
	require.NoError(t, waitFor(ctx, 30*time.Second, "redpanda-1 gone", func() error {
		if err := env.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: "redpanda-1"}, &corev1.Pod{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	}))
	time.Sleep(3 * time.Second) // the StatefulSet controller tries to recreate it, and is refused
	err = env.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: "redpanda-1"}, &corev1.Pod{})
	assert.True(t, apierrors.IsNotFound(err), "a broker pod was created while brokerport was down: %v", err)

	env.brokerport, err = env.cp.StartBrokerport(ctx, env.admin, env.clientset, env.binary, env.port, brokerportArgs...)
	require.NoError(t, err)
	waitRolledOut(t, ctx, 2, true)
	require.NoError(t, waitFor(ctx, 60*time.Second, "2 Services and the ConfigMap", func() error { return checkPublished(ctx, 2) }))
	checkBrokers(t, ctx, 2)
}

// concurrentOptIns labels 20 StatefulSets at the same moment: no two get overlapping blocks, and
// the API server never refuses a Service for a port already allocated.
func concurrentOptIns(t *testing.T, ctx context.Context) {
	const n = 20
	require.NoError(t, env.admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "many"}}))
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			labels := map[string]string{"app": fmt.Sprintf("s%d", i)}
			errs[i] = env.admin.Create(ctx, &appsv1.StatefulSet{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("s%d", i), Namespace: "many",
					Labels:      map[string]string{patches.LabelExpose: patches.ExposeValue},
					Annotations: map[string]string{patches.AnnotationMaxBrokers: "1", patches.AnnotationAddressTypes: "ExternalIP"}},
				Spec: appsv1.StatefulSetSpec{
					Replicas: ptrTo(int32(1)), Selector: &metav1.LabelSelector{MatchLabels: labels},
					Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
						Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "kafka", Image: "k", Ports: []corev1.ContainerPort{{ContainerPort: 9094}}}}}},
				},
			})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "s%d", i)
	}
	require.NoError(t, waitFor(ctx, 2*time.Minute, "20 brokers exposed", func() error {
		for i := range n {
			if err := published(ctx, "many", fmt.Sprintf("s%d", i), 1); err != nil {
				return fmt.Errorf("s%d: %w", i, err)
			}
		}
		return nil
	}))
	var sets appsv1.StatefulSetList
	require.NoError(t, env.admin.List(ctx, &sets, client.MatchingLabels{patches.LabelExpose: patches.ExposeValue}))
	var blocks []patches.Reservation
	for _, s := range sets.Items {
		cfg, errs := patches.ParseConfig(s.Annotations, nil, patches.DefaultOptions())
		require.Empty(t, errs)
		if s.Namespace == "brokerport-system" {
			continue
		}
		require.NotZero(t, cfg.PortBase, "%s/%s", s.Namespace, s.Name)
		block := patches.Reservation{PortRange: cfg.Block(), Owner: s.Namespace + "/" + s.Name}
		if res, overlap := patches.NewPortSet(blocks...).Conflict(block.PortRange); overlap {
			t.Errorf("%s's block %s overlaps %s's %s", block.Owner, block.PortRange, res.Owner, res.PortRange)
		}
		blocks = append(blocks, block)
	}
	logData, err := os.ReadFile(env.brokerport.Log)
	require.NoError(t, err)
	assert.NotContains(t, string(logData), "already allocated", "the API server refused a Service's nodePort")
	assert.False(t, strings.Contains(string(logData), `"level":"error"`) && strings.Contains(string(logData), "creating Service"), "a Service could not be created")
}

// nodeGoneWhilePending deletes a node while a broker waits for one (one broker per node, and
// every node taken): the waiting broker is left without an address, the published addresses
// list only bound brokers, and once a node comes back the broker is bound with that node's
// address from its first moment.
func nodeGoneWhilePending(t *testing.T, ctx context.Context) {
	c := env.admin
	key := client.ObjectKey{Namespace: "kafka", Name: "kafka"}
	scaleKafka := func(n int) {
		patchLabels(t, ctx, &appsv1.StatefulSet{}, key, fmt.Sprintf(`{"spec":{"replicas":%d}}`, n))
	}
	scaleKafka(5) // 4 nodes: kafka-4 can only wait
	require.NoError(t, waitFor(ctx, 2*time.Minute, "kafka-4 pending", func() error {
		pod := &corev1.Pod{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: "kafka", Name: "kafka-4"}, pod); err != nil {
			return err
		}
		if pod.Spec.NodeName != "" || pod.Annotations[patches.AnnotationHost] != "" {
			return fmt.Errorf("kafka-4 on %q with host %q", pod.Spec.NodeName, pod.Annotations[patches.AnnotationHost])
		}
		return nil
	}))

	// The node of kafka-3 goes away, and its pod with it (as the pod garbage collector would).
	victim := &corev1.Pod{}
	require.NoError(t, c.Get(ctx, client.ObjectKey{Namespace: "kafka", Name: "kafka-3"}, victim))
	node := &corev1.Node{}
	require.NoError(t, c.Get(ctx, client.ObjectKey{Name: victim.Spec.NodeName}, node))
	require.NoError(t, c.Delete(ctx, node))
	require.NoError(t, c.Delete(ctx, victim, client.GracePeriodSeconds(0)))
	require.NoError(t, waitFor(ctx, time.Minute, "published addresses without the lost broker", func() error { return published(ctx, "kafka", "kafka", 3) }))

	// A node comes back under the same name with a new address: the waiting brokers bind to it.
	node.ResourceVersion, node.UID = "", ""
	for i, a := range node.Status.Addresses {
		if a.Type == corev1.NodeExternalIP {
			node.Status.Addresses[i].Address = "127.0.1.9"
		}
	}
	require.NoError(t, c.Create(ctx, node))
	require.NoError(t, waitFor(ctx, 2*time.Minute, "a broker bound to the new node", func() error {
		var pods corev1.PodList
		if err := c.List(ctx, &pods, client.InNamespace("kafka")); err != nil {
			return err
		}
		for _, p := range pods.Items {
			if p.Spec.NodeName == node.Name {
				if p.Annotations[patches.AnnotationHost] != "127.0.1.9" {
					return fmt.Errorf("%s on %s with host %q", p.Name, node.Name, p.Annotations[patches.AnnotationHost])
				}
				return nil
			}
		}
		return fmt.Errorf("no broker on %s yet", node.Name)
	}))
	scaleKafka(3)
	require.NoError(t, waitFor(ctx, 2*time.Minute, "kafka back to 3 published brokers", func() error { return published(ctx, "kafka", "kafka", 3) }))
}
