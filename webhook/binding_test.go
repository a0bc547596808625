package webhook

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/brokerport/brokerport/patches"
)

// failingReader fails the test on any read: the fast path must make no call.
type failingReader struct{ t *testing.T }

func (f failingReader) Get(context.Context, client.ObjectKey, client.Object, ...client.GetOption) error {
	f.t.Error("the fast path read an object")
	return nil
}

func (f failingReader) List(context.Context, client.ObjectList, ...client.ListOption) error {
	f.t.Error("the fast path listed objects")
	return nil
}

func TestBindingFastPathMakesNoCallAndNoAllocation(t *testing.T) {
	clusters := NewClusters()
	clusters.record(&appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: "kafka", Name: "redpanda", Labels: map[string]string{patches.LabelExpose: patches.ExposeValue}}}, true)
	reader := failingReader{t}
	h := NewBindingHandler(clusters, reader, reader, ReaderSnapshot{Reader: reader}, events.NewFakeRecorder(1), patches.DefaultOptions())
	ctx := context.Background()

	for name, podName := range map[string]string{
		"deployment pod":            "web-7d9f8c6b5-x2k4q",
		"other StatefulSet's pod":   "zookeeper-0",
		"broker name, other prefix": "redpanda-extra-0",
		"no ordinal":                "redpanda-",
		"bare name":                 "redpanda",
	} {
		t.Run(name, func(t *testing.T) {
			req := admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
				Operation: admissionv1.Create, Namespace: "kafka", Name: podName,
				Object: runtime.RawExtension{Raw: []byte(`{"kind":"Binding","apiVersion":"v1","metadata":{"name":"` + podName + `"},"target":{"kind":"Node","name":"node-1"}}`)},
			}}
			var resp admission.Response
			allocs := testing.AllocsPerRun(100, func() { resp = h.Handle(ctx, req) })
			assert.True(t, resp.Allowed)
			assert.Empty(t, resp.Patches)
			assert.Zero(t, allocs, "allocations per non-broker binding")
		})
	}
	t.Run("a broker in another namespace is not one here", func(t *testing.T) {
		resp := h.Handle(ctx, admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{Operation: admissionv1.Create, Namespace: "other", Name: "redpanda-0"}})
		assert.True(t, resp.Allowed)
	})
}

func TestClustersFollowTheInformer(t *testing.T) {
	c := NewClusters()
	labeled := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: "kafka", Name: "redpanda", Labels: map[string]string{patches.LabelExpose: patches.ExposeValue}}}
	handler := c.EventHandler()
	handler.OnAdd(labeled, false)
	assert.True(t, c.Has("kafka", "redpanda"))
	unlabeled := labeled.DeepCopy()
	unlabeled.Labels = nil
	handler.OnUpdate(labeled, unlabeled)
	assert.False(t, c.Has("kafka", "redpanda"), "opting out removes it")
	handler.OnAdd(labeled, false)
	handler.OnDelete(labeled)
	assert.False(t, c.Has("kafka", "redpanda"))
}
