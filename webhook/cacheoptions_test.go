package webhook

import (
	"context"
	"strings"
	"testing"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/brokerport/brokerport/patches"
	"github.com/brokerport/brokerport/test/cachedreader"
)

// What a tenant writes stays out of brokerport's memory unless brokerport reads it: a ConfigMap
// that only carries brokerport.io/cluster (any user can label one, 1 MiB each, in any namespace)
// is not cached, nor a Certificate brokerport did not make; every Service's nodePorts and every
// node's address still are.
func TestCachesHoldBrokerportsOwn(t *testing.T) {
	big := strings.Repeat("x", 1<<20)
	ours := map[string]string{patches.LabelCluster: "kafka", patches.LabelManagedBy: patches.ManagedByValue}
	objs := []client.Object{
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant", Name: "bloat", Labels: map[string]string{patches.LabelCluster: "kafka"}}, Data: map[string]string{"k": big}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "kafka-external", Labels: ours}},
		&cmapi.Certificate{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant", Name: "theirs", Labels: map[string]string{patches.LabelCluster: "kafka"}}},
		&cmapi.Certificate{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "kafka-0-external-tls", Labels: ours}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "web"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{NodePort: 30081}}}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-0"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "other"}},
	}
	reader, err := cachedreader.New(Scheme(), CacheOptions(), objs...)
	require.NoError(t, err)
	ctx := context.Background()
	cached := func(obj client.Object) bool {
		err := reader.Get(ctx, client.ObjectKeyFromObject(obj), obj.DeepCopyObject().(client.Object))
		require.True(t, err == nil || apierrors.IsNotFound(err), "%v", err)
		return err == nil
	}
	assert.False(t, cached(objs[0]), "a tenant's ConfigMap labeled brokerport.io/cluster")
	assert.True(t, cached(objs[1]), "brokerport's ConfigMap")
	assert.False(t, cached(objs[2]), "a Certificate brokerport did not make")
	assert.True(t, cached(objs[3]), "brokerport's Certificate")
	assert.True(t, cached(objs[4]), "another team's Service: its nodePorts are taken")
	assert.True(t, cached(objs[5]), "a node")
	assert.True(t, cached(objs[6]), "a namespace")
}
