package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"

	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// patchResponse answers with the patch that turns the request's object into mutated, or
// allows it with the message unchanged when there is nothing to change.
//
// The patch is the diff between the decoded original and the mutated object, both encoded from
// the same Go structs: it holds exactly what brokerport changed. Fields the structs do not know
// (a newer API server's) are in neither side, so no operation touches them and they survive;
// zero values the structs always encode (creationTimestamp: null, resources: {}) are in both, so
// no operation adds them either. The paths are valid against the request as long as brokerport
// adds only to maps, lists and optional fields, which the encoding omits when the request has
// none, and lists keep their order. Where a mutation breaks that (it adds under a struct the
// request may lack, or shifts a list), the handler uses patchResponseFromRaw instead; the golden
// tests apply every patch to the request as sent.
func patchResponse(original, mutated any, unchanged string) admission.Response {
	originalJSON, mutatedJSON, resp := encodeBoth(original, mutated, unchanged)
	if resp != nil {
		return *resp
	}
	return admission.PatchResponseFromRaw(originalJSON, mutatedJSON)
}

// patchResponseFromRaw is patchResponse for a mutation that may add under a struct the encoding
// always has but the request may lack (a StatefulSet's spec.template.metadata; a pod's init
// container whose place the gate takes, with its resources: {}). It diffs the raw request, and
// drops the operations that decoding alone causes (diffing the raw request against the decoded
// original finds them), as controller-runtime's defaulter drops removals. Twice the cost.
func patchResponseFromRaw(raw []byte, original, mutated any, unchanged string) admission.Response {
	originalJSON, mutatedJSON, resp := encodeBoth(original, mutated, unchanged)
	if resp != nil {
		return *resp
	}
	patched := admission.PatchResponseFromRaw(raw, mutatedJSON)
	decoding := admission.PatchResponseFromRaw(raw, originalJSON)
	if !patched.Allowed || !decoding.Allowed {
		return admission.Errored(http.StatusInternalServerError, errors.New("diffing the request"))
	}
	fromDecoding := make(map[string]bool, len(decoding.Patches))
	for _, op := range decoding.Patches {
		fromDecoding[op.Json()] = true
	}
	patched.Patches = slices.DeleteFunc(patched.Patches, func(op jsonpatch.JsonPatchOperation) bool { return fromDecoding[op.Json()] })
	if len(patched.Patches) == 0 {
		return admission.Allowed(unchanged)
	}
	return patched
}

// patchByDiff makes the pod and StatefulSet responses diff their encodings as they used to, for
// the benchmarks and tests that compare the two ways. Never set outside tests.
var patchByDiff = false

// observeDirect, set only by tests, sees every direct patch with what it was built from.
var observeDirect func(raw []byte, original, mutated any, ops []jsonpatch.JsonPatchOperation, ok bool)

// podPatchResponse answers with the patch that turns the request's pod into mutated, built from
// what changed (directPodPatch); when the change is one that walk does not model, from the diff
// of the raw request.
func podPatchResponse(raw []byte, original, mutated *corev1.Pod, unchanged string) admission.Response {
	if patchByDiff {
		return podDiffResponse(raw, original, mutated, unchanged)
	}
	ops, ok := directPodPatch(original, mutated)
	if observeDirect != nil {
		observeDirect(raw, original, mutated, ops, ok)
	}
	if !ok {
		return patchResponseFromRaw(raw, original, mutated, unchanged)
	}
	return opsResponse(ops, unchanged)
}

// podDiffResponse is how the pod handler answered before direct patches: the diff of the
// encodings, from the raw request when the gate shifted the pod's init containers.
func podDiffResponse(raw []byte, original, mutated *corev1.Pod, unchanged string) admission.Response {
	if len(original.Spec.InitContainers) > 0 && len(mutated.Spec.InitContainers) != len(original.Spec.InitContainers) {
		return patchResponseFromRaw(raw, original, mutated, unchanged)
	}
	return patchResponse(original, mutated, unchanged)
}

// statefulSetPatchResponse is podPatchResponse for a StatefulSet.
func statefulSetPatchResponse(raw []byte, original, mutated *appsv1.StatefulSet, unchanged string) admission.Response {
	if patchByDiff {
		return patchResponseFromRaw(raw, original, mutated, unchanged)
	}
	ops, ok := directStatefulSetPatch(raw, original, mutated)
	if observeDirect != nil {
		observeDirect(raw, original, mutated, ops, ok)
	}
	if !ok {
		return patchResponseFromRaw(raw, original, mutated, unchanged)
	}
	return opsResponse(ops, unchanged)
}

// directOrDiffResponse is podPatchResponse for the Binding and the Service, whose mutations
// touch only fields the encoding of the request has: the fallback diffs the encodings.
func directOrDiffResponse[T any](raw []byte, original, mutated *T, direct func(original, mutated *T) ([]jsonpatch.Operation, bool), unchanged string) admission.Response {
	if patchByDiff {
		return patchResponse(original, mutated, unchanged)
	}
	ops, ok := direct(original, mutated)
	if observeDirect != nil {
		observeDirect(raw, original, mutated, ops, ok)
	}
	if !ok {
		return patchResponse(original, mutated, unchanged)
	}
	return opsResponse(ops, unchanged)
}

// opsResponse is the response PatchResponseFromRaw gives for ops.
func opsResponse(ops []jsonpatch.JsonPatchOperation, unchanged string) admission.Response {
	if len(ops) == 0 {
		return admission.Allowed(unchanged)
	}
	pt := admissionv1.PatchTypeJSONPatch
	return admission.Response{Patches: ops, AdmissionResponse: admissionv1.AdmissionResponse{Allowed: true, PatchType: &pt}}
}

// encodeBoth encodes both objects; resp is set when there is nothing more to do.
func encodeBoth(original, mutated any, unchanged string) (originalJSON, mutatedJSON []byte, resp *admission.Response) {
	originalJSON, err := json.Marshal(original)
	if err != nil {
		r := admission.Errored(http.StatusInternalServerError, fmt.Errorf("encoding the original object: %w", err))
		return nil, nil, &r
	}
	mutatedJSON, err = json.Marshal(mutated)
	if err != nil {
		r := admission.Errored(http.StatusInternalServerError, fmt.Errorf("encoding the mutated object: %w", err))
		return nil, nil, &r
	}
	if bytes.Equal(originalJSON, mutatedJSON) {
		r := admission.Allowed(unchanged)
		return nil, nil, &r
	}
	return originalJSON, mutatedJSON, nil
}

// denied refuses the request as the API server refuses an invalid object: naming the object and
// every field at fault.
func denied(kind schema.GroupKind, name string, errs field.ErrorList) admission.Response {
	status := apierrors.NewInvalid(kind, name, errs).Status()
	return admission.Response{AdmissionResponse: admissionv1.AdmissionResponse{Allowed: false, Result: &status}}
}

// objectName is the name to report: on create, the request may carry it only in the object.
func objectName(req admission.Request, name string) string {
	if name != "" {
		return name
	}
	return req.Name
}

// sendPatch encodes resp's operations into the JSON Patch the API server reads, as
// controller-runtime would (its Response.Complete marshals resp.Patches when there are any,
// so they are moved into resp.Patch). The bytes are json.Marshal's; what it saves is
// encoding/json re-reading each value the patchWriter already encoded (json.RawMessage is
// validated and compacted again): for the Redpanda pod's patch, about a seventh of the time
// (BenchmarkEncodePatch).
func sendPatch(resp admission.Response) admission.Response {
	if len(resp.Patches) == 0 {
		return resp
	}
	patch, err := encodePatch(resp.Patches)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("encoding the patch: %w", err))
	}
	patchType := admissionv1.PatchTypeJSONPatch
	resp.Patch, resp.PatchType, resp.Patches = patch, &patchType, nil
	return resp
}

// encodePatch is json.Marshal(ops), byte for byte (TestGolden holds it so), with the values the
// patchWriter encoded (json.RawMessage, valid and compact) copied as they are.
func encodePatch(ops []jsonpatch.Operation) ([]byte, error) {
	size := 2
	for _, op := range ops {
		size += len(op.Path) + 40
		if raw, ok := op.Value.(json.RawMessage); ok {
			size += len(raw)
		}
	}
	out := make([]byte, 0, size)
	out = append(out, '[')
	for i, op := range ops {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, `{"op":`...)
		out = appendJSONString(out, op.Operation)
		out = append(out, `,"path":`...)
		out = appendJSONString(out, op.Path)
		if op.Value != nil {
			out = append(out, `,"value":`...)
			raw, ok := op.Value.(json.RawMessage)
			if !ok {
				var err error
				if raw, err = json.Marshal(op.Value); err != nil {
					return nil, err
				}
			}
			out = append(out, raw...)
		}
		out = append(out, '}')
	}
	return append(out, ']'), nil
}

// appendJSONString appends s quoted as encoding/json quotes it: plain printable ASCII as it
// is (the paths and op names brokerport writes), anything else through json.Marshal.
func appendJSONString(out []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			quoted, _ := json.Marshal(s) // a string always encodes
			return append(out, quoted...)
		}
	}
	out = append(out, '"')
	out = append(out, s...)
	return append(out, '"')
}
