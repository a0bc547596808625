package webhook

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	jsonpatchapply "github.com/evanphx/json-patch/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gomodules.xyz/jsonpatch/v2"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/brokerport/brokerport/patches"
)

// directCall is one direct patch the handlers built, with what it was built from.
type directCall struct {
	raw               []byte
	original, mutated any
	ops               []jsonpatch.Operation
	ok                bool
}

// observe records the direct patches built while f runs.
func observe(t *testing.T, f func()) []directCall {
	t.Helper()
	var calls []directCall
	observeDirect = func(raw []byte, original, mutated any, ops []jsonpatch.Operation, ok bool) {
		calls = append(calls, directCall{raw, original, mutated, ops, ok})
	}
	defer func() { observeDirect = nil }()
	f()
	return calls
}

// applyOps applies ops to doc as the API server does.
func applyOps(t *testing.T, doc []byte, ops []jsonpatch.Operation) []byte {
	t.Helper()
	patchJSON, err := json.Marshal(ops)
	require.NoError(t, err)
	patch, err := jsonpatchapply.DecodePatch(patchJSON)
	require.NoError(t, err)
	out, err := patch.Apply(doc)
	require.NoError(t, err, "the patch does not apply to the request: %s", patchJSON)
	return out
}

// decodedAs decodes a patched document as the type of like and encodes it again: what the API
// server stores, as our structs see it.
func decodedAs(t *testing.T, doc []byte, like any) string {
	t.Helper()
	var obj any
	switch like.(type) {
	case *corev1.Pod:
		obj = &corev1.Pod{}
	case *appsv1.StatefulSet:
		obj = &appsv1.StatefulSet{}
	case *corev1.Binding:
		obj = &corev1.Binding{}
	case *corev1.Service:
		obj = &corev1.Service{}
	default:
		t.Fatalf("unexpected %T", like)
	}
	require.NoError(t, json.Unmarshal(doc, obj))
	out, err := json.Marshal(obj)
	require.NoError(t, err)
	return string(out)
}

func encoded(t *testing.T, obj any) string {
	t.Helper()
	out, err := json.Marshal(obj)
	require.NoError(t, err)
	return string(out)
}

// TestDirectPatchGolden applies every direct patch the golden cases produce to the request as
// sent and compares the result with the mutated object; it also checks that the walk covered
// every case (no fallback to the diff) and that the diff, applied the same way, gives the same
// object.
func TestDirectPatchGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*.in.yaml")
	require.NoError(t, err)
	covered := 0
	for _, input := range inputs {
		name := strings.TrimSuffix(filepath.Base(input), ".in.yaml")
		c := readCase(t, input)
		if !slices.Contains([]string{"pods", "statefulsets", "bindings", "services"}, c.Resource) {
			continue
		}
		t.Run(name, func(t *testing.T) {
			handler, _ := c.handler(t)
			calls := observe(t, func() { handler.Handle(context.Background(), c.request(c.Object)) })
			for _, call := range calls {
				covered++
				require.True(t, call.ok, "the walk gave up on %s: extend it, or the mutation changed a field it does not know", name)
				want := encoded(t, call.mutated)
				out := applyOps(t, call.raw, call.ops)
				assert.Equal(t, want, decodedAs(t, out, call.mutated), "direct patch applied to the request (-mutated +got)")

				var diffed []jsonpatch.Operation
				switch original := call.original.(type) {
				case *corev1.Pod:
					diffed = podDiffResponse(call.raw, original, call.mutated.(*corev1.Pod), "").Patches
				case *appsv1.StatefulSet:
					diffed = patchResponseFromRaw(call.raw, original, call.mutated.(*appsv1.StatefulSet), "").Patches
				case *corev1.Binding:
					diffed = patchResponse(original, call.mutated.(*corev1.Binding), "").Patches
				case *corev1.Service:
					diffed = patchResponse(original, call.mutated.(*corev1.Service), "").Patches
				}
				assert.Equal(t, want, decodedAs(t, applyOps(t, call.raw, diffed), call.mutated), "diffed patch applied to the request")
			}
		})
	}
	assert.NotZero(t, covered)
}

// TestDirectPatchKeepsUnknownFields: fields our structs do not know survive wherever they are,
// including in an init container the gate goes in ahead of (the diff rewrote each shifted
// container in place, leaving such a field on the one that took its index).
func TestDirectPatchKeepsUnknownFields(t *testing.T) {
	raw := []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"kafka-1","labels":{"brokerport.io/expose":"true","brokerport.io/cluster":"kafka"},"annotations":{"brokerport.io/port-base":"30000"},"futureMeta":1},
"spec":{"futureSpec":{"keep":"me"},"affinity":{"futureAffinity":true},
"initContainers":[{"name":"configurator","image":"busybox","futureInit":"configurator's"}],
"containers":[{"name":"kafka","image":"apache/kafka","ports":[{"containerPort":9094,"futurePort":"p"}],"env":[{"name":"A","value":"a","futureEnv":"e"}],"futureContainer":"c"}],
"volumes":[{"name":"config","emptyDir":{},"futureVolume":"v"}]}}`)
	pod := &corev1.Pod{}
	require.NoError(t, json.Unmarshal(raw, pod))
	mutated := pod.DeepCopy()
	opts := patches.DefaultOptions()
	opts.GateImage = "ghcr.io/brokerport/brokerport:v0.1.0"
	require.Empty(t, patches.MutatePod(mutated, nil, opts))

	ops, ok := directPodPatch(pod, mutated)
	require.True(t, ok)
	var out map[string]any
	require.NoError(t, json.Unmarshal(applyOps(t, raw, ops), &out))
	get := func(path ...any) any {
		var v any = out
		for _, p := range path {
			switch p := p.(type) {
			case string:
				v = v.(map[string]any)[p]
			case int:
				v = v.([]any)[p]
			}
		}
		return v
	}
	assert.EqualValues(t, 1, get("metadata", "futureMeta"))
	assert.Equal(t, map[string]any{"keep": "me"}, get("spec", "futureSpec"))
	assert.Equal(t, true, get("spec", "affinity", "futureAffinity"))
	assert.Equal(t, patches.GateContainer, get("spec", "initContainers", 0, "name"))
	assert.Nil(t, get("spec", "initContainers", 0, "futureInit"), "the gate took the configurator's field")
	assert.Equal(t, "configurator", get("spec", "initContainers", 1, "name"))
	assert.Equal(t, "configurator's", get("spec", "initContainers", 1, "futureInit"))
	assert.Equal(t, "c", get("spec", "containers", 0, "futureContainer"))
	assert.Equal(t, "p", get("spec", "containers", 0, "ports", 0, "futurePort"))
	assert.Equal(t, "v", get("spec", "volumes", 0, "futureVolume"))
}

// TestDirectPatchTemplateMetadata: a StatefulSet whose template has no metadata gets it whole;
// one whose template metadata holds only fields our structs do not know keeps them.
func TestDirectPatchTemplateMetadata(t *testing.T) {
	for name, template := range map[string]string{
		"absent":  `{}`,
		"null":    `{"metadata":null}`,
		"empty":   `{"metadata":{}}`,
		"unknown": `{"metadata":{"futureMeta":"keep"}}`,
	} {
		t.Run(name, func(t *testing.T) {
			raw := []byte(`{"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":"k","labels":{"brokerport.io/expose":"true"}},"spec":{"template":` + template + `}}`)
			sts := &appsv1.StatefulSet{}
			require.NoError(t, json.Unmarshal(raw, sts))
			mutated := sts.DeepCopy()
			require.Empty(t, patches.MutateStatefulSet(mutated, patches.PortSet{}, patches.DefaultOptions()))
			ops, ok := directStatefulSetPatch(raw, sts, mutated)
			require.True(t, ok)
			out := applyOps(t, raw, ops)
			assert.Equal(t, encoded(t, mutated), decodedAs(t, out, mutated))
			if name == "unknown" {
				assert.Contains(t, string(out), `"futureMeta":"keep"`)
			}
		})
	}
}

// TestDirectPatchEscapesKeys: label and annotation keys go into JSON Pointers with ~ as ~0 and
// / as ~1 (RFC 6901), and the patch removes exactly brokerport's keys.
func TestDirectPatchEscapesKeys(t *testing.T) {
	raw := []byte(`{"metadata":{"name":"k-0","labels":{"brokerport.io/expose":"true","brokerport.io/cluster":"k","a~b/c":"1","~1":"2"},"annotations":{"x/~0y":"3","brokerport.io/port-base":"30000"}}}`)
	pod := &corev1.Pod{}
	require.NoError(t, json.Unmarshal(raw, pod))
	mutated := pod.DeepCopy()
	patches.StripPod(mutated)
	mutated.Annotations["new/~key"] = "4"
	ops, ok := directPodPatch(pod, mutated)
	require.True(t, ok)
	paths := make([]string, len(ops))
	for i, op := range ops {
		paths[i] = op.Operation + " " + op.Path
	}
	assert.ElementsMatch(t, []string{
		"remove /metadata/labels/brokerport.io~1cluster",
		"remove /metadata/labels/brokerport.io~1expose",
		"remove /metadata/annotations/brokerport.io~1port-base",
		"add /metadata/annotations/new~1~0key",
	}, paths)
	out := applyOps(t, raw, ops)
	assert.Equal(t, encoded(t, mutated), decodedAs(t, out, mutated))
}

// TestDirectPatchGivesUp: a change outside the fields the walk covers is not lost: the walk
// gives up and the response falls back to the diff.
func TestDirectPatchGivesUp(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "k-0"}, Spec: corev1.PodSpec{Affinity: &corev1.Affinity{}, Containers: []corev1.Container{{Name: "a", Image: "x"}, {Name: "b"}}}}
	for name, mutate := range map[string]func(*corev1.Pod){
		"spec field":     func(p *corev1.Pod) { p.Spec.HostNetwork = true },
		"metadata field": func(p *corev1.Pod) { p.GenerateName = "k-" },
		"containers moved": func(p *corev1.Pod) {
			p.Spec.Containers[0], p.Spec.Containers[1] = p.Spec.Containers[1], p.Spec.Containers[0]
		},
		"resources appear":  func(p *corev1.Pod) { p.Spec.Containers[0].Resources = patches.GateResources("1m", "1Mi") },
		"node affinity set": func(p *corev1.Pod) { p.Spec.Affinity.NodeAffinity = &corev1.NodeAffinity{} },
	} {
		t.Run(name, func(t *testing.T) {
			original := pod.DeepCopy()
			mutated := original.DeepCopy()
			mutate(mutated)
			_, ok := directPodPatch(original, mutated)
			assert.False(t, ok)
			resp := podPatchResponse([]byte(encoded(t, original)), original, mutated, "")
			require.True(t, resp.Allowed)
			assert.Equal(t, encoded(t, mutated), decodedAs(t, applyOps(t, []byte(encoded(t, original)), resp.Patches), mutated))
		})
	}
}

func sortKeys(src []byte) []byte {
	out, _ := appendSorted(nil, src)
	return out
}

func TestSortKeys(t *testing.T) {
	for in, want := range map[string]string{
		`{"name":"a","image":"b","env":[{"value":"v","name":"n"}],"z":{},"a":[]}`: `{"a":[],"env":[{"name":"n","value":"v"}],"image":"b","name":"a","z":{}}`,
		`{"b":"}{\"","a":"\\"}`:           `{"a":"\\","b":"}{\""}`,
		`[1,"x",null,true,{"b":1,"a":2}]`: `[1,"x",null,true,{"a":2,"b":1}]`,
		`{"b\u003c":1,"b":2}`:             `{"b":2,"b\u003c":1}`,
		`"s"`:                             `"s"`,
	} {
		assert.Equal(t, want, string(sortKeys([]byte(in))), in)
	}
	// As the diff writes a value: decoded into maps and encoded again.
	c := corev1.Container{Name: "gate", Image: "i", Ports: []corev1.ContainerPort{{Name: "p", ContainerPort: 1, HostPort: 2, Protocol: "TCP"}}, Resources: patches.GateResources("10m", "32Mi")}
	raw, err := json.Marshal(c)
	require.NoError(t, err)
	var generic any
	require.NoError(t, json.Unmarshal(raw, &generic))
	want, err := json.Marshal(generic)
	require.NoError(t, err)
	assert.Equal(t, string(want), string(sortKeys(raw)))
}

func TestEscapePointer(t *testing.T) {
	for key, want := range map[string]string{"plain": "plain", "a/b": "a~1b", "a~b": "a~0b", "~/": "~0~1", "~1": "~01"} {
		assert.Equal(t, want, escapePointer(key))
	}
}

func TestAppendEnvIsTheEncoding(t *testing.T) {
	fieldRef := func(apiVersion, path string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: apiVersion, FieldPath: path}}
	}
	vars := []corev1.EnvVar{
		{Name: "BROKERPORT_HOST", Value: "203.0.113.2"},
		{Name: "BROKERPORT_KAFKA_ADDRESS", Value: "[2001:db8::10]:30000"},
		{Name: "EMPTY"},
		{Name: "POD", ValueFrom: fieldRef("v1", "metadata.annotations['brokerport.io/host']")},
		{Name: "NODE", ValueFrom: fieldRef("", "spec.nodeName")},
		{Name: "ODD", Value: "<a&b> \"q\" \\ é \x01\u2028"},
	}
	generic := func(v any) string {
		encoded, err := json.Marshal(v)
		require.NoError(t, err)
		sorted, _ := appendSorted(nil, encoded)
		return string(sorted)
	}
	for i := range vars {
		got, ok := appendEnv(nil, &vars[i])
		require.True(t, ok, vars[i].Name)
		assert.Equal(t, generic(&vars[i]), string(got))
	}
	got, ok := appendEnv([]byte("kept"), vars)
	require.True(t, ok)
	assert.Equal(t, "kept"+generic(vars), string(got))

	secret := []corev1.EnvVar{vars[0], {Name: "S", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{Key: "k"}}}}
	got, ok = appendEnv([]byte("kept"), secret)
	assert.False(t, ok, "only values and fieldRefs")
	assert.Equal(t, "kept", string(got))
	_, ok = appendEnv(nil, &corev1.Container{})
	assert.False(t, ok)
}

// TestDirectServicePatch: the type, the traffic policy and the nodePorts brokerport sets, as the
// diff would give them, with fields our structs do not know kept; any other change falls back to
// the diff.
func TestDirectServicePatch(t *testing.T) {
	raw := []byte(`{"apiVersion":"v1","kind":"Service","metadata":{"name":"k-1-external"},"spec":{"type":"ClusterIP","futureSpec":"keep",` +
		`"ports":[{"name":"kafka","port":9094,"nodePort":30004,"futurePort":"p"},{"name":"http","port":8082}]}}`)
	svc := &corev1.Service{}
	require.NoError(t, json.Unmarshal(raw, svc))
	mutated := svc.DeepCopy()
	mutated.Spec.Type = corev1.ServiceTypeNodePort
	mutated.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	mutated.Spec.Ports[1].NodePort = 30005

	ops, ok := directServicePatch(svc, mutated)
	require.True(t, ok)
	got := make([]string, len(ops))
	for i, op := range ops {
		got[i] = op.Json()
	}
	assert.Equal(t, []string{
		`{"op":"replace","path":"/spec/type","value":"NodePort"}`,
		`{"op":"add","path":"/spec/externalTrafficPolicy","value":"Local"}`,
		`{"op":"add","path":"/spec/ports/1/nodePort","value":30005}`,
	}, got)
	out := applyOps(t, raw, ops)
	assert.Equal(t, encoded(t, mutated), decodedAs(t, out, mutated))
	assert.Contains(t, string(out), `"futureSpec":"keep"`)
	assert.Contains(t, string(out), `"futurePort":"p"`)

	renamed := mutated.DeepCopy()
	renamed.Spec.Ports[0].Name = "other"
	_, ok = directServicePatch(svc, renamed)
	assert.False(t, ok, "a change to a port other than its nodePort")
	labeled := mutated.DeepCopy()
	labeled.Labels = map[string]string{"a": "b"}
	_, ok = directServicePatch(svc, labeled)
	assert.False(t, ok, "a change outside the spec fields brokerport sets")
}

// TestDirectBindingPatch: the annotations brokerport adds to a Binding, escaped; any other
// change falls back to the diff.
func TestDirectBindingPatch(t *testing.T) {
	binding := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: "k-0", Annotations: map[string]string{"theirs": "x"}},
		Target: corev1.ObjectReference{Kind: "Node", Name: "n1"}}
	mutated := binding.DeepCopy()
	mutated.Annotations[patches.AnnotationHost] = "203.0.113.2"
	ops, ok := directBindingPatch(binding, mutated)
	require.True(t, ok)
	require.Len(t, ops, 1)
	assert.Equal(t, `{"op":"add","path":"/metadata/annotations/brokerport.io~1host","value":"203.0.113.2"}`, ops[0].Json())

	retargeted := mutated.DeepCopy()
	retargeted.Target.Name = "n2"
	_, ok = directBindingPatch(binding, retargeted)
	assert.False(t, ok, "a change outside the annotations")
}
