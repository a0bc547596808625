package webhook

import (
	"context"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// admissions counts every answer by resource and result, beside controller-runtime's own
// request latency histograms (controller_runtime_webhook_latency_seconds).
var admissions = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "brokerport_admissions_total",
	Help: "Admission requests answered, by resource and result (patched, unchanged, denied, bad_request, error).",
}, []string{"resource", "result"})

func init() { metrics.Registry.MustRegister(admissions) }

// counted wraps a handler so that each answer is counted, and its patch sent encoded once
// (sendPatch).
type counted struct {
	resource string
	admission.Handler
}

func (c counted) Handle(ctx context.Context, req admission.Request) admission.Response {
	resp := c.Handler.Handle(ctx, req)
	admissions.WithLabelValues(c.resource, resultOf(resp)).Inc()
	return sendPatch(resp)
}

func resultOf(resp admission.Response) string {
	switch {
	case resp.Allowed && len(resp.Patches) > 0:
		return "patched"
	case resp.Allowed:
		return "unchanged"
	case resp.Result != nil && resp.Result.Code >= http.StatusInternalServerError:
		return "error"
	case resp.Result != nil && resp.Result.Code == http.StatusBadRequest:
		return "bad_request"
	}
	return "denied"
}
