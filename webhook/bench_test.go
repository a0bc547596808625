package webhook

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	"sigs.k8s.io/yaml"

	"github.com/brokerport/brokerport/patches"
	"github.com/brokerport/brokerport/test/cachedreader"
)

// Benchmarks of each handler, decode → mutate → patch, on realistic input. The HTTP and
// AdmissionReview encoding around them are controller-runtime's and measured by test/load.

func benchInput(b testing.TB, path string) []byte {
	b.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	raw, err := yaml.YAMLToJSON(data)
	if err != nil {
		b.Fatal(err)
	}
	return raw
}

func benchRequest(op admissionv1.Operation, namespace, name string, raw []byte) admission.Request {
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		Operation: op, Namespace: namespace, Name: name, Object: runtime.RawExtension{Raw: raw},
	}}
}

func runHandler(b *testing.B, h admission.Handler, req admission.Request, wantPatch bool) {
	b.Helper()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		resp := h.Handle(ctx, req)
		if !resp.Allowed || (len(resp.Patches) > 0) != wantPatch {
			b.Fatalf("allowed=%v patches=%d: %v", resp.Allowed, len(resp.Patches), resp.Result)
		}
	}
}

// benchCluster is a cluster with the Redpanda StatefulSet, its broker pod and its node, in
// caches kept as the manager keeps them (CacheOptions).
func benchCluster(b *testing.B) (ReaderSnapshot, *Clusters, *corev1.Pod) {
	scheme := Scheme()
	pod := &corev1.Pod{}
	if err := yaml.Unmarshal(benchInput(b, "testdata/bench/pod-redpanda.yaml"), pod); err != nil {
		b.Fatal(err)
	}
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "redpanda", Namespace: "redpanda", UID: pod.OwnerReferences[0].UID,
		Labels: map[string]string{patches.LabelExpose: patches.ExposeValue}, Annotations: pod.Annotations}}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeExternalIP, Address: "203.0.113.2"}}}}
	reader, err := cachedreader.New(scheme, CacheOptions(), sts, pod.DeepCopy(), node)
	if err != nil {
		b.Fatal(err)
	}
	clusters := NewClusters()
	clusters.record(sts, true)
	return ReaderSnapshot{Reader: reader, Options: patches.DefaultOptions()}, clusters, pod
}

// diffVsDirect runs a handler benchmark twice in one run: with the patch diffed from the
// encodings, as before, and built directly from what changed, as now.
func diffVsDirect(b *testing.B, h admission.Handler, req admission.Request) {
	b.Run("diff", func(b *testing.B) {
		patchByDiff = true
		defer func() { patchByDiff = false }()
		runHandler(b, h, req, true)
	})
	b.Run("direct", func(b *testing.B) { runHandler(b, h, req, true) })
}

func BenchmarkPodHandler(b *testing.B) {
	snapshot, _, _ := benchCluster(b)
	h := NewPodHandler(snapshot, patches.DefaultOptions())
	diffVsDirect(b, h, benchRequest(admissionv1.Create, "redpanda", "redpanda-1", benchInput(b, "testdata/bench/pod-redpanda.yaml")))
}

// BenchmarkPodHandlerWithGate is the production case (the manifests set --gate-image): the gate
// goes in ahead of the chart's init containers (the diff had to be taken from the raw request).
func BenchmarkPodHandlerWithGate(b *testing.B) {
	snapshot, _, _ := benchCluster(b)
	opts := patches.DefaultOptions()
	opts.GateImage = "ghcr.io/brokerport/brokerport:v0.1.0"
	h := NewPodHandler(snapshot, opts)
	diffVsDirect(b, h, benchRequest(admissionv1.Create, "redpanda", "redpanda-1", benchInput(b, "testdata/bench/pod-redpanda.yaml")))
}

func BenchmarkStatefulSetHandler(b *testing.B) {
	snapshot, _, _ := benchCluster(b)
	h := NewStatefulSetHandler(snapshot, patches.DefaultOptions())
	raw := benchInput(b, "testdata/sts-redpanda-four-listeners.in.yaml")
	var c goldenCase
	if err := yaml.Unmarshal(raw, &c); err != nil {
		b.Fatal(err)
	}
	diffVsDirect(b, h, benchRequest(admissionv1.Update, "redpanda", "redpanda", c.Object))
}

func BenchmarkServiceHandler(b *testing.B) {
	snapshot, _, _ := benchCluster(b)
	h := NewServiceHandler(snapshot, patches.DefaultOptions())
	sts, _ := snapshot.ExposedStatefulSet(context.Background(), "redpanda", "redpanda")
	cfg, _ := patches.ParseConfig(sts.Annotations, nil, patches.DefaultOptions())
	// As a user might write it: the webhook makes it a NodePort Service with the broker's ports.
	svc := patches.BrokerService(sts, cfg, 1)
	svc.Spec.Type = corev1.ServiceTypeClusterIP
	for i := range svc.Spec.Ports {
		svc.Spec.Ports[i].NodePort = 0
	}
	raw, err := yaml.Marshal(svc)
	if err != nil {
		b.Fatal(err)
	}
	raw, _ = yaml.YAMLToJSON(raw)
	diffVsDirect(b, h, benchRequest(admissionv1.Create, "redpanda", "redpanda-1-external", raw))
}

func BenchmarkBindingNotABroker(b *testing.B) {
	snapshot, clusters, _ := benchCluster(b)
	h := NewBindingHandler(clusters, snapshot.Reader, snapshot.Reader, snapshot, events.NewFakeRecorder(1), patches.DefaultOptions())
	raw := []byte(`{"kind":"Binding","apiVersion":"v1","metadata":{"name":"web-7d9f8c6b5-x2k4q","namespace":"redpanda"},"target":{"kind":"Node","name":"node-1"}}`)
	runHandler(b, h, benchRequest(admissionv1.Create, "redpanda", "web-7d9f8c6b5-x2k4q", raw), false)
}

func BenchmarkBindingBroker(b *testing.B) {
	snapshot, clusters, _ := benchCluster(b)
	h := NewBindingHandler(clusters, snapshot.Reader, snapshot.Reader, snapshot, events.NewFakeRecorder(1), patches.DefaultOptions())
	raw := []byte(`{"kind":"Binding","apiVersion":"v1","metadata":{"name":"redpanda-1","namespace":"redpanda"},"target":{"kind":"Node","name":"node-1"}}`)
	diffVsDirect(b, h, benchRequest(admissionv1.Create, "redpanda", "redpanda-1", raw))
}

// BenchmarkNoop is the floor: a handler that decodes nothing and allows.
func BenchmarkNoop(b *testing.B) {
	runHandler(b, admission.HandlerFunc(func(context.Context, admission.Request) admission.Response {
		return notABroker
	}), benchRequest(admissionv1.Create, "redpanda", "x", nil), false)
}

// BenchmarkStatefulSetOptInAmongK is another team's opt-in (a block assigned) with K opted-in
// StatefulSets of 16 listeners in the caches. Each version of theirs is parsed once (the first
// admission, or its informer event), so the cost per further StatefulSet is the cache's list
// and a look-up, not a parse: compare K=1 and K=100, and K=100 parsing every one each time, as
// before (issue 27: 4 StatefulSets of 21,402 listeners made such an opt-in take 1.9 s).
func BenchmarkStatefulSetOptInAmongK(b *testing.B) {
	opts := patches.DefaultOptions()
	opts.PortRange = patches.PortRange{First: 30000, Last: 32767}
	listeners := make([]string, patches.MaxListeners)
	for l := range listeners {
		listeners[l] = fmt.Sprintf("listener-%d=%d", l, 9000+l)
	}
	raw := []byte(`{"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":"kafka","namespace":"team-b","labels":{"brokerport.io/expose":"true"}},"spec":{"template":{"metadata":{"labels":{"a":"b"}}}}}`)
	for _, tc := range []struct {
		k       int
		noCache bool
	}{{k: 1}, {k: 100}, {k: 100, noCache: true}} {
		name := fmt.Sprintf("K=%d", tc.k)
		if tc.noCache {
			name += "/parsing-each"
		}
		b.Run(name, func(b *testing.B) {
			objs := make([]client.Object, 0, tc.k)
			for i := range tc.k {
				objs = append(objs, &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{
					Name: fmt.Sprintf("kafka-%d", i), Namespace: fmt.Sprintf("team-%d", i), UID: types.UID(fmt.Sprintf("uid-%d", i)), ResourceVersion: "7",
					Labels: map[string]string{patches.LabelExpose: patches.ExposeValue},
					Annotations: map[string]string{
						patches.AnnotationListeners:  strings.Join(listeners, ","),
						patches.AnnotationMaxBrokers: "1",
						patches.AnnotationPortBase:   strconv.Itoa(30000 + 16*i),
					}}})
			}
			cached, err := cachedreader.New(Scheme(), CacheOptions(), objs...)
			if err != nil {
				b.Fatal(err)
			}
			reader := &uncopiedLists{Reader: cached}
			if err := cached.List(context.Background(), &reader.sets); err != nil {
				b.Fatal(err)
			}
			h := NewStatefulSetHandler(ReaderSnapshot{Reader: reader, Options: opts}, opts)
			if tc.noCache {
				h.snapshot = ReaderSnapshot{Reader: reader, Options: opts}
				h.blocks = nil
			}
			req := benchRequest(admissionv1.Create, "team-b", "kafka", raw)
			runHandler(b, h, req, true)
		})
	}
}

// uncopiedLists lists StatefulSets as the informer cache does when asked for no copies
// (client.UnsafeDisableDeepCopy, as PortsInUse asks): the objects it keeps, the same ones on
// every list. cachedreader copies on every read.
type uncopiedLists struct {
	*cachedreader.Reader
	sets appsv1.StatefulSetList
}

func (r *uncopiedLists) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if sets, ok := list.(*appsv1.StatefulSetList); ok {
		if o := (&client.ListOptions{}).ApplyOptions(opts); o.UnsafeDisableDeepCopy != nil && *o.UnsafeDisableDeepCopy {
			sets.Items = append(sets.Items[:0], r.sets.Items...)
			return nil
		}
	}
	return r.Reader.List(ctx, list, opts...)
}
