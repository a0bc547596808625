package webhook

import (
	"encoding/json"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	sigsjson "sigs.k8s.io/json"

	"github.com/brokerport/brokerport/patches"
)

// BenchmarkPodPatch is the patch alone, diffed and direct, for the bench pod with the gate.
func BenchmarkPodPatch(b *testing.B) {
	raw, pod, mutated := benchGatedPod(b)
	b.Run("diff", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			podDiffResponse(raw, pod, mutated, "")
		}
	})
	b.Run("direct", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := directPodPatch(pod, mutated); !ok {
				b.Fatal("fell back")
			}
		}
	})
	b.Run("direct-rest-check", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			podRestEqual(pod, mutated)
		}
	})
}

// BenchmarkEncodePatch is the pod's patch as sent: json.Marshal of the operations, as
// controller-runtime's Response.Complete does, against encodePatch (sendPatch).
func BenchmarkEncodePatch(b *testing.B) {
	_, pod, mutated := benchGatedPod(b)
	ops, ok := directPodPatch(pod, mutated)
	if !ok {
		b.Fatal("fell back")
	}
	b.Run("json.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(ops); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encodePatch", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := encodePatch(ops); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkDecodePod is the pod handler's decoding: controller-runtime's decoder (the scheme's
// codec, which first decodes the whole request with encoding/json to read apiVersion and kind),
// the JSON library under it alone, and decode (encoding/json/v2's implementation, one pass),
// which the handlers use.
func BenchmarkDecodePod(b *testing.B) {
	raw := benchInput(b, "testdata/bench/pod-redpanda.yaml")
	req := benchRequest(admissionv1.Create, "redpanda", "redpanda-1", raw)
	decoder := admission.NewDecoder(Scheme())
	b.Run("codec", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := decoder.Decode(req, &corev1.Pod{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sigs.k8s.io/json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := sigsjson.UnmarshalCaseSensitivePreserveInts(raw, &corev1.Pod{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := decode(req.Object, &corev1.Pod{}, podGVK); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// benchGatedPod is the bench pod as sent, decoded, and mutated as the pod handler does with the
// gate (the manifests set --gate-image).
func benchGatedPod(b *testing.B) (raw []byte, pod, mutated *corev1.Pod) {
	b.Helper()
	raw = benchInput(b, "testdata/bench/pod-redpanda.yaml")
	pod = &corev1.Pod{}
	if err := decode(runtime.RawExtension{Raw: raw}, pod, podGVK); err != nil {
		b.Fatal(err)
	}
	opts := patches.DefaultOptions()
	opts.GateImage = "ghcr.io/brokerport/brokerport:v0.1.0"
	mutated = pod.DeepCopy()
	if errs := patches.MutatePod(mutated, nil, opts); len(errs) > 0 {
		b.Fatal(errs)
	}
	return raw, pod, mutated
}
