package webhook

import (
	"encoding/json"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// decodable is each kind brokerport is sent: the kind, a new empty object of it.
var decodable = map[string]struct {
	gvk schema.GroupVersionKind
	new func() runtime.Object
}{
	"pods":         {podGVK, func() runtime.Object { return &corev1.Pod{} }},
	"statefulsets": {statefulSetGVK, func() runtime.Object { return &appsv1.StatefulSet{} }},
	"services":     {serviceGVK, func() runtime.Object { return &corev1.Service{} }},
	"bindings":     {bindingGVK, func() runtime.Object { return &corev1.Binding{} }},
	"scale":        {scaleGVK, func() runtime.Object { return &autoscalingv1.Scale{} }},
}

// codec is controller-runtime's admission decoder, as the handlers used it.
var codec = admission.NewDecoder(Scheme())

func viaCodec(raw []byte, into runtime.Object) error {
	return codec.DecodeRaw(runtime.RawExtension{Raw: raw}, into)
}

// assertDecodesAsTheCodec checks that decode and the codec agree on raw: the same object, or
// both refuse it. The codec reads YAML too; the API server sends JSON, and decode refuses the rest.
func assertDecodesAsTheCodec(t *testing.T, resource string, raw []byte) {
	t.Helper()
	kind := decodable[resource]
	want, got := kind.new(), kind.new()
	gotErr := decode(runtime.RawExtension{Raw: raw}, got, kind.gvk)
	if !json.Valid(raw) {
		assert.Error(t, gotErr, "%s is not JSON", raw)
		return
	}
	if kindInAnotherCase(raw) {
		t.Skip("the codec finds apiVersion and kind case-insensitively, then decodes case-sensitively; the API server writes them as named")
	}
	wantErr := viaCodec(raw, want)
	if wantErr != nil {
		assert.Error(t, gotErr, "the codec refuses %s: %v", raw, wantErr)
		return
	}
	require.NoError(t, gotErr, "%s", raw)
	assert.Equal(t, want, got)
}

func kindInAnotherCase(raw []byte) bool {
	var top map[string]json.RawMessage
	if json.Unmarshal(raw, &top) != nil {
		return false
	}
	for k := range top {
		if (k != "apiVersion" && strings.EqualFold(k, "apiVersion")) || (k != "kind" && strings.EqualFold(k, "kind")) {
			return true
		}
	}
	return false
}

func TestDecodeMatchesTheCodec(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*.in.yaml")
	require.NoError(t, err)
	require.NotEmpty(t, inputs)
	for _, input := range inputs {
		c := readCase(t, input)
		resource := c.Resource
		if c.SubResource == "scale" {
			resource = "scale"
		}
		t.Run(filepath.Base(input), func(t *testing.T) {
			assertDecodesAsTheCodec(t, resource, c.Object)
			if len(c.OldObject) > 0 {
				assertDecodesAsTheCodec(t, resource, c.OldObject)
			}
		})
	}
	t.Run("bench pod", func(t *testing.T) {
		assertDecodesAsTheCodec(t, "pods", benchInput(t, "testdata/bench/pod-redpanda.yaml"))
	})
	// What the API server never sends but a decoder must still read as apimachinery does.
	for name, raw := range map[string]string{
		"a name twice, the last wins":  `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","name":"b"}}`,
		"invalid UTF-8":                "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"a\xff\"}}",
		"no kind":                      `{"metadata":{"name":"a"}}`,
		"an unknown field":             `{"apiVersion":"v1","kind":"Pod","spec":{"newField":{"x":1},"containers":[{"name":"c"}]}}`,
		"quantities and int-or-string": `{"apiVersion":"v1","kind":"Pod","spec":{"containers":[{"name":"c","resources":{"limits":{"cpu":0.5,"memory":"1e3"}},"readinessProbe":{"tcpSocket":{"port":"kafka"}},"livenessProbe":{"tcpSocket":{"port":9092}}}]}}`,
		"nulls":                        `{"apiVersion":"v1","kind":"Pod","metadata":{"labels":null,"creationTimestamp":null},"spec":{"containers":null}}`,
		"a timestamp":                  `{"apiVersion":"v1","kind":"Pod","metadata":{"creationTimestamp":"2026-11-26T18:00:00Z","deletionTimestamp":"2026-11-26T18:00:01Z"}}`,
		"another kind":                 `{"apiVersion":"v1","kind":"Service","metadata":{"name":"a"}}`,
		"another version":              `{"apiVersion":"v2","kind":"Pod","metadata":{"name":"a"}}`,
		"a string for a number":        `{"apiVersion":"v1","kind":"Pod","spec":{"priority":"1"}}`,
		"not an object":                `[]`,
		"not JSON":                     `apiVersion: v1`,
	} {
		t.Run(name, func(t *testing.T) { assertDecodesAsTheCodec(t, "pods", []byte(raw)) })
	}
}

func TestDecodeNamesTheKinds(t *testing.T) {
	err := decode(runtime.RawExtension{Raw: []byte(`{"apiVersion":"v1","kind":"Service"}`)}, &corev1.Pod{}, podGVK)
	require.Error(t, err)
	assert.Equal(t, `the object is a "Service" of "v1", not a Pod of v1`, err.Error())
	err = decode(runtime.RawExtension{}, &corev1.Pod{}, podGVK)
	require.Error(t, err)
	assert.Equal(t, "there is no content to decode", err.Error())
}

// FuzzDecode checks decode against the codec on objects derived from real ones: whatever the
// codec reads, decode reads the same.
func FuzzDecode(f *testing.F) {
	inputs, err := filepath.Glob("testdata/*.in.yaml")
	if err != nil {
		f.Fatal(err)
	}
	resources := slices.Sorted(maps.Keys(decodable))
	for _, input := range inputs {
		c := readCase(f, input)
		for i, r := range resources {
			if r == c.Resource {
				f.Add(i, []byte(c.Object))
			}
		}
	}
	f.Fuzz(func(t *testing.T, which int, raw []byte) {
		if which < 0 {
			which = -which
		}
		assertDecodesAsTheCodec(t, resources[which%len(resources)], raw)
	})
}
