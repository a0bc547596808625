package webhook

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/brokerport/brokerport/patches"
)

// The kinds brokerport is sent, in the versions its webhooks' rules ask for.
var (
	statefulSetGVK = appsv1.SchemeGroupVersion.WithKind("StatefulSet")
	podGVK         = corev1.SchemeGroupVersion.WithKind("Pod")
	serviceGVK     = corev1.SchemeGroupVersion.WithKind("Service")
	scaleGVK       = autoscalingv1.SchemeGroupVersion.WithKind("Scale")
	bindingGVK     = corev1.SchemeGroupVersion.WithKind("Binding")

	statefulSetKind = statefulSetGVK.GroupKind()
	podKind         = podGVK.GroupKind()
	serviceKind     = serviceGVK.GroupKind()
	scaleKind       = scaleGVK.GroupKind()
)

// handler is what every object handler holds: the cluster snapshot and brokerport's options.
type handler struct {
	snapshot Snapshot
	opts     patches.Options
}

func newHandler(snapshot Snapshot, opts patches.Options) handler {
	return handler{snapshot: snapshot, opts: opts}
}

// StatefulSetHandler validates a StatefulSet's opt-in, assigns its port block and copies the
// opt-in into its pod template; on opt-out it takes all of that out of the template again.
type StatefulSetHandler struct {
	handler
	// assigning serialises block assignment, and recent holds the blocks this process assigned
	// to requests until the cache shows them stored (or it is seen that they were not), so that
	// StatefulSets labeled at the same moment never get the same block.
	assigning sync.Mutex
	recent    recentBlocks
	// blocks caches the block each opted-in StatefulSet holds, by version.
	blocks *BlockCache
	// Events, when set, records a Warning when no port block is free.
	Events events.EventRecorder
}

// NewStatefulSetHandler serves snapshot's StatefulSets. A ReaderSnapshot without a BlockCache is
// given one, so that admissions parse each version of an opted-in StatefulSet once.
func NewStatefulSetHandler(snapshot Snapshot, opts patches.Options) *StatefulSetHandler {
	blocks := NewBlockCache()
	if s, ok := snapshot.(ReaderSnapshot); ok {
		if s.Blocks == nil {
			s.Blocks = blocks
			snapshot = s
		}
		blocks = s.Blocks
	}
	return &StatefulSetHandler{handler: newHandler(snapshot, opts), blocks: blocks, recent: recentBlocks{grace: holdGrace, now: time.Now}}
}

func (h *StatefulSetHandler) Handle(ctx context.Context, req admission.Request) admission.Response {
	if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update {
		return admission.Allowed("brokerport mutates StatefulSets on create and update only")
	}
	sts := &appsv1.StatefulSet{}
	if err := decode(req.Object, sts, statefulSetGVK); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decoding StatefulSet: %w", err))
	}
	// An object that is not opted in is still mutated: if it was opted in before, the removal
	// takes the opt-in out of its template; if it never was, nothing changes and no patch is sent.
	var inUse patches.PortSet
	key := types.NamespacedName{Namespace: req.Namespace, Name: sts.Name}
	if patches.IsExposed(sts.Labels) {
		if sts.Name == "" {
			return denied(statefulSetKind, req.Name, field.ErrorList{field.Required(field.NewPath("metadata", "name"), "brokerport names broker pods and Services after the StatefulSet, so it needs a fixed name, not generateName")})
		}
		ns, err := h.snapshot.Namespace(ctx, req.Namespace)
		if err != nil {
			return admission.Errored(http.StatusInternalServerError, err)
		}
		if ns != nil {
			if err := patches.CheckPodSecurity(req.Namespace, ns.Labels, ns.Annotations); err != nil {
				return denied(statefulSetKind, objectName(req, sts.Name), field.ErrorList{err})
			}
		}
		h.assigning.Lock()
		defer h.assigning.Unlock()
		if inUse, err = h.snapshot.PortsInUse(ctx, req.Namespace, sts.Name); err != nil {
			return admission.Errored(http.StatusInternalServerError, err)
		}
		inUse = inUse.With(h.recent.others(ctx, key, h.cachedBlock, h.storedBlock)...)
	}
	mutated := sts.DeepCopy()
	if errs := patches.MutateStatefulSet(mutated, inUse, h.opts); len(errs) > 0 {
		h.reportExhausted(req, sts, errs)
		return denied(statefulSetKind, objectName(req, sts.Name), errs)
	}
	if base := mutated.Annotations[patches.AnnotationPortBase]; base != sts.Annotations[patches.AnnotationPortBase] && (req.DryRun == nil || !*req.DryRun) {
		if n := h.recent.pendingBy(key, req.UserInfo.Username); n >= maxPendingHoldsPerUser {
			return denied(statefulSetKind, objectName(req, sts.Name), field.ErrorList{field.Forbidden(field.NewPath("metadata", "annotations").Key(patches.AnnotationPortBase), fmt.Sprintf(
				"brokerport holds %d port blocks for your StatefulSet requests the API server has not been seen to store yet, at most %d per requester; they settle within %s: retry then", n, maxPendingHoldsPerUser, holdGrace))})
		}
		if n := h.recent.pending(key); n >= maxPendingHolds {
			return denied(statefulSetKind, objectName(req, sts.Name), field.ErrorList{field.Forbidden(field.NewPath("metadata", "annotations").Key(patches.AnnotationPortBase), fmt.Sprintf(
				"brokerport holds %d port blocks for StatefulSet requests the API server has not been seen to store yet, at most %d; they settle within %s: retry then", n, maxPendingHolds, holdGrace))})
		}
		cfg, _ := patches.ParseConfig(mutated.Annotations, nil, h.opts)
		h.recent.add(key, cfg.Block(), req.UserInfo.Username)
	}
	unchanged := "already as brokerport wants it"
	if !patches.IsExposed(sts.Labels) {
		unchanged = "not opted in"
	}
	resp := statefulSetPatchResponse(req.Object.Raw, sts, mutated, unchanged)
	// Exposed but advertising nothing of brokerport's: admitted, and kubectl prints why clients
	// will not reach the brokers, with the fix for the image.
	if cfg, errs := patches.ParseConfig(mutated.Annotations, nil, h.opts); resp.Allowed && len(errs) == 0 {
		if advice := patches.AdviseStatefulSet(mutated, cfg, h.opts); advice != "" {
			resp.Warnings = append(resp.Warnings, advice)
			h.report(req, sts, "NotAdvertised", advice)
		}
	}
	return resp
}

// reportExhausted says on the StatefulSet, where `kubectl describe` shows it, that no port block
// was free: the denial reaches only whoever applied the change, which may be a GitOps tool. Not
// on a dry run (the webhook entry declares sideEffects: NoneOnDryRun).
func (h *StatefulSetHandler) reportExhausted(req admission.Request, sts *appsv1.StatefulSet, errs field.ErrorList) {
	for _, err := range errs {
		if err.Origin == patches.OriginPortRangeExhausted {
			h.report(req, sts, "PortRangeExhausted", err.Detail)
		}
	}
}

// report records a Warning Event on the StatefulSet, not on a dry run.
func (h *StatefulSetHandler) report(req admission.Request, sts *appsv1.StatefulSet, reason, message string) {
	if h.Events == nil || (req.DryRun != nil && *req.DryRun) {
		return
	}
	regarding := sts.DeepCopy()
	regarding.Namespace = req.Namespace
	h.Events.Eventf(regarding, nil, corev1.EventTypeWarning, reason, "Expose", "%s", message)
}

// PodHandler exposes a broker pod on create: hostPorts, one broker per node, brokerport's
// environment, and the address annotations when the pod is created already bound to a node.
type PodHandler struct{ handler }

func NewPodHandler(snapshot Snapshot, opts patches.Options) *PodHandler {
	return &PodHandler{newHandler(snapshot, opts)}
}

func (h *PodHandler) Handle(ctx context.Context, req admission.Request) admission.Response {
	if req.Operation != admissionv1.Create {
		return admission.Allowed("brokerport mutates pods on create only")
	}
	pod := &corev1.Pod{}
	if err := decode(req.Object, pod, podGVK); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decoding Pod: %w", err))
	}
	if !patches.IsExposed(pod.Labels) {
		return admission.Allowed("not a brokerport broker")
	}
	switch owner, err := h.owner(ctx, req.Namespace, pod); {
	case err != nil:
		return admission.Errored(http.StatusInternalServerError, err)
	case owner == ownerNone:
		cluster := pod.Labels[patches.LabelCluster]
		return denied(podKind, objectName(req, pod.Name), field.ErrorList{field.Forbidden(field.NewPath("metadata", "labels").Key(patches.LabelExpose),
			fmt.Sprintf("brokerport exposes only the pods of an opted-in StatefulSet, and this pod is not controlled by StatefulSet %q of namespace %q labeled %s=%s: label the StatefulSet, not the pod", cluster, req.Namespace, patches.LabelExpose, patches.ExposeValue))})
	case owner == ownerOptedOut:
		// Created from a revision of its StatefulSet's template made before the opt-out (the
		// StatefulSet controller recreates a deleted pod at its current revision): it starts
		// without brokerport rather than wait for an address no one will give it.
		mutated := pod.DeepCopy()
		patches.StripPod(mutated)
		resp := podPatchResponse(req.Object.Raw, pod, mutated, "")
		resp.Warnings = append(resp.Warnings, fmt.Sprintf("StatefulSet %s/%s is no longer opted in: brokerport left pod %s out", req.Namespace, pod.Labels[patches.LabelCluster], pod.Name))
		return resp
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
	return podPatchResponse(req.Object.Raw, pod, mutated, "already as brokerport wants it")
}

type podOwner int

const (
	ownerNone     podOwner = iota // no StatefulSet of that name controls the pod
	ownerOptedIn                  // its StatefulSet is opted in
	ownerOptedOut                 // its StatefulSet exists and is not opted in (any more)
)

// owner checks that a labeled pod is controlled by the StatefulSet its cluster label names: the
// pod's configuration annotations come from that StatefulSet's template, and nowhere else. The
// cache answers for opted-in StatefulSets; the API server only for one the cache does not show
// (just opted in, or opted out).
func (h *PodHandler) owner(ctx context.Context, namespace string, pod *corev1.Pod) (podOwner, error) {
	cluster := pod.Labels[patches.LabelCluster]
	ref := metav1.GetControllerOf(pod)
	if cluster == "" || ref == nil || ref.Kind != "StatefulSet" || ref.APIVersion != appsv1.SchemeGroupVersion.String() || ref.Name != cluster {
		return ownerNone, nil
	}
	sts, err := h.snapshot.ExposedStatefulSet(ctx, namespace, cluster)
	if err != nil {
		return ownerNone, err
	}
	if sts == nil || sts.UID != ref.UID {
		if sts, err = h.snapshot.LiveStatefulSet(ctx, namespace, cluster); err != nil || sts == nil || sts.UID != ref.UID {
			return ownerNone, err
		}
	}
	if !patches.IsExposed(sts.Labels) {
		return ownerOptedOut, nil
	}
	return ownerOptedIn, nil
}

// ServiceHandler makes an opted-in Service a NodePort Service on its broker's external ports.
type ServiceHandler struct{ handler }

func NewServiceHandler(snapshot Snapshot, opts patches.Options) *ServiceHandler {
	return &ServiceHandler{newHandler(snapshot, opts)}
}

func (h *ServiceHandler) Handle(ctx context.Context, req admission.Request) admission.Response {
	if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update {
		return admission.Allowed("brokerport mutates Services on create and update only")
	}
	svc := &corev1.Service{}
	if err := decode(req.Object, svc, serviceGVK); err != nil {
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
			// The StatefulSet opted out; the controller removes its Services. Until then, no new
			// port of the band.
			old := &corev1.Service{}
			if err := decode(req.OldObject, old, serviceGVK); err != nil {
				return admission.Errored(http.StatusBadRequest, fmt.Errorf("decoding the old Service: %w", err))
			}
			if errs := patches.CheckNewBandPorts(old, svc, h.opts.PortRange, fmt.Sprintf("StatefulSet %q is no longer opted in", cluster)); len(errs) > 0 {
				return denied(serviceKind, objectName(req, svc.Name), errs)
			}
			return admission.Allowed(fmt.Sprintf("StatefulSet %s/%s is no longer opted in", req.Namespace, cluster))
		}
		return denied(serviceKind, objectName(req, svc.Name), field.ErrorList{field.Invalid(field.NewPath("metadata", "labels").Key(patches.LabelCluster), cluster,
			fmt.Sprintf("no StatefulSet %q labeled %s=%s in namespace %q", cluster, patches.LabelExpose, patches.ExposeValue, req.Namespace))})
	}
	mutated := svc.DeepCopy()
	if errs := patches.MutateService(mutated, sts, h.opts); len(errs) > 0 {
		return denied(serviceKind, objectName(req, svc.Name), errs)
	}
	if mutated.Spec.Type == corev1.ServiceTypeLoadBalancer {
		var old *corev1.Service
		if req.Operation == admissionv1.Update {
			old = &corev1.Service{}
			if err := decode(req.OldObject, old, serviceGVK); err != nil {
				return admission.Errored(http.StatusBadRequest, fmt.Errorf("decoding the old Service: %w", err))
			}
		}
		if errs := patches.CheckNewBandPorts(old, svc, h.opts.PortRange, fmt.Sprintf("StatefulSet %q uses the loadbalancer strategy, whose Services take none", cluster)); len(errs) > 0 {
			return denied(serviceKind, objectName(req, svc.Name), errs)
		}
	}
	return directOrDiffResponse(req.Object.Raw, svc, mutated, directServicePatch, "already as brokerport wants it")
}

// EventHandler is for the informer of opted-in StatefulSets: a block assigned moments ago is
// forgotten as soon as the informer shows its StatefulSet with it, from when the cache holds it
// (and frees it when the StatefulSet goes), even if the StatefulSet goes before the next opt-in
// looks. (An event delivered late for an older StatefulSet of the same name and block would
// forget it early; that needs the older one gone from the cache before this block was assigned,
// which is what freed the block, and its event still undelivered after that admission.) Each
// version's block is parsed here once, for the admissions after it too.
func (h *StatefulSetHandler) EventHandler() toolscache.ResourceEventHandler {
	shown := func(obj any) {
		sts, ok := obj.(*appsv1.StatefulSet)
		if !ok {
			return
		}
		block, holds := h.blocks.Block(sts)
		if !holds {
			return
		}
		h.assigning.Lock()
		defer h.assigning.Unlock()
		h.recent.shown(types.NamespacedName{Namespace: sts.Namespace, Name: sts.Name}, block)
	}
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { shown(obj) },
		UpdateFunc: func(_, obj any) { shown(obj) },
	}
}

// cachedBlock is the block the cache shows StatefulSet k holding.
func (h *StatefulSetHandler) cachedBlock(ctx context.Context, k types.NamespacedName) (patches.PortRange, bool) {
	cached, err := h.snapshot.ExposedStatefulSet(ctx, k.Namespace, k.Name)
	if err != nil || cached == nil {
		return patches.PortRange{}, false
	}
	return h.blocks.Block(cached)
}

// storedBlock is the block the API server shows StatefulSet k holding (a live read).
func (h *StatefulSetHandler) storedBlock(ctx context.Context, k types.NamespacedName) (patches.PortRange, bool, error) {
	live, err := h.snapshot.LiveStatefulSet(ctx, k.Namespace, k.Name)
	if err != nil || live == nil || !patches.IsExposed(live.Labels) {
		return patches.PortRange{}, false, err
	}
	block, holds := h.blocks.Block(live)
	return block, holds, nil
}

// holdGrace is how long a block assigned to an admission request is held on the request's word
// alone. The API server stores the object once the rest of its admission chain has passed: well
// under a second as a rule, and brokerport's own call times out at 5 s. Past the grace a live read
// decides: a request that was not stored (refused after the webhook by a later webhook or by
// validation, or a tenant's attempt to hold the band) gives its block back; one that was keeps it
// until the cache shows it. A chain slower than this whose object is stored after the block went
// to another StatefulSet is what the controller settles (yieldOverlappingBlock: the later one
// moves). The grace is also how long a request that is never stored holds ports: a tenant must
// send one such request per grace to keep a block from others, and each denial names it.
const holdGrace = 10 * time.Second

// maxPendingHolds bounds the blocks held for requests not yet shown stored. They settle within
// holdGrace, and an opt-in holds one for the moments until its informer event, so only a burst
// of opt-ins (or of requests that are never stored) comes near; past the bound a new
// assignment is refused with a retry, rather than the admission doing a live read per hold.
const maxPendingHolds = 64

// maxPendingHoldsPerUser bounds them per requester, so that one tenant sending requests that are
// never stored cannot reach maxPendingHolds and have everyone else's opt-ins refused; half of it,
// so that a GitOps tool applying many StatefulSets at once (one requester) is not refused.
const maxPendingHoldsPerUser = maxPendingHolds / 2

// recentBlocks are blocks assigned by this process to requests that the informer cache may not
// show stored yet. Only used under StatefulSetHandler.assigning.
type recentBlocks struct {
	grace time.Duration
	now   func() time.Time
	holds map[types.NamespacedName]recentBlock
}

type recentBlock struct {
	block patches.PortRange
	// until is when the hold next needs evidence: the grace after the assignment, then the grace
	// after each live read that showed the StatefulSet stored with the block.
	until time.Time
	at    time.Time
	user  string // who asked, for the log when the request turns out not stored
}

func (r *recentBlocks) add(key types.NamespacedName, block patches.PortRange, user string) {
	if r.holds == nil {
		r.holds = map[types.NamespacedName]recentBlock{}
	}
	now := r.now()
	r.holds[key] = recentBlock{block: block, at: now, until: now.Add(r.grace), user: user}
}

// pending is how many holds an assignment to key would add to: those of other StatefulSets.
func (r *recentBlocks) pending(key types.NamespacedName) int {
	if _, ok := r.holds[key]; ok {
		return len(r.holds) - 1
	}
	return len(r.holds)
}

// pendingBy is how many of those other holds user asked for.
func (r *recentBlocks) pendingBy(key types.NamespacedName, user string) int {
	n := 0
	for k, b := range r.holds {
		if k != key && b.user == user {
			n++
		}
	}
	return n
}

// shown forgets key's block once the cache holds key with it.
func (r *recentBlocks) shown(key types.NamespacedName, block patches.PortRange) {
	if b, ok := r.holds[key]; ok && b.block == block {
		delete(r.holds, key)
	}
}

// others are the held blocks of StatefulSets other than key. One the cache shows (cached gives
// it that block) is forgotten after this call: the cache holds it from then on, and frees it when
// the StatefulSet goes. One past its grace is read live (stored): kept for another grace if the API
// server has the StatefulSet with that block, else forgotten; kept if the read fails.
func (r *recentBlocks) others(ctx context.Context, key types.NamespacedName,
	cached func(context.Context, types.NamespacedName) (patches.PortRange, bool),
	stored func(context.Context, types.NamespacedName) (patches.PortRange, bool, error)) []patches.Reservation {
	var out []patches.Reservation
	now := r.now()
	for k, b := range r.holds {
		reservation := patches.Reservation{PortRange: b.block, Owner: fmt.Sprintf("StatefulSet %s (assigned moments ago)", k)}
		if block, ok := cached(ctx, k); ok && block == b.block {
			r.shown(k, block)
			// Still reserved for this admission: the cache may have shown it only after the
			// caller listed the ports in use, which then lack it.
			if k != key {
				out = append(out, reservation)
			}
			continue
		}
		if k == key {
			continue
		}
		if !now.Before(b.until) {
			block, ok, err := stored(ctx, k)
			switch {
			case err != nil:
				logf.FromContext(ctx).Error(err, "reading a StatefulSet whose block is held for its request; held until a read succeeds", "statefulset", k, "block", b.block.String())
			case ok && block == b.block:
				b.until = now.Add(r.grace)
				r.holds[k] = b
			default:
				logf.FromContext(ctx).Info("port block assigned to a request that was not stored: released", "statefulset", k, "block", b.block.String(), "requestedBy", b.user, "assigned", b.at)
				delete(r.holds, k)
				continue
			}
		}
		out = append(out, reservation)
	}
	return out
}

// ScaleHandler refuses scaling an opted-in StatefulSet past its block through the scale
// subresource (kubectl scale), which the StatefulSet rule does not cover.
type ScaleHandler struct{ handler }

func NewScaleHandler(snapshot Snapshot, opts patches.Options) *ScaleHandler {
	return &ScaleHandler{newHandler(snapshot, opts)}
}

func (h *ScaleHandler) Handle(ctx context.Context, req admission.Request) admission.Response {
	if req.Operation != admissionv1.Update || req.SubResource != "scale" {
		return admission.Allowed("brokerport checks scale updates only")
	}
	scale := &autoscalingv1.Scale{}
	if err := decode(req.Object, scale, scaleGVK); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decoding Scale: %w", err))
	}
	sts, err := h.snapshot.ExposedStatefulSet(ctx, req.Namespace, req.Name)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	if sts == nil {
		return admission.Allowed("not opted in")
	}
	cfg, errs := patches.ParseConfig(sts.Annotations, nil, h.opts)
	if len(errs) > 0 || !cfg.Configured() {
		return admission.Allowed("no configuration to check against")
	}
	scaled := sts.DeepCopy()
	scaled.Spec.Replicas = &scale.Spec.Replicas
	if err := patches.CheckReplicas(scaled, cfg); err != nil {
		return denied(scaleKind, req.Name, field.ErrorList{err})
	}
	return admission.Allowed("within the port block")
}
