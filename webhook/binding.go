package webhook

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/brokerport/brokerport/patches"
)

// PathBindings is where the API server sends pods/binding (and legacy bindings) creations.
const PathBindings = "/mutate-bindings"

var (
	bindingDecisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "brokerport_binding_decisions_total",
		Help: "Bindings seen, by how the pod was identified: fast (by name alone, not a broker), cache (pod informer) or get (one API call, the cache had not seen the pod yet).",
	}, []string{"path"})
	nodesWithoutAddress = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "brokerport_bindings_without_address_total",
		Help: "Brokers bound to a node that has none of the accepted address types; each gets a Warning Event.",
	})
)

// Resolved once: the fast path runs for every pod scheduled in the cluster.
var fastPath = bindingDecisions.WithLabelValues("fast")

func init() { metrics.Registry.MustRegister(bindingDecisions, nodesWithoutAddress) }

// Clusters is the set of opted-in StatefulSets, kept current by the StatefulSet informer. It is
// what lets the binding webhook tell almost every pod in the cluster "not a broker" from its
// name alone.
type Clusters struct {
	mu  sync.RWMutex
	set map[types.NamespacedName]struct{}
}

func NewClusters() *Clusters { return &Clusters{set: map[types.NamespacedName]struct{}{}} }

// Has tells whether namespace/name is an opted-in StatefulSet.
func (c *Clusters) Has(namespace, name string) bool {
	c.mu.RLock()
	_, ok := c.set[types.NamespacedName{Namespace: namespace, Name: name}]
	c.mu.RUnlock()
	return ok
}

func (c *Clusters) record(obj any, present bool) {
	if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj, present = d.Obj, false
	}
	sts, ok := obj.(*appsv1.StatefulSet)
	if !ok {
		return
	}
	key := types.NamespacedName{Namespace: sts.Namespace, Name: sts.Name}
	c.mu.Lock()
	defer c.mu.Unlock()
	if present && patches.IsExposed(sts.Labels) {
		c.set[key] = struct{}{}
	} else {
		delete(c.set, key)
	}
}

// EventHandler keeps the set from StatefulSet informer events.
func (c *Clusters) EventHandler() toolscache.ResourceEventHandler {
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.record(obj, true) },
		UpdateFunc: func(_, obj any) { c.record(obj, true) },
		DeleteFunc: func(obj any) { c.record(obj, false) },
	}
}

// notABroker is answered to almost every binding in the cluster; built once, so that answering
// allocates nothing.
var notABroker = admission.Allowed("not a brokerport broker")

// BindingHandler adds a broker's node address to its Binding, so that the pod carries it from
// the moment it has a node.
type BindingHandler struct {
	clusters *Clusters
	pods     client.Reader // the label-filtered broker pod cache
	api      client.Reader // direct reads, for a pod the cache has not seen yet
	snapshot Snapshot
	events   events.EventRecorder
	opts     patches.Options
}

func NewBindingHandler(clusters *Clusters, pods, api client.Reader, snapshot Snapshot, recorder events.EventRecorder, opts patches.Options) *BindingHandler {
	return &BindingHandler{clusters: clusters, pods: pods, api: api, snapshot: snapshot, events: recorder, opts: opts}
}

// getTimeout bounds the one API call of a cache miss: the webhook itself has 2 s.
const getTimeout = 500 * time.Millisecond

func (h *BindingHandler) Handle(ctx context.Context, req admission.Request) admission.Response {
	if req.Operation != admissionv1.Create {
		return notABroker
	}
	// The Binding's name is the pod's: decide from it alone, with no decoding and no API call.
	cluster, candidate := patches.BrokerCandidate(req.Name, func(sts string) bool { return h.clusters.Has(req.Namespace, sts) })
	if !candidate {
		fastPath.Inc()
		return notABroker
	}

	binding := &corev1.Binding{}
	if err := decode(req.Object, binding, bindingGVK); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decoding Binding: %w", err))
	}
	if binding.Target.Kind != "" && binding.Target.Kind != "Node" {
		return admission.Allowed("the Binding's target is not a Node")
	}
	pod, err := h.brokerPod(ctx, req.Namespace, req.Name)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	if pod == nil || !patches.IsExposed(pod.Labels) || pod.Labels[patches.LabelCluster] != cluster {
		return notABroker
	}
	node, err := h.snapshot.Node(ctx, binding.Target.Name)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	if node == nil {
		return h.withoutAddress(ctx, req, pod, fmt.Errorf("node %q is not in brokerport's cache yet", binding.Target.Name))
	}
	var service *corev1.Service
	if patches.Strategy(pod.Annotations[patches.AnnotationStrategy]) == patches.StrategyLoadBalancer {
		// Its address is its LoadBalancer Service's (read only for those brokers).
		ordinal, _ := patches.OrdinalOf(pod.Name, cluster)
		if service, err = h.snapshot.Service(ctx, req.Namespace, patches.BrokerServiceName(cluster, ordinal)); err != nil {
			return admission.Errored(http.StatusInternalServerError, err)
		}
	}
	mutated := binding.DeepCopy()
	addr, err := patches.MutateBinding(mutated, pod, node, service, h.opts)
	if errors.Is(err, patches.ErrNoIngressYet) {
		return admission.Allowed("bound before its load balancer has an address: the controller writes it")
	}
	if err != nil {
		return h.withoutAddress(ctx, req, pod, err)
	}
	if addr.Fallback != "" && (req.DryRun == nil || !*req.DryRun) {
		if pod.Namespace == "" {
			pod.Namespace = req.Namespace
		}
		h.events.Eventf(pod, nil, corev1.EventTypeWarning, "HostTemplateFallback", "Bind", "broker %s: %s; fix the node's labels or %s on StatefulSet %s", pod.Name, addr.Fallback, patches.AnnotationHostTemplate, cluster)
	}
	return directOrDiffResponse(req.Object.Raw, binding, mutated, directBindingPatch, "the Binding already carries the address")
}

// brokerPod reads the pod from the cache, or, when the cache has not seen it yet (it was created
// milliseconds ago), with one GET. nil means there is no such pod.
func (h *BindingHandler) brokerPod(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	key := client.ObjectKey{Namespace: namespace, Name: name}
	pod := &corev1.Pod{}
	err := h.pods.Get(ctx, key, pod)
	if err == nil {
		bindingDecisions.WithLabelValues("cache").Inc()
		return pod, nil
	}
	if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("reading pod %s from the cache: %w", key, err)
	}
	bindingDecisions.WithLabelValues("get").Inc()
	getCtx, cancel := context.WithTimeout(ctx, getTimeout)
	defer cancel()
	if err := h.api.Get(getCtx, key, pod); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("getting pod %s: %w", key, err)
	}
	return pod, nil
}

// withoutAddress lets the bind go on (the pod is scheduled either way) and says why the broker
// has no host: a Warning Event on the pod and a metric. The gate init container keeps the broker
// from starting until the controller repairs the address.
func (h *BindingHandler) withoutAddress(ctx context.Context, req admission.Request, pod *corev1.Pod, err error) admission.Response {
	nodesWithoutAddress.Inc()
	logf.FromContext(ctx).Info("broker bound without an address", "pod", client.ObjectKeyFromObject(pod), "reason", err.Error())
	if req.DryRun == nil || !*req.DryRun {
		if pod.Namespace == "" {
			pod.Namespace = req.Namespace
		}
		h.events.Eventf(pod, nil, corev1.EventTypeWarning, "NoNodeAddress", "Bind", "%v", err)
	}
	return admission.Allowed("bound without an address: " + err.Error())
}
