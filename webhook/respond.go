package webhook

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"

	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// patchResponse answers with the patch that turns the request's raw object into mutated, or
// allows it with the message unchanged when there is nothing to change.
//
// The patch is diffed from the raw request bytes, so that paths are valid against what the API
// server holds. Decoding into Go structs loses fields they do not know and adds zero values the
// request never had; diffing raw against the decoded original finds those operations, and they
// are dropped: brokerport changes only what it means to change, and unknown fields survive (as
// controller-runtime's defaulter does for removals).
func patchResponse(raw []byte, original, mutated any, unchanged string) admission.Response {
	originalJSON, err := json.Marshal(original)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("encoding the original object: %w", err))
	}
	mutatedJSON, err := json.Marshal(mutated)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("encoding the mutated object: %w", err))
	}
	if bytes.Equal(originalJSON, mutatedJSON) {
		return admission.Allowed(unchanged)
	}
	resp := admission.PatchResponseFromRaw(raw, mutatedJSON)
	if !resp.Allowed {
		return resp
	}
	roundTrip := admission.PatchResponseFromRaw(raw, originalJSON)
	if !roundTrip.Allowed {
		return roundTrip
	}
	fromDecoding := make(map[string]bool, len(roundTrip.Patches))
	for _, op := range roundTrip.Patches {
		fromDecoding[opKey(op)] = true
	}
	resp.Patches = slices.DeleteFunc(resp.Patches, func(op jsonpatch.JsonPatchOperation) bool { return fromDecoding[opKey(op)] })
	if len(resp.Patches) == 0 {
		return admission.Allowed(unchanged)
	}
	return resp
}

func opKey(op jsonpatch.JsonPatchOperation) string { return op.Json() }

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
