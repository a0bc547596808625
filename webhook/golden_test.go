package webhook

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	jsonpatchapply "github.com/evanphx/json-patch/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	"sigs.k8s.io/yaml"

	"github.com/brokerport/brokerport/patches"
)

var update = flag.Bool("update", false, "rewrite the golden files from the current output (review the diff)")

// goldenCase is one testdata/<case>.in.yaml: an admission request and the cluster around it.
type goldenCase struct {
	Resource    string            `json:"resource"` // statefulsets, pods, services, bindings or scale
	SubResource string            `json:"subResource,omitempty"`
	Operation   string            `json:"operation"`
	Namespace   string            `json:"namespace"`
	Object      json.RawMessage   `json:"object"`
	OldObject   json.RawMessage   `json:"oldObject,omitempty"`
	Cluster     []json.RawMessage `json:"cluster,omitempty"` // Nodes, StatefulSets, Services and Pods the caches hold
	// APIOnly are objects the API server has but the caches have not seen yet (a pod created
	// milliseconds before its binding).
	APIOnly   []json.RawMessage `json:"apiOnly,omitempty"`
	GateImage string            `json:"gateImage,omitempty"`
	PortRange string            `json:"portRange,omitempty"`
}

// goldenResponse is what a .patch.golden.json holds: the answer, with the patch sorted by path
// (CreatePatch's order is not stable).
type goldenResponse struct {
	Allowed bool                  `json:"allowed"`
	Code    int32                 `json:"code,omitempty"`
	Message string                `json:"message,omitempty"`
	Patch   []jsonpatch.Operation `json:"patch,omitempty"`
	Events  []string              `json:"events,omitempty"` // Events the handler recorded
	// Warnings are what kubectl prints to whoever made the request.
	Warnings []string `json:"warnings,omitempty"`
}

func TestGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*.in.yaml")
	require.NoError(t, err)
	require.NotEmpty(t, inputs)
	cases := map[string]bool{}
	for _, input := range inputs {
		name := strings.TrimSuffix(filepath.Base(input), ".in.yaml")
		cases[name] = true
		t.Run(name, func(t *testing.T) { runGoldenCase(t, name) })
	}

	goldens, err := filepath.Glob("testdata/*.golden.*")
	require.NoError(t, err)
	for _, g := range goldens {
		name, _, _ := strings.Cut(filepath.Base(g), ".")
		assert.True(t, cases[name], "%s is stale: there is no testdata/%s.in.yaml", g, name)
	}
}

func runGoldenCase(t *testing.T, name string) {
	c := readCase(t, filepath.Join("testdata", name+".in.yaml"))
	handler, recorder := c.handler(t)
	req := c.request(c.Object)

	resp := handler.Handle(context.Background(), req)
	got := goldenResponse{Allowed: resp.Allowed, Patch: sortedByPath(resp.Patches), Events: drain(recorder), Warnings: resp.Warnings}
	if resp.Result != nil {
		got.Code, got.Message = resp.Result.Code, resp.Result.Message
	}
	gotJSON, err := json.MarshalIndent(got, "", "  ")
	require.NoError(t, err)
	compareGolden(t, filepath.Join("testdata", name+".patch.golden.json"), append(gotJSON, '\n'))

	outPath := filepath.Join("testdata", name+".out.golden.yaml")
	if len(resp.Patches) == 0 {
		if *update {
			_ = os.Remove(outPath)
		}
		assert.NoFileExists(t, outPath, "the case sends no patch, so it has no output object")
		return
	}

	// Apply the patch exactly as sent, as the API server would: encodePatch's bytes, which are
	// json.Marshal's.
	patchJSON, err := encodePatch(resp.Patches)
	require.NoError(t, err)
	marshaled, err := json.Marshal(resp.Patches)
	require.NoError(t, err)
	assert.Equal(t, string(marshaled), string(patchJSON), "encodePatch differs from json.Marshal")
	patch, err := jsonpatchapply.DecodePatch(patchJSON)
	require.NoError(t, err)
	out, err := patch.Apply(c.Object)
	require.NoError(t, err, "the patch does not apply to the request object")
	outYAML, err := yaml.JSONToYAML(out)
	require.NoError(t, err)
	compareGolden(t, outPath, outYAML)

	// Reinvocation: the webhook applied to its own output changes nothing.
	again := handler.Handle(context.Background(), c.request(out))
	drain(recorder)
	assert.True(t, again.Allowed, "second pass refused: %v", again.Result)
	assert.Empty(t, again.Patches, "second pass is not a no-op")
}

func readCase(t testing.TB, path string) goldenCase {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var c goldenCase
	require.NoError(t, yaml.UnmarshalStrict(data, &c), "reading %s", path)
	require.NotEmpty(t, c.Object, "%s has no object", path)
	return c
}

func (c goldenCase) handler(t *testing.T) (admission.Handler, *events.FakeRecorder) {
	t.Helper()
	opts := patches.DefaultOptions()
	opts.GateImage = c.GateImage
	if c.PortRange != "" {
		r, err := patches.ParsePortRange(c.PortRange)
		require.NoError(t, err)
		opts.PortRange = r
	}
	scheme := Scheme()
	cached := decodeObjects(t, scheme, c.Cluster)
	cache := fake.NewClientBuilder().WithScheme(scheme).WithObjects(cached...).Build()
	api := fake.NewClientBuilder().WithScheme(scheme).WithObjects(append(cached, decodeObjects(t, scheme, c.APIOnly)...)...).Build()
	snapshot := ReaderSnapshot{Reader: cache, Live: api, Options: opts}
	recorder := events.NewFakeRecorder(10)
	switch c.Resource {
	case "statefulsets":
		h := NewStatefulSetHandler(snapshot, opts)
		h.Events = recorder
		return h, recorder
	case "pods":
		return NewPodHandler(snapshot, opts), recorder
	case "services":
		return NewServiceHandler(snapshot, opts), recorder
	case "scale":
		return NewScaleHandler(snapshot, opts), recorder
	case "bindings":
		clusters := NewClusters()
		for _, obj := range cached {
			clusters.record(obj, true)
		}
		return NewBindingHandler(clusters, cache, api, snapshot, recorder, opts), recorder
	}
	t.Fatalf("unknown resource %q", c.Resource)
	return nil, nil
}

func decodeObjects(t *testing.T, scheme *runtime.Scheme, raws []json.RawMessage) []client.Object {
	t.Helper()
	var objects []client.Object
	for _, raw := range raws {
		u := &metav1.PartialObjectMetadata{}
		require.NoError(t, json.Unmarshal(raw, u))
		typed, err := scheme.New(u.GroupVersionKind())
		require.NoError(t, err, "cluster object of kind %s", u.Kind)
		require.NoError(t, json.Unmarshal(raw, typed))
		objects = append(objects, typed.(client.Object))
	}
	return objects
}

func drain(recorder *events.FakeRecorder) []string {
	var out []string
	for {
		select {
		case e := <-recorder.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func (c goldenCase) request(object []byte) admission.Request {
	var meta metav1.PartialObjectMetadata
	_ = json.Unmarshal(object, &meta)
	req := admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID:         types.UID("golden"),
		Kind:        metav1.GroupVersionKind(meta.GroupVersionKind()),
		Operation:   admissionv1.Operation(c.Operation),
		SubResource: c.SubResource,
		Namespace:   c.Namespace,
		Name:        meta.Name,
		Object:      runtime.RawExtension{Raw: object},
	}}
	if c.OldObject != nil {
		req.OldObject = runtime.RawExtension{Raw: c.OldObject}
	}
	return req
}

func sortedByPath(ops []jsonpatch.Operation) []jsonpatch.Operation {
	sorted := append([]jsonpatch.Operation(nil), ops...)
	sort.Stable(jsonpatch.ByPath(sorted))
	return sorted
}

func compareGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		require.NoError(t, os.WriteFile(path, got, 0o644))
		return
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "no golden file: run `make golden` and review the diff")
	assert.Equal(t, string(want), string(got), "%s differs (-want +got); if the change is intended, run `make golden` and review the diff", path)
}
