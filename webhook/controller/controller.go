// Package controller is brokerport's companion controller: for each opted-in StatefulSet it
// keeps one NodePort Service per broker, repairs broker address annotations the binding webhook
// could not set (or that went stale), and publishes the brokers' external addresses.
package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"github.com/prometheus/client_golang/prometheus"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/brokerport/brokerport/patches"
)

var repairs = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "brokerport_address_repairs_total",
	Help: "Broker address annotations written by the controller, by reason (missing: never set at bind; stale: the node's address changed).",
}, []string{"reason"})

func init() { metrics.Registry.MustRegister(repairs) }

// ConfigMapName is where a StatefulSet's external addresses are published.
func ConfigMapName(sts string) string { return sts + "-external" }

// Reconciler reconciles one opted-in StatefulSet at a time.
type Reconciler struct {
	// Client reads from the manager's cache (slimmed objects, see webhook.CacheOptions) and
	// writes to the API server.
	Client client.Client
	// API reads the full objects the cache slims, for the rare update.
	API     client.Reader
	Events  events.EventRecorder
	Options patches.Options
	// Reachability, when set, adds the external probe's keys to the ConfigMap; ProbeChanges
	// names the StatefulSets whose keys changed, to publish them at once.
	Reachability Reachability
	ProbeChanges <-chan event.GenericEvent
	// Targets, when set, is told what the probe may dial: each time a StatefulSet is published,
	// the brokers' states and nodes its addresses were computed from; when it is removed, that
	// it is gone. The probe dials nothing else (never what a ConfigMap says).
	Targets ProbeTargets
	// CertificateHosts are the hosts of host templates the admin allows each issuer to certify
	// (serve --tls-allowed-hosts); none when empty.
	CertificateHosts patches.CertificateHosts
	// MayWrite, when set, holds every reconcile until it is true: brokerport's
	// ValidatingAdmissionPolicies are in force (webhook.PolicyGate).
	MayWrite func() bool
	// Now is the clock (nil: time.Now), for tests of what waits.
	Now func() time.Time
	// CertManager: the API server serves cert-manager's Certificates. SetupWithManager looks,
	// and a StatefulSet that asks for certificates looks again (cert-manager installed after
	// brokerport), starting the Certificate watch then.
	CertManager bool

	mgr         ctrl.Manager
	ctrl        controller.Controller
	byCluster   handler.EventHandler
	certManager sync.Mutex

	// edited remembers, per pod UID, the edited annotations already reported, so that each
	// edit is said once.
	edited sync.Map
}

// SetupWithManager watches StatefulSets, their brokers, Services and ConfigMap, and the nodes
// the brokers run on (only when an address or zone changes).
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	byCluster := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, obj client.Object) []reconcile.Request {
		if cluster := obj.GetLabels()[patches.LabelCluster]; cluster != "" {
			return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: obj.GetNamespace(), Name: cluster}}}
		}
		return nil
	})
	r.mgr, r.byCluster = mgr, byCluster
	r.CertManager = CertManagerInstalled(mgr.GetRESTMapper())
	b := ctrl.NewControllerManagedBy(mgr).
		Named("brokerport").
		For(&appsv1.StatefulSet{}).
		Watches(&corev1.Pod{}, byCluster).
		Watches(&corev1.Service{}, byCluster).
		Watches(&corev1.ConfigMap{}, byCluster).
		Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(r.clustersOnNode), builder.WithPredicates(addressChanged))
	if r.CertManager {
		b = b.Watches(&cmapi.Certificate{}, byCluster)
	}
	if r.ProbeChanges != nil {
		b = b.WatchesRawSource(source.Channel(r.ProbeChanges, &handler.EnqueueRequestForObject{}))
	}
	c, err := b.Build(r)
	r.ctrl = c
	return err
}

// certManagerInstalled tells whether cert-manager's Certificates are served, looking again
// while they were not: once they are, the controller starts watching them.
func (r *Reconciler) certManagerInstalled(ctx context.Context) bool {
	r.certManager.Lock()
	defer r.certManager.Unlock()
	if r.CertManager || r.mgr == nil || !CertManagerInstalled(r.mgr.GetRESTMapper()) {
		return r.CertManager
	}
	if err := r.ctrl.Watch(source.Kind(r.mgr.GetCache(), client.Object(&cmapi.Certificate{}), r.byCluster)); err != nil {
		logf.FromContext(ctx).Error(err, "watching cert-manager's Certificates")
		return false
	}
	r.CertManager = true
	return true
}

// addressChanged passes node updates that change what a broker would advertise, not heartbeats.
var addressChanged = predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
	old, okOld := e.ObjectOld.(*corev1.Node)
	cur, okNew := e.ObjectNew.(*corev1.Node)
	return !okOld || !okNew ||
		!slices.Equal(old.Status.Addresses, cur.Status.Addresses) ||
		old.Labels[patches.LabelZone] != cur.Labels[patches.LabelZone]
}}

func (r *Reconciler) clustersOnNode(ctx context.Context, node client.Object) []reconcile.Request {
	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods, client.MatchingLabels{patches.LabelExpose: patches.ExposeValue}); err != nil {
		logf.FromContext(ctx).Error(err, "listing brokers", "node", node.GetName())
		return nil
	}
	var reqs []reconcile.Request
	for _, p := range pods.Items {
		req := reconcile.Request{NamespacedName: client.ObjectKey{Namespace: p.Namespace, Name: p.Labels[patches.LabelCluster]}}
		if p.Spec.NodeName == node.GetName() && req.Name != "" && !slices.Contains(reqs, req) {
			reqs = append(reqs, req)
		}
	}
	return reqs
}

func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	if r.MayWrite != nil && !r.MayWrite() {
		return reconcile.Result{RequeueAfter: time.Second}, nil
	}
	res, err := r.reconcile(ctx, req)
	if apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
		// The namespace is going away, and everything brokerport made in it with it.
		return reconcile.Result{}, nil
	}
	return res, err
}

func (r *Reconciler) reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	sts := &appsv1.StatefulSet{}
	err := r.Client.Get(ctx, req.NamespacedName, sts)
	if apierrors.IsNotFound(err) || (err == nil && !patches.IsExposed(sts.Labels)) {
		// Not opted in (the cache holds only opted-in StatefulSets): take everything back.
		return reconcile.Result{}, r.remove(ctx, req.Namespace, req.Name, r.optedOut(ctx, req))
	}
	if err != nil {
		return reconcile.Result{}, err
	}
	cfg, errs := patches.ParseConfig(sts.Annotations, nil, r.Options)
	if len(errs) > 0 || !cfg.Configured() {
		// The StatefulSet webhook refuses such a StatefulSet; it can only be one labeled while
		// brokerport was not installed. Say so; its next update goes through the webhook.
		r.Events.Eventf(sts, nil, corev1.EventTypeWarning, "NotConfigured", "Reconcile", "brokerport has not configured this StatefulSet (no valid %s); update it so that the webhook can", patches.AnnotationPortBase)
		return reconcile.Result{}, nil
	}

	if yielded, err := r.yieldOverlappingBlock(ctx, sts, cfg); err != nil || yielded {
		return reconcile.Result{}, err
	}

	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods, client.InNamespace(sts.Namespace), client.MatchingLabels{patches.LabelCluster: sts.Name}); err != nil {
		return reconcile.Result{}, fmt.Errorf("listing brokers: %w", err)
	}
	brokers := map[int]*corev1.Pod{}
	for i := range pods.Items {
		if ordinal, ok := patches.OrdinalOf(pods.Items[i].Name, sts.Name); ok {
			brokers[ordinal] = &pods.Items[i]
		}
	}
	first, last := ordinals(sts)
	// Each broker's Service is reconciled on its own: one that cannot get its ports is said, and
	// the others, the repairs and the ConfigMap go on.
	problems, balancers, err := r.services(ctx, sts, cfg, first, last, brokers)
	if err != nil {
		return reconcile.Result{}, err
	}
	nodes, err := r.nodes(ctx, brokers)
	if err != nil {
		return reconcile.Result{}, err
	}
	states := make([]patches.BrokerState, 0, last-first+1)
	for ordinal := first; ordinal <= last; ordinal++ {
		facts := patches.BrokerFacts{Pod: brokers[ordinal], ServiceProblem: problems[ordinal], LoadBalancer: balancers[ordinal]}
		if facts.Pod != nil {
			facts.Node = nodes[facts.Pod.Spec.NodeName]
		}
		states = append(states, patches.ObserveBroker(cfg, sts.Name, ordinal, facts))
	}
	var certErr error
	waitingForCertManager := false
	if cfg.TLSIssuer != nil {
		waitingForCertManager = !r.certManagerInstalled(ctx)
		var certs map[int]patches.CertificateFacts
		if certs, certErr = r.certificates(ctx, sts, cfg, first, states, brokers); certs != nil {
			for i := range states {
				states[i] = patches.WithCertificate(states[i], cfg, certs[first+i])
				if c := certs[first+i]; c.Name != "" && !(c.Named && c.Issued) && !c.Overdue {
					waitingForCertManager = true // to say in time that an issuer is late
				}
			}
		}
	} else if err := r.removeCertificates(ctx, sts.Namespace, sts.Name); err != nil {
		certErr = err // the issuer was removed: its Certificates go
	}
	r.reportEdited(sts, brokers)
	repairErr := errors.Join(r.repair(ctx, sts, cfg, brokers, nodes, balancers), certErr)
	if r.Targets != nil {
		r.Targets.Track(sts, cfg, states, nodes) // what publish computes the addresses from
	}
	if err := r.publish(ctx, sts, cfg, states); err != nil {
		return reconcile.Result{}, errors.Join(repairErr, err)
	}
	if repairErr != nil {
		return reconcile.Result{}, repairErr
	}
	if len(problems) > 0 || waitingForCertManager {
		// A port held by someone else frees, cert-manager is installed or an issuer becomes
		// late, without an event brokerport watches: look again.
		return reconcile.Result{RequeueAfter: blockedRetry}, nil
	}
	for _, lb := range balancers {
		if lb.Ingress == "" && !lb.Overdue {
			// No event comes when a load balancer is late: look again, to say so in time.
			return reconcile.Result{RequeueAfter: blockedRetry}, nil
		}
	}
	return reconcile.Result{}, nil
}

func (r *Reconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// reportEdited says, once per pod and edit, that configuration annotations of a broker pod that
// differ from its StatefulSet's are ignored: anyone who can edit the pod can write them. A pod of
// an earlier template revision differs by right (it is rolled), and is not reported.
func (r *Reconciler) reportEdited(sts *appsv1.StatefulSet, brokers map[int]*corev1.Pod) {
	if sts.Status.ObservedGeneration != sts.Generation || sts.Status.UpdateRevision == "" {
		return // the StatefulSet controller has not caught up with the latest change yet
	}
	for _, pod := range brokers {
		keys := patches.EditedConfig(pod.Annotations, sts.Annotations)
		if len(keys) == 0 || pod.Labels[appsv1.ControllerRevisionHashLabelKey] != sts.Status.UpdateRevision {
			r.edited.Delete(pod.UID)
			continue
		}
		signature := fmt.Sprint(keys, sts.ResourceVersion)
		if before, seen := r.edited.Swap(pod.UID, signature); seen && before == signature {
			continue
		}
		r.Events.Eventf(pod, sts, corev1.EventTypeWarning, "AnnotationIgnored", "Publish",
			"annotations %v of pod %s differ from StatefulSet %s's and are ignored: brokerport publishes and repairs from the StatefulSet's configuration (the pod predates a change of it, or was edited)", keys, pod.Name, sts.Name)
	}
}

// blockedRetry is how often a broker whose ports another Service holds is looked at again.
const blockedRetry = 30 * time.Second

// nodes are the nodes the brokers are bound to, from the cache; a node that is gone is absent.
func (r *Reconciler) nodes(ctx context.Context, brokers map[int]*corev1.Pod) (map[string]*corev1.Node, error) {
	nodes := map[string]*corev1.Node{}
	for _, pod := range brokers {
		name := pod.Spec.NodeName
		if _, seen := nodes[name]; seen || name == "" {
			continue
		}
		node := &corev1.Node{}
		if err := r.Client.Get(ctx, client.ObjectKey{Name: name}, node); err != nil {
			if apierrors.IsNotFound(err) {
				continue // the node is going away, and the pod with it
			}
			return nil, fmt.Errorf("getting node %s: %w", name, err)
		}
		nodes[name] = node
	}
	return nodes, nil
}

// yieldOverlappingBlock settles the one way two StatefulSets can hold overlapping blocks: each
// labeled at the same moment through a different brokerport replica, each replica assigning
// from a cache that did not show the other yet. The StatefulSet created later (by name on a tie)
// gives its block up: its port base is removed, the StatefulSet webhook assigns it a free block
// on that very update, and its Services (updated by servesPorts) and brokers follow.
func (r *Reconciler) yieldOverlappingBlock(ctx context.Context, sts *appsv1.StatefulSet, cfg patches.Config) (bool, error) {
	if !cfg.HoldsBlock() {
		return false, nil
	}
	var sets appsv1.StatefulSetList
	if err := r.Client.List(ctx, &sets, client.MatchingLabels{patches.LabelExpose: patches.ExposeValue}); err != nil {
		return false, fmt.Errorf("listing opted-in StatefulSets: %w", err)
	}
	for i := range sets.Items {
		other := &sets.Items[i]
		if other.UID == sts.UID || !before(other, sts) {
			continue
		}
		otherCfg, errs := patches.ParseConfig(other.Annotations, nil, r.Options)
		if len(errs) > 0 || !otherCfg.HoldsBlock() {
			continue
		}
		if _, overlap := patches.NewPortSet(patches.Reservation{PortRange: otherCfg.Block()}).Conflict(cfg.Block()); !overlap {
			continue
		}
		patch := client.RawPatch(types.MergePatchType, []byte(fmt.Sprintf(`{"metadata":{"annotations":{%q:null}}}`, patches.AnnotationPortBase)))
		if err := r.Client.Patch(ctx, sts, patch); err != nil {
			return false, fmt.Errorf("giving up block %s: %w", cfg.Block(), err)
		}
		r.Events.Eventf(sts, other, corev1.EventTypeWarning, "PortBlockConflict", "Reassign",
			"ports %s overlapped StatefulSet %s/%s's %s (both assigned at the same moment); this StatefulSet gets a new block and its brokers roll onto it", cfg.Block(), other.Namespace, other.Name, otherCfg.Block())
		return true, nil
	}
	return false, nil
}

// before orders StatefulSets by creation, then by namespace and name.
func before(a, b *appsv1.StatefulSet) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
}

// remove takes everything back once a StatefulSet is no longer opted in (sts) or is gone (nil):
// its Services and ConfigMap, and, for an opted-out one, its brokers that never started.
func (r *Reconciler) remove(ctx context.Context, namespace, name string, sts *appsv1.StatefulSet) error {
	brokerGauge.DeletePartialMatch(prometheus.Labels{"namespace": namespace, "statefulset": name})
	if r.Targets != nil {
		r.Targets.Forget(namespace, name)
	}
	if err := r.removeCertificates(ctx, namespace, name); err != nil {
		return err
	}
	var services corev1.ServiceList
	if err := r.Client.List(ctx, &services, client.InNamespace(namespace), client.MatchingLabels{patches.LabelCluster: name, patches.LabelExpose: patches.ExposeValue, patches.LabelManagedBy: patches.ManagedByValue}); err != nil {
		return fmt.Errorf("listing broker Services: %w", err)
	}
	for i := range services.Items {
		if err := r.Client.Delete(ctx, &services.Items[i]); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("deleting Service %s: %w", services.Items[i].Name, err)
		}
	}
	if sts != nil {
		if err := r.releasePending(ctx, sts); err != nil {
			return err
		}
	}
	cm := &corev1.ConfigMap{}
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: ConfigMapName(name)}, cm)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("getting ConfigMap %s: %w", ConfigMapName(name), err)
	}
	if !isOurs(cm.Labels, name) {
		return nil
	}
	return client.IgnoreNotFound(r.Client.Delete(ctx, cm))
}

// releasePending deletes the brokers of an opted-out StatefulSet that have not started: one
// waiting for a node, or in its gate for an address brokerport no longer gives, would stay so
// forever, and a StatefulSet's rolling update waits for every pod to be ready before it replaces
// any. The StatefulSet controller creates them again, and the pod webhook leaves brokerport out.
func (r *Reconciler) releasePending(ctx context.Context, sts *appsv1.StatefulSet) error {
	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods, client.InNamespace(sts.Namespace), client.MatchingLabels{patches.LabelCluster: sts.Name}); err != nil {
		return fmt.Errorf("listing brokers: %w", err)
	}
	for i := range pods.Items {
		pod := &pods.Items[i]
		if pod.Status.Phase != corev1.PodPending || pod.DeletionTimestamp != nil || !metav1.IsControlledBy(pod, sts) {
			continue
		}
		if err := r.Client.Delete(ctx, pod, client.Preconditions{UID: &pod.UID}); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("releasing pending broker %s: %w", pod.Name, err)
		}
		r.Events.Eventf(sts, pod, corev1.EventTypeNormal, "BrokerReleased", "OptOut", "broker %s had not started (pending); deleted so that it is created again without brokerport", pod.Name)
	}
	return nil
}

// optedOut reads a StatefulSet the cache does not hold (it holds only opted-in ones) from the
// API server: nil when it is gone or cannot be read.
func (r *Reconciler) optedOut(ctx context.Context, req reconcile.Request) *appsv1.StatefulSet {
	sts := &appsv1.StatefulSet{}
	if err := r.API.Get(ctx, req.NamespacedName, sts); err != nil || patches.IsExposed(sts.Labels) {
		return nil
	}
	return sts
}

func ordinals(sts *appsv1.StatefulSet) (first, last int) {
	replicas := 1
	if sts.Spec.Replicas != nil {
		replicas = int(*sts.Spec.Replicas)
	}
	if sts.Spec.Ordinals != nil {
		first = int(sts.Spec.Ordinals.Start)
	}
	return first, first + replicas - 1
}
