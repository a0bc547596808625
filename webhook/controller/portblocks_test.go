package controller

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/brokerport/brokerport/patches"
	"github.com/brokerport/brokerport/webhook"
)

func blockSet(namespace, name string, labels, annotations map[string]string) appsv1.StatefulSet {
	return appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: labels, Annotations: annotations}}
}

func TestPortBlocks(t *testing.T) {
	exposed := map[string]string{patches.LabelExpose: patches.ExposeValue}
	sets := []appsv1.StatefulSet{
		blockSet("team-a", "kafka", exposed, map[string]string{patches.AnnotationPortBase: "30000", patches.AnnotationListeners: "kafka=9094,http=8083", patches.AnnotationMaxBrokers: "3"}),
		blockSet("team-b", "logs.v2", exposed, map[string]string{patches.AnnotationPortBase: "30040"}),
		// Not (yet) assigned, load-balanced, opted out, or misconfigured: no block.
		blockSet("team-c", "new", exposed, nil),
		blockSet("team-d", "lb", exposed, map[string]string{patches.AnnotationStrategy: "loadbalancer"}),
		blockSet("team-e", "gone", nil, map[string]string{patches.AnnotationPortBase: "30050"}),
		blockSet("team-f", "bad", exposed, map[string]string{patches.AnnotationPortBase: "30060", patches.AnnotationListeners: "=="}),
	}
	assert.Equal(t, map[string]string{"team-a.kafka": "30000-30005", "team-b.logs.v2": "30040-30047"}, PortBlocks(sets, patches.DefaultOptions()))
}

func TestPortBlocksWriter(t *testing.T) {
	exposed := map[string]string{patches.LabelExpose: patches.ExposeValue}
	sts := blockSet("team-a", "kafka", exposed, map[string]string{patches.AnnotationPortBase: "30000"})
	c := fake.NewClientBuilder().WithScheme(webhook.Scheme()).WithObjects(&sts).Build()
	open := false
	w := &PortBlocksWriter{Cache: c, API: c, Client: c, Namespace: "brokerport-system", Options: patches.DefaultOptions(), MayWrite: func() bool { return open }}
	ctx := context.Background()
	key := client.ObjectKey{Namespace: "brokerport-system", Name: PortBlocksConfigMap}

	res, err := w.Reconcile(ctx, reconcile.Request{})
	require.NoError(t, err)
	assert.NotZero(t, res.RequeueAfter, "held until brokerport's policies are in force")
	require.Error(t, c.Get(ctx, key, &corev1.ConfigMap{}))

	open = true
	_, err = w.Reconcile(ctx, reconcile.Request{})
	require.NoError(t, err)
	cm := &corev1.ConfigMap{}
	require.NoError(t, c.Get(ctx, key, cm))
	assert.Equal(t, map[string]string{"team-a.kafka": "30000-30007"}, cm.Data)
	assert.Equal(t, patches.ManagedByValue, cm.Labels[patches.LabelManagedBy])

	// Deleted by hand: written again at the next look.
	require.NoError(t, c.Delete(ctx, cm))
	res, err = w.Reconcile(ctx, reconcile.Request{})
	require.NoError(t, err)
	assert.NotZero(t, res.RequeueAfter, "the ConfigMap is looked at again")
	require.NoError(t, c.Get(ctx, key, cm))
	assert.Equal(t, map[string]string{"team-a.kafka": "30000-30007"}, cm.Data)

	require.NoError(t, c.Delete(ctx, &sts))
	_, err = w.Reconcile(ctx, reconcile.Request{})
	require.NoError(t, err)
	require.NoError(t, c.Get(ctx, key, cm))
	assert.Empty(t, cm.Data, "an opted-out StatefulSet's block is free again")
}
