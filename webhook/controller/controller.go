// Package controller is brokerport's companion controller: for each opted-in StatefulSet it
// keeps one NodePort Service per broker, repairs broker address annotations the binding webhook
// could not set (or that went stale), and publishes the brokers' external addresses.
package controller

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

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
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

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
	return ctrl.NewControllerManagedBy(mgr).
		Named("brokerport").
		For(&appsv1.StatefulSet{}).
		Watches(&corev1.Pod{}, byCluster).
		Watches(&corev1.Service{}, byCluster).
		Watches(&corev1.ConfigMap{}, byCluster).
		Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(r.clustersOnNode), builder.WithPredicates(addressChanged)).
		Complete(r)
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
	sts := &appsv1.StatefulSet{}
	err := r.Client.Get(ctx, req.NamespacedName, sts)
	if apierrors.IsNotFound(err) || (err == nil && !patches.IsExposed(sts.Labels)) {
		// Not opted in (the cache holds only opted-in StatefulSets): take everything back.
		return reconcile.Result{}, r.remove(ctx, req.Namespace, req.Name)
	}
	if err != nil {
		return reconcile.Result{}, err
	}
	cfg, errs := patches.ParseConfig(sts.Annotations, nil, r.Options)
	if len(errs) > 0 || cfg.PortBase == 0 {
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
	if err := r.services(ctx, sts, cfg, first, last, brokers); err != nil {
		return reconcile.Result{}, err
	}
	if err := r.repair(ctx, sts, brokers); err != nil {
		return reconcile.Result{}, err
	}
	return reconcile.Result{}, r.publish(ctx, sts, cfg, first, last, brokers)
}

// yieldOverlappingBlock settles the one way two StatefulSets can hold overlapping blocks: each
// labeled at the same moment through a different brokerport replica, each replica assigning
// from a cache that did not show the other yet. The StatefulSet created later (by name on a tie)
// gives its block up: its port base is removed, the StatefulSet webhook assigns it a free block
// on that very update, and its Services (updated by servesPorts) and brokers follow.
func (r *Reconciler) yieldOverlappingBlock(ctx context.Context, sts *appsv1.StatefulSet, cfg patches.Config) (bool, error) {
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
		if len(errs) > 0 || otherCfg.PortBase == 0 {
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

// services makes one Service per wanted broker and removes the others once their pod is gone.
func (r *Reconciler) services(ctx context.Context, sts *appsv1.StatefulSet, cfg patches.Config, first, last int, brokers map[int]*corev1.Pod) error {
	var existing corev1.ServiceList
	if err := r.Client.List(ctx, &existing, client.InNamespace(sts.Namespace), client.MatchingLabels{patches.LabelCluster: sts.Name, patches.LabelExpose: patches.ExposeValue}); err != nil {
		return fmt.Errorf("listing broker Services: %w", err)
	}
	have := map[string]*corev1.Service{}
	for i := range existing.Items {
		have[existing.Items[i].Name] = &existing.Items[i]
	}
	for ordinal := first; ordinal <= last; ordinal++ {
		want := patches.BrokerService(sts, cfg, ordinal)
		svc, ok := have[want.Name]
		delete(have, want.Name)
		switch {
		case !ok:
			if err := r.createService(ctx, sts, want); err != nil {
				return err
			}
		case !servesPorts(svc, cfg, ordinal):
			if err := r.updateService(ctx, want); err != nil {
				return err
			}
		}
	}
	for name, svc := range have {
		// By name: the cache keeps a Service's name and ports, not its selector.
		if ordinal, ok := patches.BrokerServiceOrdinal(svc.Name, sts.Name); ok && brokers[ordinal] != nil {
			continue // its broker is still going away
		}
		if err := r.Client.Delete(ctx, svc); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("deleting Service %s: %w", name, err)
		}
	}
	return nil
}

// createService creates a broker's Service. One of that name that the cache does not show is
// either brokerport's own, created moments ago, or someone else's, which is left alone and said.
func (r *Reconciler) createService(ctx context.Context, sts *appsv1.StatefulSet, want *corev1.Service) error {
	err := r.Client.Create(ctx, want)
	if !apierrors.IsAlreadyExists(err) {
		if err != nil {
			return fmt.Errorf("creating Service %s: %w", want.Name, err)
		}
		return nil
	}
	existing := &corev1.Service{}
	if err := r.API.Get(ctx, client.ObjectKeyFromObject(want), existing); err != nil {
		return fmt.Errorf("getting Service %s: %w", want.Name, err)
	}
	if existing.Labels[patches.LabelCluster] == sts.Name {
		return nil
	}
	r.Events.Eventf(sts, nil, corev1.EventTypeWarning, "ServiceTaken", "Expose", "Service %s exists and is not brokerport's (no %s=%s label): rename or delete it so that brokerport can expose this broker", want.Name, patches.LabelCluster, sts.Name)
	return reconcile.TerminalError(fmt.Errorf("Service %s/%s exists and is not brokerport's", want.Namespace, want.Name))
}

// servesPorts tells whether a Service already has the broker's ports as nodePorts, in order.
func servesPorts(svc *corev1.Service, cfg patches.Config, ordinal int) bool {
	if len(svc.Spec.Ports) != len(cfg.Listeners) {
		return false
	}
	for l, p := range svc.Spec.Ports {
		if p.Name != cfg.Listeners[l].Name || p.NodePort != cfg.Port(ordinal, l) {
			return false
		}
	}
	return true
}

// updateService replaces a Service's ports (their nodePorts cleared, for the Service webhook to
// fill in) when the listeners or the block changed.
func (r *Reconciler) updateService(ctx context.Context, want *corev1.Service) error {
	svc := &corev1.Service{}
	if err := r.API.Get(ctx, client.ObjectKeyFromObject(want), svc); err != nil {
		return fmt.Errorf("getting Service %s: %w", want.Name, err)
	}
	svc.Spec.Ports = want.Spec.Ports
	svc.Spec.Selector = want.Spec.Selector
	svc.Labels = want.Labels
	if err := r.Client.Update(ctx, svc); err != nil {
		return fmt.Errorf("updating Service %s: %w", want.Name, err)
	}
	return nil
}

// repair writes the address annotations of bound brokers that lack them or whose node's address
// changed since they were bound.
func (r *Reconciler) repair(ctx context.Context, sts *appsv1.StatefulSet, brokers map[int]*corev1.Pod) error {
	for _, pod := range slices.SortedFunc(maps.Values(brokers), func(a, b *corev1.Pod) int { return strings.Compare(a.Name, b.Name) }) {
		if pod.Spec.NodeName == "" || pod.DeletionTimestamp != nil {
			continue
		}
		node := &corev1.Node{}
		if err := r.Client.Get(ctx, client.ObjectKey{Name: pod.Spec.NodeName}, node); err != nil {
			if apierrors.IsNotFound(err) {
				continue // the node is going away, and the pod with it
			}
			return fmt.Errorf("getting node %s: %w", pod.Spec.NodeName, err)
		}
		cfg, errs := patches.ParseConfig(pod.Annotations, nil, r.Options)
		if len(errs) > 0 {
			continue // the pod webhook refuses such pods; nothing brokerport can repair
		}
		addr, err := patches.SelectAddress(node, cfg)
		if err != nil {
			r.Events.Eventf(sts, pod, corev1.EventTypeWarning, "NoNodeAddress", "Repair", "broker %s: %v", pod.Name, err)
			continue
		}
		before := pod.Annotations[patches.AnnotationHost]
		if before == addr.Host && pod.Annotations[patches.AnnotationZone] == addr.Zone && pod.Annotations[patches.AnnotationNode] == addr.Node {
			continue
		}
		patch := client.MergeFrom(pod.DeepCopy())
		patches.SetAddress(&pod.ObjectMeta, addr)
		if err := r.Client.Patch(ctx, pod, patch); err != nil {
			return fmt.Errorf("repairing the address of pod %s: %w", pod.Name, err)
		}
		if before == "" {
			repairs.WithLabelValues("missing").Inc()
			r.Events.Eventf(pod, sts, corev1.EventTypeNormal, "AddressRepaired", "Repair", "set %s=%s (node %s): the broker can start", patches.AnnotationHost, addr.Host, addr.Node)
			continue
		}
		repairs.WithLabelValues("stale").Inc()
		r.Events.Eventf(pod, sts, corev1.EventTypeWarning, "RestartRequired", "Repair",
			"node %s's address changed from %s to %s; the broker still advertises %s: restart it (kubectl delete pod %s) to re-advertise", addr.Node, before, addr.Host, before, pod.Name)
	}
	return nil
}

// publish writes ConfigMap <sts>-external: per listener each broker's address and a
// bootstrap.servers line, and bootstrap.servers for the Kafka API (first) listener.
func (r *Reconciler) publish(ctx context.Context, sts *appsv1.StatefulSet, cfg patches.Config, first, last int, brokers map[int]*corev1.Pod) error {
	data := Addresses(cfg, first, last, brokers)
	want := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Name: ConfigMapName(sts.Name), Namespace: sts.Namespace,
			Labels:          map[string]string{patches.LabelCluster: sts.Name},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(sts, appsv1.SchemeGroupVersion.WithKind("StatefulSet"))},
		},
		Data: data,
	}
	current := &corev1.ConfigMap{}
	err := r.Client.Get(ctx, client.ObjectKeyFromObject(want), current)
	if apierrors.IsNotFound(err) {
		err := r.Client.Create(ctx, want)
		if apierrors.IsAlreadyExists(err) {
			// The cache holds only brokerport's ConfigMaps: this one is someone else's.
			r.Events.Eventf(sts, nil, corev1.EventTypeWarning, "ConfigMapTaken", "Publish", "ConfigMap %s exists and is not brokerport's (no %s label): rename or delete it so that brokerport can publish the addresses", want.Name, patches.LabelCluster)
			return reconcile.TerminalError(fmt.Errorf("ConfigMap %s/%s exists and is not brokerport's", want.Namespace, want.Name))
		}
		if err != nil {
			return fmt.Errorf("creating ConfigMap %s: %w", want.Name, err)
		}
		r.Events.Eventf(sts, nil, corev1.EventTypeNormal, "Exposed", "Publish", "brokers exposed on ports %s; addresses in ConfigMap %s", cfg.Block(), want.Name)
		return nil
	}
	if err != nil {
		return fmt.Errorf("getting ConfigMap %s: %w", want.Name, err)
	}
	if maps.Equal(current.Data, data) {
		return nil
	}
	current.Data = data
	if err := r.Client.Update(ctx, current); err != nil {
		return fmt.Errorf("updating ConfigMap %s: %w", want.Name, err)
	}
	return nil
}

// Addresses is the published data: for each listener L, "L.addresses" (one "pod host:port" line
// per broker with an address) and "L.bootstrap.servers"; "bootstrap.servers" is the first
// listener's.
func Addresses(cfg patches.Config, first, last int, brokers map[int]*corev1.Pod) map[string]string {
	data := map[string]string{}
	for l, listener := range cfg.Listeners {
		var lines, servers []string
		for ordinal := first; ordinal <= last; ordinal++ {
			pod := brokers[ordinal]
			if pod == nil || pod.Annotations[patches.AnnotationHost] == "" {
				continue
			}
			addr := fmt.Sprintf("%s:%d", pod.Annotations[patches.AnnotationHost], cfg.Port(ordinal, l))
			lines = append(lines, pod.Name+" "+addr)
			servers = append(servers, addr)
		}
		data[listener.Name+".addresses"] = strings.Join(lines, "\n")
		data[listener.Name+".bootstrap.servers"] = strings.Join(servers, ",")
		if l == 0 {
			data["bootstrap.servers"] = strings.Join(servers, ",")
		}
	}
	return data
}

// remove deletes a StatefulSet's Services and ConfigMap once it is no longer opted in.
func (r *Reconciler) remove(ctx context.Context, namespace, name string) error {
	var services corev1.ServiceList
	if err := r.Client.List(ctx, &services, client.InNamespace(namespace), client.MatchingLabels{patches.LabelCluster: name, patches.LabelExpose: patches.ExposeValue}); err != nil {
		return fmt.Errorf("listing broker Services: %w", err)
	}
	for i := range services.Items {
		if err := r.Client.Delete(ctx, &services.Items[i]); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("deleting Service %s: %w", services.Items[i].Name, err)
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
	if cm.Labels[patches.LabelCluster] != name {
		return nil // not ours
	}
	return client.IgnoreNotFound(r.Client.Delete(ctx, cm))
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

// Describe prints a published ConfigMap for people: bootstrap.servers, then each listener's
// brokers.
func Describe(cm *corev1.ConfigMap) string {
	var b strings.Builder
	fmt.Fprintf(&b, "bootstrap.servers=%s\n", cm.Data["bootstrap.servers"])
	keys := slices.Sorted(maps.Keys(cm.Data))
	for _, k := range keys {
		if listener, ok := strings.CutSuffix(k, ".addresses"); ok {
			fmt.Fprintf(&b, "\n%s:\n", listener)
			for _, line := range strings.Split(cm.Data[k], "\n") {
				if line != "" {
					fmt.Fprintf(&b, "  %s\n", line)
				}
			}
		}
	}
	return b.String()
}
