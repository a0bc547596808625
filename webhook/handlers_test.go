package webhook

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/brokerport/brokerport/patches"
)

// StatefulSets labeled at the same moment, before the cache shows any of them, get distinct
// blocks.
func TestConcurrentOptInsGetDistinctBlocks(t *testing.T) {
	scheme := Scheme()
	reader := fake.NewClientBuilder().WithScheme(scheme).Build() // the cache shows none of them
	h := NewStatefulSetHandler(ReaderSnapshot{Reader: reader}, patches.DefaultOptions())
	const n = 10 // 10 × 8 ports fit in 30000-30085
	bases := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			raw := fmt.Sprintf(`{"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":"s%d","labels":{"brokerport.io/expose":"true"}},"spec":{"template":{"metadata":{"labels":{"a":"b"}}}}}`, i)
			resp := h.Handle(context.Background(), admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
				Operation: admissionv1.Create, Namespace: "kafka", Name: fmt.Sprintf("s%d", i), Object: runtime.RawExtension{Raw: []byte(raw)},
			}})
			require.True(t, resp.Allowed, "%v", resp.Result)
			for _, op := range resp.Patches {
				if op.Path == "/metadata/annotations" {
					bases[i] = op.Value.(map[string]any)[patches.AnnotationPortBase].(string)
				}
			}
		}()
	}
	wg.Wait()
	sorted := slices.Sorted(slices.Values(bases))
	assert.Equal(t, []string{"30000", "30008", "30016", "30024", "30032", "30040", "30048", "30056", "30064", "30072"}, sorted)
}

// A block assigned moments ago is held until the cache shows its StatefulSet, and freed with the
// StatefulSet from then on: a StatefulSet deleted right after its opt-in does not keep its block
// for the minutes a cache may lag (the e2e suite, labeling and deleting in quick succession, ran
// out of ports).
func TestRecentBlockFreedOnceCachedThenDeleted(t *testing.T) {
	reader := fake.NewClientBuilder().WithScheme(Scheme()).Build()
	h := NewStatefulSetHandler(ReaderSnapshot{Reader: reader}, patches.DefaultOptions())
	optIn := optInTo(t, h)
	require.Equal(t, "30000", optIn("first"))
	require.Equal(t, "30008", optIn("second"), "not yet in the cache: held")

	first := optedIn("first", "30000")
	require.NoError(t, reader.Create(context.Background(), first))
	require.Equal(t, "30016", optIn("third"), "in the cache: held by it")
	require.NoError(t, reader.Delete(context.Background(), first))
	assert.Equal(t, "30000", optIn("fourth"), "deleted: free again")
}

// A StatefulSet that the informer showed with its block and that went before the next opt-in
// frees its block at once: the cache no longer has it when the next opt-in looks (the e2e
// suite's TestBrokerport, right after TestLoadBalancer, found its block held for 2 minutes).
func TestRecentBlockForgottenWhenTheInformerShowsIt(t *testing.T) {
	reader := fake.NewClientBuilder().WithScheme(Scheme()).Build() // deleted by the time anyone looks
	h := NewStatefulSetHandler(ReaderSnapshot{Reader: reader}, patches.DefaultOptions())
	optIn := optInTo(t, h)
	informer := h.EventHandler()

	require.Equal(t, "30000", optIn("first"))
	informer.OnAdd(optedIn("first", "30000"), false)
	informer.OnDelete(optedIn("first", "30000"))
	assert.Equal(t, "30000", optIn("second"), "shown, then gone: free")

	informer.OnUpdate(optedIn("second", "30008"), optedIn("second", "30008"))
	assert.Equal(t, "30008", optIn("third"), "the informer showed another block of that name (an older StatefulSet): still held")
}

// optedIn is an opted-in StatefulSet as the cache holds it, with its block.
func optedIn(name, base string) *appsv1.StatefulSet {
	return &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: "kafka", Name: name,
		Labels: map[string]string{patches.LabelExpose: patches.ExposeValue}, Annotations: map[string]string{patches.AnnotationPortBase: base}}}
}

// optInTo returns a function that labels a new StatefulSet through h and gives its port base.
func optInTo(t *testing.T, h *StatefulSetHandler) func(name string) string {
	return func(name string) string {
		raw := fmt.Sprintf(`{"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":%q,"labels":{"brokerport.io/expose":"true"}},"spec":{"template":{"metadata":{"labels":{"a":"b"}}}}}`, name)
		resp := h.Handle(context.Background(), admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
			Operation: admissionv1.Create, Namespace: "kafka", Name: name, Object: runtime.RawExtension{Raw: []byte(raw)},
		}})
		require.True(t, resp.Allowed, "%v", resp.Result)
		for _, op := range resp.Patches {
			if op.Path == "/metadata/annotations" {
				return op.Value.(map[string]any)[patches.AnnotationPortBase].(string)
			}
		}
		return ""
	}
}
