package webhook

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/brokerport/brokerport/patches"
)

// FuzzServeHTTP sends arbitrary bodies to every handler through controller-runtime's HTTP
// plumbing, as the API server would: the server must never panic, and must always answer with
// an AdmissionReview or a client error.
func FuzzServeHTTP(f *testing.F) {
	f.Add(0, []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1","operation":"CREATE","namespace":"kafka","name":"kafka-0","object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"kafka-0","labels":{"brokerport.io/expose":"true","brokerport.io/cluster":"kafka"},"annotations":{"brokerport.io/port-base":"30000"}},"spec":{"containers":[{"name":"k"}]}}}}`))
	f.Add(1, []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1","operation":"CREATE","namespace":"kafka","name":"kafka","object":{"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":"kafka","labels":{"brokerport.io/expose":"true"}}}}}`))
	f.Add(2, []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1","operation":"CREATE","namespace":"kafka","name":"kafka-0-external","object":{"apiVersion":"v1","kind":"Service","metadata":{"labels":{"brokerport.io/expose":"true","brokerport.io/cluster":"kafka"}},"spec":{"selector":{"statefulset.kubernetes.io/pod-name":"kafka-0"},"ports":[{"name":"kafka","port":1}]}}}}`))
	f.Add(3, []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1","operation":"CREATE","namespace":"kafka","name":"kafka-0","object":{"apiVersion":"v1","kind":"Binding","metadata":{"name":"kafka-0"},"target":{"kind":"Node","name":"n"}}}}`))
	f.Add(0, []byte(`{"request":{"object":[]}}`))
	f.Add(3, []byte(`null`))

	scheme := Scheme()
	reader := fake.NewClientBuilder().WithScheme(scheme).Build()
	opts := patches.DefaultOptions()
	snapshot := ReaderSnapshot{Reader: reader, Options: opts}
	clusters := NewClusters()
	handlers := []http.Handler{}
	for _, h := range []admission.Handler{
		NewPodHandler(scheme, snapshot, opts),
		NewStatefulSetHandler(scheme, snapshot, opts),
		NewServiceHandler(scheme, snapshot, opts),
		NewBindingHandler(scheme, clusters, reader, reader, snapshot, events.NewFakeRecorder(100), opts),
	} {
		hh, err := admission.StandaloneWebhook(&admission.Webhook{Handler: h}, admission.StandaloneOptions{})
		if err != nil {
			f.Fatal(err)
		}
		handlers = append(handlers, hh)
	}
	f.Fuzz(func(t *testing.T, which int, body []byte) {
		if which < 0 {
			which = -which
		}
		h := handlers[which%len(handlers)]
		req := httptest.NewRequest(http.MethodPost, "/mutate", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("status %d: %s", rec.Code, rec.Body.String())
		}
		if rec.Code == http.StatusOK {
			var review admissionv1.AdmissionReview
			if err := json.Unmarshal(rec.Body.Bytes(), &review); err != nil || review.Response == nil {
				t.Fatalf("200 without an AdmissionReview: %q", rec.Body.String())
			}
		}
	})
}
