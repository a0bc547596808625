package cachedreader

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

func TestReadsAsTheCacheKeeps(t *testing.T) {
	opts := cache.Options{ByObject: map[client.Object]cache.ByObject{
		&corev1.Pod{}: {
			Label: labels.SelectorFromSet(labels.Set{"broker": "yes"}),
			Transform: func(obj any) (any, error) {
				pod := obj.(*corev1.Pod)
				pod.Spec = corev1.PodSpec{NodeName: pod.Spec.NodeName}
				return pod, nil
			},
		},
	}}
	broker := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "b", Namespace: "ns", Labels: map[string]string{"broker": "yes"}},
		Spec: corev1.PodSpec{NodeName: "n", Containers: []corev1.Container{{Name: "c"}}}}
	other := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "o", Namespace: "ns"}}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n"}}
	r, err := New(scheme.Scheme, opts, broker, other, node)
	require.NoError(t, err)
	ctx := context.Background()

	got := &corev1.Pod{}
	require.NoError(t, r.Get(ctx, client.ObjectKey{Namespace: "ns", Name: "b"}, got))
	assert.Equal(t, "n", got.Spec.NodeName)
	assert.Empty(t, got.Spec.Containers, "kept as transformed")
	got.Labels["broker"] = "changed"
	again := &corev1.Pod{}
	require.NoError(t, r.Get(ctx, client.ObjectKey{Namespace: "ns", Name: "b"}, again))
	assert.Equal(t, "yes", again.Labels["broker"], "every read is a copy")

	assert.True(t, apierrors.IsNotFound(r.Get(ctx, client.ObjectKey{Namespace: "ns", Name: "o"}, &corev1.Pod{})), "not selected, not kept")
	require.NoError(t, r.Get(ctx, client.ObjectKey{Name: "n"}, &corev1.Node{}))

	var pods corev1.PodList
	require.NoError(t, r.List(ctx, &pods, client.InNamespace("ns"), client.MatchingLabels{"broker": "yes"}))
	assert.Len(t, pods.Items, 1)
	require.NoError(t, r.List(ctx, &pods, client.MatchingLabels{"broker": "no"}))
	assert.Empty(t, pods.Items)
}
