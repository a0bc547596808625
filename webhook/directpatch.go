package webhook

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"gomodules.xyz/jsonpatch/v2"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Direct patches: the JSON Patch operations for a pod or a StatefulSet, built by walking only the
// fields brokerport's mutations change (patches.MutatePod, StripPod, MutateStatefulSet), instead
// of encoding both objects and diffing the encodings. Where the diff allocates for every field of
// the object, this allocates for what changed.
//
// The operations have the shape gomodules.xyz/jsonpatch gives for the same change (a map or list
// that appears is added whole, a key or an index at a time otherwise, lists by index, values with
// their keys sorted), so the golden files keep their patches, with one exception by design: a
// container or volume that goes in ahead of others is inserted (RFC 6902 add at an index shifts
// what follows) and the others keep all their fields, including those our structs do not know,
// where the diff would rewrite each shifted element in place.
//
// The walk never replaces an object that the request may hold with fields our structs do not
// know: it adds a whole map, list, container or volume only where the encoding of the request
// has none, removes one only where the mutated object has none, and changes the rest a field at
// a time. Whatever it does not model makes it give up, and the caller falls back to the diff: a
// change outside the walked fields (checked with reflect.DeepEqual, so a mutation added to
// patches one day cannot be dropped silently), containers or volumes that changed places, a
// container's resources appearing (the encoding has resources: {} where the request may have
// nothing, so no path under it is safe).

// pointer is the JSON Pointer of a list element, made into a string only for an operation.
type pointer struct {
	list  string
	index int
}

// at is the pointer to field (a path, "" for the element itself) of the element.
func (p pointer) at(field string) string { return p.list + "/" + strconv.Itoa(p.index) + field }

// patchWriter collects operations; failed is set when the change is one the walk does not model.
type patchWriter struct {
	ops    []jsonpatch.Operation
	failed bool
	// values holds the encoded values of the operations, one after the other; encoded is where
	// each is encoded before its keys are sorted into values.
	values  []byte
	encoded bytes.Buffer
	encoder *json.Encoder
}

func newPatchWriter() *patchWriter {
	w := &patchWriter{ops: make([]jsonpatch.Operation, 0, 32), values: make([]byte, 0, 2048)}
	w.encoder = json.NewEncoder(&w.encoded)
	return w
}

// directPodPatch is the patch that turns original into mutated, or ok=false when the change is
// not one the walk models.
func directPodPatch(original, mutated *corev1.Pod) (ops []jsonpatch.Operation, ok bool) {
	if !podRestEqual(original, mutated) {
		return nil, false
	}
	w := newPatchWriter()
	w.stringMap("/metadata/labels", original.Labels, mutated.Labels)
	w.stringMap("/metadata/annotations", original.Annotations, mutated.Annotations)
	w.affinity(original.Spec.Affinity, mutated.Spec.Affinity)
	w.containers("/spec/containers", original.Spec.Containers, mutated.Spec.Containers)
	w.containers("/spec/initContainers", original.Spec.InitContainers, mutated.Spec.InitContainers)
	namedList(w, "/spec/volumes", original.Spec.Volumes, mutated.Spec.Volumes, func(v *corev1.Volume) string { return v.Name }, volume)
	return w.ops, !w.failed
}

// directStatefulSetPatch is directPodPatch for a StatefulSet. raw is the request's object: the
// encoding always has the template's metadata, which the request may lack.
func directStatefulSetPatch(raw []byte, original, mutated *appsv1.StatefulSet) (ops []jsonpatch.Operation, ok bool) {
	if !statefulSetRestEqual(original, mutated) {
		return nil, false
	}
	w := newPatchWriter()
	w.stringMap("/metadata/labels", original.Labels, mutated.Labels)
	w.stringMap("/metadata/annotations", original.Annotations, mutated.Annotations)
	before, after := &original.Spec.Template.ObjectMeta, &mutated.Spec.Template.ObjectMeta
	if mapsEqual(before.Labels, after.Labels) && mapsEqual(before.Annotations, after.Annotations) {
		return w.ops, !w.failed
	}
	if encodesEmpty(before) && !templateHasMetadata(raw) {
		w.addValue("/spec/template/metadata", after)
		return w.ops, !w.failed
	}
	w.stringMap("/spec/template/metadata/labels", before.Labels, after.Labels)
	w.stringMap("/spec/template/metadata/annotations", before.Annotations, after.Annotations)
	return w.ops, !w.failed
}

// directBindingPatch is directPodPatch for a Binding, of which brokerport changes only the
// annotations (patches.MutateBinding).
func directBindingPatch(original, mutated *corev1.Binding) (ops []jsonpatch.Operation, ok bool) {
	a, b := *original, *mutated
	a.Annotations, b.Annotations = nil, nil
	if !reflect.DeepEqual(&a, &b) {
		return nil, false
	}
	w := newPatchWriter()
	w.stringMap("/metadata/annotations", original.Annotations, mutated.Annotations)
	return w.ops, !w.failed
}

// directServicePatch is directPodPatch for a Service, of which brokerport sets the type, the
// external traffic policy and the ports' nodePorts (patches.MutateService). The paths assume the
// request has a spec, as every Service the API server sends does (it defaults it first).
func directServicePatch(original, mutated *corev1.Service) (ops []jsonpatch.Operation, ok bool) {
	if len(original.Spec.Ports) != len(mutated.Spec.Ports) {
		return nil, false
	}
	a, b := *original, *mutated
	a.Spec.Type, b.Spec.Type = "", ""
	a.Spec.ExternalTrafficPolicy, b.Spec.ExternalTrafficPolicy = "", ""
	a.Spec.Ports, b.Spec.Ports = nil, nil
	if !reflect.DeepEqual(&a, &b) {
		return nil, false
	}
	w := newPatchWriter()
	w.optionalString("/spec/type", string(original.Spec.Type), string(mutated.Spec.Type))
	w.optionalString("/spec/externalTrafficPolicy", string(original.Spec.ExternalTrafficPolicy), string(mutated.Spec.ExternalTrafficPolicy))
	for i := range original.Spec.Ports {
		x, y := original.Spec.Ports[i], mutated.Spec.Ports[i]
		x.NodePort = y.NodePort
		if !reflect.DeepEqual(x, y) {
			return nil, false
		}
		w.optionalNumber("/spec/ports/"+strconv.Itoa(i)+"/nodePort", original.Spec.Ports[i].NodePort, y.NodePort)
	}
	return w.ops, !w.failed
}

// podRestEqual tells whether original and mutated are the same outside the fields the walk
// covers. Containers are compared one by one in containers().
func podRestEqual(original, mutated *corev1.Pod) bool {
	a, b := *original, *mutated
	for _, p := range []*corev1.Pod{&a, &b} {
		p.Labels, p.Annotations = nil, nil
		p.Spec.Affinity, p.Spec.Containers, p.Spec.InitContainers, p.Spec.Volumes = nil, nil, nil, nil
	}
	return reflect.DeepEqual(&a, &b)
}

func statefulSetRestEqual(original, mutated *appsv1.StatefulSet) bool {
	a, b := *original, *mutated
	for _, s := range []*appsv1.StatefulSet{&a, &b} {
		s.Labels, s.Annotations = nil, nil
		s.Spec.Template.Labels, s.Spec.Template.Annotations = nil, nil
	}
	return reflect.DeepEqual(&a, &b)
}

// encodesEmpty tells whether meta encodes as {}: the request may have it as {}, null or not at all.
func encodesEmpty(meta *metav1.ObjectMeta) bool {
	m := *meta
	if len(m.Labels) > 0 || len(m.Annotations) > 0 {
		return false
	}
	m.Labels, m.Annotations = nil, nil
	return reflect.ValueOf(m).IsZero()
}

// templateHasMetadata tells whether the request's StatefulSet has spec.template.metadata (as an
// object, possibly with fields our structs do not know, which an add of the whole object would
// drop).
func templateHasMetadata(raw []byte) bool {
	var s struct {
		Spec struct {
			Template struct {
				Metadata json.RawMessage `json:"metadata"`
			} `json:"template"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return true // not ours to judge; the per-map operations fail loudly if it is missing
	}
	m := bytes.TrimSpace(s.Spec.Template.Metadata)
	return len(m) > 0 && !bytes.Equal(m, []byte("null"))
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// stringMap diffs labels or annotations, which the encoding omits when empty.
func (w *patchWriter) stringMap(path string, a, b map[string]string) {
	switch {
	case mapsEqual(a, b):
		return
	case len(a) == 0:
		// As the diff gives it (what callers reading an operation's value expect).
		m := make(map[string]any, len(b))
		for k, v := range b {
			m[k] = v
		}
		w.add(path, m)
		return
	case len(b) == 0:
		w.remove(path)
		return
	}
	var changed []string
	for k, v := range b {
		if old, ok := a[k]; !ok || old != v {
			changed = append(changed, k)
		}
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			changed = append(changed, k)
		}
	}
	slices.Sort(changed)
	for _, k := range changed {
		p := path + "/" + escapePointer(k)
		old, had := a[k]
		v, has := b[k]
		switch {
		case !has:
			w.remove(p)
		case !had:
			w.add(p, v)
		case old != v:
			w.replace(p, v)
		}
	}
}

// affinity follows patches.addAntiAffinity: it creates what is missing and appends a term.
func (w *patchWriter) affinity(a, b *corev1.Affinity) {
	switch {
	case reflect.DeepEqual(a, b):
	case b == nil:
		w.remove("/spec/affinity")
	case a == nil:
		w.addValue("/spec/affinity", b)
	case !reflect.DeepEqual(a.NodeAffinity, b.NodeAffinity) || !reflect.DeepEqual(a.PodAffinity, b.PodAffinity):
		w.failed = true
	case a.PodAntiAffinity == nil:
		w.addValue("/spec/affinity/podAntiAffinity", b.PodAntiAffinity)
	case b.PodAntiAffinity == nil || !reflect.DeepEqual(a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution, b.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution):
		w.failed = true
	default:
		indexedList(w, "/spec/affinity/podAntiAffinity/requiredDuringSchedulingIgnoredDuringExecution",
			a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution, b.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution,
			func(w *patchWriter, p pointer, x, y *corev1.PodAffinityTerm) {
				if !reflect.DeepEqual(x, y) {
					w.diffJSON(p.at(""), x, y)
				}
			})
	}
}

func (w *patchWriter) containers(path string, a, b []corev1.Container) {
	namedList(w, path, a, b, func(c *corev1.Container) string { return c.Name }, container)
}

// container diffs a container that is in both lists: by its env and ports, which is what
// brokerport changes in the pod's own containers; when anything else changed (a container of
// brokerport's, the gate's, given again with a new image or arguments), by the diff of the two.
func container(w *patchWriter, p pointer, a, b *corev1.Container) {
	x, y := *a, *b
	x.Env, x.Ports, y.Env, y.Ports = nil, nil, nil, nil
	if !reflect.DeepEqual(&x, &y) {
		if isEmptyResources(&a.Resources) && !isEmptyResources(&b.Resources) {
			// The encoding has resources: {} where the request may have nothing: a path under
			// it may not exist in the request.
			w.failed = true
			return
		}
		w.diffJSON(p.at(""), a, b)
		return
	}
	if !slices.Equal(a.Ports, b.Ports) {
		indexedList(w, p.at("/ports"), a.Ports, b.Ports, containerPort)
	}
	indexedList(w, p.at("/env"), a.Env, b.Env, envVar)
}

func isEmptyResources(r *corev1.ResourceRequirements) bool {
	return len(r.Limits) == 0 && len(r.Requests) == 0 && len(r.Claims) == 0
}

func envVar(w *patchWriter, p pointer, a, b *corev1.EnvVar) {
	if a.Name != b.Name {
		w.replace(p.at("/name"), b.Name)
	}
	w.optionalString(p.at("/value"), a.Value, b.Value)
	switch {
	case a.ValueFrom == nil && b.ValueFrom == nil:
	case a.ValueFrom == nil:
		w.addValue(p.at("/valueFrom"), b.ValueFrom)
	case b.ValueFrom == nil:
		w.remove(p.at("/valueFrom"))
	case onlyFieldRef(a.ValueFrom) && onlyFieldRef(b.ValueFrom):
		// The common case, brokerport's own variables among the pod's: field by field.
		x, y := a.ValueFrom.FieldRef, b.ValueFrom.FieldRef
		w.optionalString(p.at("/valueFrom/fieldRef/apiVersion"), x.APIVersion, y.APIVersion)
		if x.FieldPath != y.FieldPath {
			w.replace(p.at("/valueFrom/fieldRef/fieldPath"), y.FieldPath)
		}
	case !reflect.DeepEqual(a.ValueFrom, b.ValueFrom):
		w.diffJSON(p.at("/valueFrom"), a.ValueFrom, b.ValueFrom)
	}
}

// onlyFieldRef tells whether a variable's source is a fieldRef and nothing else.
func onlyFieldRef(s *corev1.EnvVarSource) bool {
	rest := *s
	rest.FieldRef = nil
	return s.FieldRef != nil && rest == corev1.EnvVarSource{}
}

// containerPort: brokerport sets the hostPort of a port the container declares.
func containerPort(w *patchWriter, p pointer, a, b *corev1.ContainerPort) {
	if *a == *b {
		return
	}
	if x := *a; func() bool { x.HostPort = b.HostPort; return x == *b }() {
		w.optionalNumber(p.at("/hostPort"), a.HostPort, b.HostPort)
		return
	}
	w.diffJSON(p.at(""), a, b)
}

func volume(w *patchWriter, p pointer, a, b *corev1.Volume) {
	if !reflect.DeepEqual(a, b) {
		w.diffJSON(p.at(""), a, b)
	}
}

// optionalString diffs a string the encoding omits when empty.
func (w *patchWriter) optionalString(path, a, b string) {
	switch {
	case a == b:
	case a == "":
		w.add(path, b)
	case b == "":
		w.remove(path)
	default:
		w.replace(path, b)
	}
}

// optionalNumber diffs a number the encoding omits when 0.
func (w *patchWriter) optionalNumber(path string, a, b int32) {
	switch {
	case a == b:
	case a == 0:
		w.add(path, number(b))
	case b == 0:
		w.remove(path)
	default:
		w.replace(path, number(b))
	}
}

// wholeList handles a list that is empty on one side or both, as the diff does: added or removed
// whole (the encoding omits an empty list). It tells whether there is nothing left to diff.
func wholeList[T any](w *patchWriter, path string, a, b []T) bool {
	switch {
	case len(a) == 0 && len(b) == 0:
	case len(a) == 0:
		w.addValue(path, b)
	case len(b) == 0:
		w.remove(path)
	default:
		return false
	}
	return true
}

// indexedList diffs a list the encoding omits when empty, index by index, as the diff does.
func indexedList[T any](w *patchWriter, path string, a, b []T, elem func(w *patchWriter, p pointer, x, y *T)) {
	if wholeList(w, path, a, b) {
		return
	}
	n := min(len(a), len(b))
	for i := len(a) - 1; i >= n; i-- {
		w.remove(pointer{path, i}.at(""))
	}
	for i := n; i < len(b); i++ {
		w.addValue(pointer{path, i}.at(""), &b[i])
	}
	for i := range n {
		elem(w, pointer{path, i}, &a[i], &b[i])
	}
}

// namedList diffs a list whose elements have unique names (containers, volumes): the elements
// only in a are removed, those only in b inserted where they go, and those in both diffed with
// elem. Elements in both must keep their order, or the walk gives up.
func namedList[T any](w *patchWriter, path string, a, b []T, name func(*T) string, elem func(w *patchWriter, p pointer, x, y *T)) {
	if wholeList(w, path, a, b) {
		return
	}
	// The index in a of each element of b, -1 when it is new. Lists are short: a linear search
	// allocates nothing.
	inA := make([]int, len(b))
	kept, last := 0, -1
	for j := range b {
		inA[j] = -1
		for i := range a {
			if name(&a[i]) == name(&b[j]) {
				inA[j] = i
				break
			}
		}
		if inA[j] >= 0 {
			if inA[j] <= last {
				w.failed = true // moved, or a name twice
				return
			}
			last = inA[j]
			kept++
		}
	}
	if kept == len(a) && kept == len(b) {
		for j := range b {
			elem(w, pointer{path, j}, &a[j], &b[j])
		}
		return
	}
	for i := len(a) - 1; i >= 0; i-- {
		if !slices.Contains(inA, i) {
			w.remove(pointer{path, i}.at(""))
		}
	}
	// Inserting in ascending order of b's indices puts each element at its place in b.
	for j := range b {
		if inA[j] < 0 {
			w.addValue(pointer{path, j}.at(""), &b[j])
		}
	}
	for j := range b {
		if inA[j] >= 0 {
			elem(w, pointer{path, j}, &a[inA[j]], &b[j])
		}
	}
}

// number is an integer as the diff gives it.
func number(n int32) json.Number { return json.Number(strconv.Itoa(int(n))) }

func (w *patchWriter) add(path string, value any) {
	w.ops = append(w.ops, jsonpatch.NewOperation("add", path, value))
}

func (w *patchWriter) replace(path string, value any) {
	w.ops = append(w.ops, jsonpatch.NewOperation("replace", path, value))
}

func (w *patchWriter) remove(path string) {
	w.ops = append(w.ops, jsonpatch.NewOperation("remove", path, nil))
}

// addValue adds an object or a list, encoded with every object's keys sorted as the diff writes
// them. The value is a json.RawMessage, where the diff gives maps and slices: read it by its
// encoding. (Strings, numbers and whole label or annotation maps are of the diff's types.)
func (w *patchWriter) addValue(path string, value any) {
	start := len(w.values)
	if env, ok := appendEnv(w.values, value); ok {
		w.values = env
	} else {
		w.encoded.Reset()
		if err := w.encoder.Encode(value); err != nil {
			w.failed = true
			return
		}
		w.values, _ = appendSorted(w.values, w.encoded.Bytes())
	}
	w.add(path, json.RawMessage(w.values[start:len(w.values):len(w.values)]))
}

// appendEnv appends the encoding of the environment variables brokerport adds (a value, or a
// fieldRef and nothing else), as encoding/json and appendSorted would write them, without
// reflection: most of what the pod patch adds, and most of its cost when encoded generically.
// ok is false for any other value (TestAppendEnvIsTheEncoding holds the two equal).
func appendEnv(dst []byte, value any) (out []byte, ok bool) {
	switch v := value.(type) {
	case *corev1.EnvVar:
		return appendEnvVar(dst, v)
	case []corev1.EnvVar:
		out = append(dst, '[')
		for i := range v {
			if i > 0 {
				out = append(out, ',')
			}
			if out, ok = appendEnvVar(out, &v[i]); !ok {
				return dst, false
			}
		}
		return append(out, ']'), true
	}
	return dst, false
}

func appendEnvVar(dst []byte, e *corev1.EnvVar) ([]byte, bool) {
	if e.ValueFrom != nil && !onlyFieldRef(e.ValueFrom) {
		return dst, false
	}
	dst = append(dst, `{"name":`...)
	dst = appendJSONString(dst, e.Name)
	if e.Value != "" {
		dst = append(dst, `,"value":`...)
		dst = appendJSONString(dst, e.Value)
	}
	if e.ValueFrom != nil {
		ref := e.ValueFrom.FieldRef
		dst = append(dst, `,"valueFrom":{"fieldRef":{`...)
		if ref.APIVersion != "" {
			dst = append(dst, `"apiVersion":`...)
			dst = appendJSONString(dst, ref.APIVersion)
			dst = append(dst, ',')
		}
		dst = append(dst, `"fieldPath":`...)
		dst = appendJSONString(dst, ref.FieldPath)
		dst = append(dst, "}}"...)
	}
	return append(dst, '}'), true
}

// diffJSON is the diff of one small part that changed beyond what the walk models field by field.
func (w *patchWriter) diffJSON(path string, a, b any) {
	aJSON, errA := json.Marshal(a)
	bJSON, errB := json.Marshal(b)
	if errA != nil || errB != nil {
		w.failed = true
		return
	}
	ops, err := jsonpatch.CreatePatch(aJSON, bJSON)
	if err != nil {
		w.failed = true
		return
	}
	for _, op := range ops {
		op.Path = path + op.Path
		w.ops = append(w.ops, op)
	}
}

var pointerEscaper = strings.NewReplacer("~", "~0", "/", "~1")

// escapePointer escapes a key for a JSON Pointer (RFC 6901): ~ as ~0, / as ~1.
func escapePointer(key string) string {
	if !strings.ContainsAny(key, "~/") {
		return key
	}
	return pointerEscaper.Replace(key)
}

// appendSorted appends the JSON value at the start of src, compact as encoding/json writes it,
// to dst with every object's keys in sorted order, as encoding/json writes a map (it writes a
// struct's fields in declaration order), and returns what follows the value in src.
func appendSorted(dst, src []byte) ([]byte, []byte) {
	switch src[0] {
	case '{':
		type member struct{ key, value []byte }
		var stack [16]member
		members := stack[:0]
		rest := src[1:]
		for rest[0] != '}' {
			if rest[0] == ',' {
				rest = rest[1:]
			}
			k := stringEnd(rest)
			key := rest[:k]
			rest = rest[k+1:] // the colon
			v := valueEnd(rest)
			members = append(members, member{key, rest[:v]})
			rest = rest[v:]
		}
		slices.SortFunc(members, func(x, y member) int { return compareKeys(x.key, y.key) })
		dst = append(dst, '{')
		for i, m := range members {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, m.key...)
			dst = append(dst, ':')
			dst, _ = appendSorted(dst, m.value)
		}
		return append(dst, '}'), rest[1:]
	case '[':
		dst = append(dst, '[')
		rest := src[1:]
		for rest[0] != ']' {
			if rest[0] == ',' {
				dst = append(dst, ',')
				rest = rest[1:]
			}
			dst, rest = appendSorted(dst, rest)
		}
		return append(dst, ']'), rest[1:]
	default:
		n := valueEnd(src)
		return append(dst, src[:n]...), src[n:]
	}
}

// compareKeys orders two quoted keys as encoding/json orders a map's: by the keys themselves,
// which are the bytes between the quotes unless they hold an escape (the keys of Kubernetes
// objects never do).
func compareKeys(x, y []byte) int {
	if bytes.IndexByte(x, '\\') < 0 && bytes.IndexByte(y, '\\') < 0 {
		return bytes.Compare(x[1:len(x)-1], y[1:len(y)-1])
	}
	var xs, ys string
	_ = json.Unmarshal(x, &xs)
	_ = json.Unmarshal(y, &ys)
	return strings.Compare(xs, ys)
}

// stringEnd is the length of the JSON string at the start of src, quotes included.
func stringEnd(src []byte) int {
	for i := 1; i < len(src); i++ {
		switch src[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(src)
}

// valueEnd is the length of the JSON value at the start of compact src.
func valueEnd(src []byte) int {
	switch src[0] {
	case '"':
		return stringEnd(src)
	case '{', '[':
		depth := 0
		for i := 0; i < len(src); i++ {
			switch src[i] {
			case '"':
				i += stringEnd(src[i:]) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
		return len(src)
	default:
		for i := range src {
			if src[i] == ',' || src[i] == '}' || src[i] == ']' {
				return i
			}
		}
		return len(src)
	}
}
