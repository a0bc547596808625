package matchconditions

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	admissionregistrationv1ac "k8s.io/client-go/applyconfigurations/admissionregistration/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/brokerport/brokerport/patches"
)

// FieldManager owns webhooks[name=bindings.brokerport.io].matchConditions and nothing else, so
// that the manifests' appliers, cert-manager's caBundle injection and brokerport's own CA patch
// (certs) keep their fields.
const FieldManager = "brokerport-matchconditions"

var (
	fallbackGauge = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "brokerport_binding_matchconditions_fallback",
		Help: "1 while the opted-in StatefulSets do not fit in the binding webhook's matchConditions, so that the API server calls brokerport for every binding in the cluster.",
	})
	coveredGauge = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "brokerport_binding_matchconditions_statefulsets",
		Help: "Opted-in StatefulSets in the binding webhook's matchConditions as last written.",
	})
)

func init() { metrics.Registry.MustRegister(fallbackGauge, coveredGauge) }

// Options of the controller; zero values take the defaults.
type Options struct {
	WebhookConfig string        // the MutatingWebhookConfiguration (default "brokerport")
	Webhook       string        // its binding webhook (default "bindings.brokerport.io")
	Debounce      time.Duration // events within this window make one write (default 1 s)
	Resync        time.Duration // a re-check that repairs a configuration replaced by hand (default 5 min)
	Limits        Limits        // default DefaultLimits
}

func (o Options) withDefaults() Options {
	if o.WebhookConfig == "" {
		o.WebhookConfig = "brokerport"
	}
	if o.Webhook == "" {
		o.Webhook = "bindings.brokerport.io"
	}
	if o.Debounce == 0 {
		o.Debounce = time.Second
	}
	if o.Resync == 0 {
		o.Resync = 5 * time.Minute
	}
	if o.Limits == (Limits{}) {
		o.Limits = DefaultLimits
	}
	return o
}

// Reconciler writes the binding webhook's matchConditions from the opted-in StatefulSets.
//
// It runs in the elected replica only (controller-runtime's default for a controller): one
// writer, so two replicas whose caches momentarily disagree never take turns rewriting the
// configuration, and every API server recompiles it only when the set really changed. A
// condition that lags (leader failover, debounce, a new opt-in) costs nothing in correctness:
// a broker whose binding was not sent is held by its gate init container until the companion
// controller repairs its address, as when brokerport is unreachable.
type Reconciler struct {
	Cache   client.Reader // brokerport's cache, which holds the opted-in StatefulSets only
	API     client.Reader // the webhook configuration is read directly: it is not cached
	Client  client.Client // server-side apply
	Events  events.EventRecorder
	Options Options

	fallback bool // the last reconcile fell back; an Event marks each entry into fallback
}

// Setup adds the controller to mgr.
func Setup(mgr ctrl.Manager, opts Options) error {
	r := &Reconciler{Cache: mgr.GetCache(), API: mgr.GetAPIReader(), Client: mgr.GetClient(),
		Events: mgr.GetEventRecorder("brokerport"), Options: opts.withDefaults()}
	return r.SetupWithManager(mgr)
}

// the controller's only work item: the whole set is written at once.
var singleton = reconcile.Request{NamespacedName: types.NamespacedName{Name: "bindings"}}

func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.Options = r.Options.withDefaults()
	// AddAfter keeps the earliest time of a queued item: the first event of a burst starts the
	// window, and everything until it ends is one reconcile.
	debounced := func(q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		q.AddAfter(singleton, r.Options.Debounce)
	}
	onSetChange := handler.TypedFuncs[*appsv1.StatefulSet, reconcile.Request]{
		// The cache selects on the opt-in label: opting out is a delete; an update of an opted-in
		// StatefulSet changes nothing here (a StatefulSet cannot be renamed).
		CreateFunc: func(_ context.Context, _ event.TypedCreateEvent[*appsv1.StatefulSet], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			debounced(q)
		},
		DeleteFunc: func(_ context.Context, _ event.TypedDeleteEvent[*appsv1.StatefulSet], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			debounced(q)
		},
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("matchconditions").
		WatchesRawSource(source.Kind(mgr.GetCache(), &appsv1.StatefulSet{}, onSetChange)).
		// With no StatefulSet at all there is no event: write the conditions once at start.
		WatchesRawSource(source.Func(func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
			q.Add(singleton)
			return nil
		})).
		Complete(r)
}

func (r *Reconciler) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	log := logf.FromContext(ctx).WithValues("mutatingwebhookconfiguration", r.Options.WebhookConfig, "webhook", r.Options.Webhook)
	resync := reconcile.Result{RequeueAfter: r.Options.Resync}

	var list appsv1.StatefulSetList
	if err := r.Cache.List(ctx, &list, client.MatchingLabels{patches.LabelExpose: patches.ExposeValue}); err != nil {
		return reconcile.Result{}, fmt.Errorf("listing opted-in StatefulSets: %w", err)
	}
	sets := make([]types.NamespacedName, 0, len(list.Items))
	for i := range list.Items {
		if patches.IsExposed(list.Items[i].Labels) {
			sets = append(sets, types.NamespacedName{Namespace: list.Items[i].Namespace, Name: list.Items[i].Name})
		}
	}
	desired, err := Build(sets, r.Options.Limits)
	tooLarge := errors.Is(err, ErrTooLarge)
	if err != nil && !tooLarge {
		return reconcile.Result{}, err
	}

	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := r.API.Get(ctx, client.ObjectKey{Name: r.Options.WebhookConfig}, mwc); err != nil {
		if apierrors.IsNotFound(err) {
			log.Info("no webhook configuration to write matchConditions to")
			return resync, nil
		}
		return reconcile.Result{}, fmt.Errorf("getting MutatingWebhookConfiguration %s: %w", r.Options.WebhookConfig, err)
	}
	i := slices.IndexFunc(mwc.Webhooks, func(w admissionregistrationv1.MutatingWebhook) bool { return w.Name == r.Options.Webhook })
	if i < 0 {
		// Applying would add a webhook with a name only, which the API server refuses.
		log.Info("the webhook configuration has no binding webhook to write matchConditions to")
		return resync, nil
	}

	if tooLarge {
		// Fall back to no conditions: brokerport is called for every binding and decides from
		// the pod's name, as it did before matchConditions.
		log.Info("falling back to calling the binding webhook for every pod", "statefulSets", len(sets), "reason", err.Error())
		if !r.fallback {
			r.Events.Eventf(mwc, nil, corev1.EventTypeWarning, "MatchConditionsTooLarge", "WriteMatchConditions",
				"%d opted-in StatefulSets do not fit in the matchConditions of webhook %s: the API server calls brokerport for every binding in the cluster", len(sets), r.Options.Webhook)
		}
	}
	if slices.Equal(ours(mwc.Webhooks[i].MatchConditions), desired) {
		r.record(tooLarge, len(sets))
		return resync, nil
	}
	apply := admissionregistrationv1ac.MutatingWebhookConfiguration(r.Options.WebhookConfig).
		WithWebhooks(admissionregistrationv1ac.MutatingWebhook().WithName(r.Options.Webhook).
			WithMatchConditions(applyConditions(desired)...))
	// Forced: these names are brokerport's; anyone else's conditions under other names stay.
	if err := r.Client.Apply(ctx, apply, client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
		return reconcile.Result{}, fmt.Errorf("applying the matchConditions of webhook %s of MutatingWebhookConfiguration %s: %w", r.Options.Webhook, r.Options.WebhookConfig, err)
	}
	log.Info("wrote the binding webhook's matchConditions", "statefulSets", len(sets), "conditions", len(desired))
	r.record(tooLarge, len(sets))
	return resync, nil
}

func (r *Reconciler) record(tooLarge bool, sets int) {
	r.fallback = tooLarge
	if tooLarge {
		fallbackGauge.Set(1)
		coveredGauge.Set(0)
		return
	}
	fallbackGauge.Set(0)
	coveredGauge.Set(float64(sets))
}

// ours keeps the conditions Build names, in order: an administrator's own conditions under other
// names are ANDed with brokerport's and left alone.
func ours(conditions []admissionregistrationv1.MatchCondition) []admissionregistrationv1.MatchCondition {
	var out []admissionregistrationv1.MatchCondition
	for _, c := range conditions {
		if c.Name == conditionNoBrokers || c.Name == conditionBrokerName || strings.HasPrefix(c.Name, conditionBrokers) {
			out = append(out, c)
		}
	}
	return out
}

func applyConditions(conditions []admissionregistrationv1.MatchCondition) []*admissionregistrationv1ac.MatchConditionApplyConfiguration {
	out := make([]*admissionregistrationv1ac.MatchConditionApplyConfiguration, 0, len(conditions))
	for _, c := range conditions {
		out = append(out, admissionregistrationv1ac.MatchCondition().WithName(c.Name).WithExpression(c.Expression))
	}
	return out
}
