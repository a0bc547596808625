package webhook

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

func TestEncodePatchIsJSONMarshal(t *testing.T) {
	ops := []jsonpatch.Operation{
		{Operation: "add", Path: "/metadata/labels/brokerport.io~1cluster", Value: "kafka"},
		{Operation: "add", Path: "/metadata/annotations/a<b>&c", Value: "é \x01 <x>"},
		{Operation: "replace", Path: "/spec/containers/0/ports/1/hostPort", Value: json.Number("30001")},
		{Operation: "add", Path: "/spec/containers/0/env/0", Value: json.RawMessage(`{"name":"BROKERPORT_HOST","value":"203.0.113.2"}`)},
		{Operation: "add", Path: "/metadata/labels", Value: map[string]string{"z": "1", "a": "2"}},
		{Operation: "add", Path: "/metadata/annotations/x", Value: ""},
		{Operation: "remove", Path: "/spec/affinity"},
	}
	got, err := encodePatch(ops)
	require.NoError(t, err)
	want, err := json.Marshal(ops)
	require.NoError(t, err)
	assert.Equal(t, string(want), string(got))
}

func TestSendPatchMovesTheOperations(t *testing.T) {
	ops := []jsonpatch.Operation{{Operation: "add", Path: "/a", Value: "b"}}
	resp := sendPatch(admission.Patched("", ops...))
	assert.Empty(t, resp.Patches, "left for controller-runtime, they would be encoded again")
	assert.JSONEq(t, `[{"op":"add","path":"/a","value":"b"}]`, string(resp.Patch))
	require.NotNil(t, resp.PatchType)
	assert.Equal(t, admissionv1.PatchTypeJSONPatch, *resp.PatchType)

	allowed := sendPatch(admission.Allowed("nothing to change"))
	assert.Nil(t, allowed.Patch)
	assert.Nil(t, allowed.PatchType)
}
