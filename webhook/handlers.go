package webhook

import (
	"context"
	"fmt"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/brokerport/brokerport/patches"
)

var (
	statefulSetKind = appsv1.SchemeGroupVersion.WithKind("StatefulSet").GroupKind()
	podKind         = corev1.SchemeGroupVersion.WithKind("Pod").GroupKind()
	serviceKind     = corev1.SchemeGroupVersion.WithKind("Service").GroupKind()
)

// StatefulSetHandler validates a StatefulSet's opt-in, assigns its port block and copies the
// opt-in into its pod template; on opt-out it takes all of that out of the template again.
type StatefulSetHandler struct {
	decoder  admission.Decoder
	snapshot Snapshot
	opts     patches.Options
}

func NewStatefulSetHandler(scheme *runtime.Scheme, snapshot Snapshot, opts patches.Options) *StatefulSetHandler {
	return &StatefulSetHandler{decoder: admission.NewDecoder(scheme), snapshot: snapshot, opts: opts}
}

func (h *StatefulSetHandler) Handle(ctx context.Context, req admission.Request) admission.Response {
	if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update {
		return admission.Allowed("brokerport mutates StatefulSets on create and update only")
	}
	sts := &appsv1.StatefulSet{}
	if err := h.decoder.Decode(req, sts); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decoding StatefulSet: %w", err))
	}
	// An object that is not opted in is still mutated: if it was opted in before, the removal
	// takes the opt-in out of its template; if it never was, nothing changes and no patch is sent.
	var inUse patches.PortSet
	if patches.IsExposed(sts.Labels) {
		if sts.Name == "" {
			return denied(statefulSetKind, req.Name, field.ErrorList{field.Required(field.NewPath("metadata", "name"), "brokerport names broker pods and Services after the StatefulSet, so it needs a fixed name, not generateName")})
		}
		var err error
		if inUse, err = h.snapshot.PortsInUse(ctx, req.Namespace, sts.Name); err != nil {
			return admission.Errored(http.StatusInternalServerError, err)
		}
	}
	mutated := sts.DeepCopy()
	if errs := patches.MutateStatefulSet(mutated, inUse, h.opts); len(errs) > 0 {
		return denied(statefulSetKind, objectName(req, sts.Name), errs)
	}
	unchanged := "already as brokerport wants it"
	if !patches.IsExposed(sts.Labels) {
		unchanged = "not opted in"
	}
	return patchResponse(req.Object.Raw, sts, mutated, unchanged)
}

// PodHandler exposes a broker pod on create: hostPorts, one broker per node, brokerport's
// environment, and the address annotations when the pod is created already bound to a node.
type PodHandler struct {
	decoder  admission.Decoder
	snapshot Snapshot
	opts     patches.Options
}

func NewPodHandler(scheme *runtime.Scheme, snapshot Snapshot, opts patches.Options) *PodHandler {
	return &PodHandler{decoder: admission.NewDecoder(scheme), snapshot: snapshot, opts: opts}
}

func (h *PodHandler) Handle(ctx context.Context, req admission.Request) admission.Response {
	if req.Operation != admissionv1.Create {
		return admission.Allowed("brokerport mutates pods on create only")
	}
	pod := &corev1.Pod{}
	if err := h.decoder.Decode(req, pod); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decoding Pod: %w", err))
	}
	if !patches.IsExposed(pod.Labels) {
		return admission.Allowed("not a brokerport broker")
	}
	var node *corev1.Node
	if pod.Spec.NodeName != "" {
		var err error
		if node, err = h.snapshot.Node(ctx, pod.Spec.NodeName); err != nil {
			return admission.Errored(http.StatusInternalServerError, err)
		}
	}
	mutated := pod.DeepCopy()
	if errs := patches.MutatePod(mutated, node, h.opts); len(errs) > 0 {
		return denied(podKind, objectName(req, pod.Name), errs)
	}
	return patchResponse(req.Object.Raw, pod, mutated, "already as brokerport wants it")
}

// ServiceHandler makes an opted-in Service a NodePort Service on its broker's external ports.
type ServiceHandler struct {
	decoder  admission.Decoder
	snapshot Snapshot
	opts     patches.Options
}

func NewServiceHandler(scheme *runtime.Scheme, snapshot Snapshot, opts patches.Options) *ServiceHandler {
	return &ServiceHandler{decoder: admission.NewDecoder(scheme), snapshot: snapshot, opts: opts}
}

func (h *ServiceHandler) Handle(ctx context.Context, req admission.Request) admission.Response {
	if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update {
		return admission.Allowed("brokerport mutates Services on create and update only")
	}
	svc := &corev1.Service{}
	if err := h.decoder.Decode(req, svc); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decoding Service: %w", err))
	}
	cluster, _, exposed, ferr := patches.ServiceBroker(svc)
	if !exposed {
		return admission.Allowed("not a brokerport Service")
	}
	if ferr != nil {
		return denied(serviceKind, objectName(req, svc.Name), field.ErrorList{ferr})
	}
	sts, err := h.snapshot.ExposedStatefulSet(ctx, req.Namespace, cluster)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	if sts == nil {
		if req.Operation == admissionv1.Update {
			// The StatefulSet opted out; the controller removes its Services.
			return admission.Allowed(fmt.Sprintf("StatefulSet %s/%s is no longer opted in", req.Namespace, cluster))
		}
		return denied(serviceKind, objectName(req, svc.Name), field.ErrorList{field.Invalid(field.NewPath("metadata", "labels").Key(patches.LabelCluster), cluster,
			fmt.Sprintf("no StatefulSet %q labeled %s=%s in namespace %q", cluster, patches.LabelExpose, patches.ExposeValue, req.Namespace))})
	}
	mutated := svc.DeepCopy()
	if errs := patches.MutateService(mutated, sts, h.opts); len(errs) > 0 {
		return denied(serviceKind, objectName(req, svc.Name), errs)
	}
	return patchResponse(req.Object.Raw, svc, mutated, "already as brokerport wants it")
}
