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
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/brokerport/brokerport/patches"
)

var brokerGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Name: "brokerport_brokers",
	Help: "Brokers of each opted-in StatefulSet, by state: exposed (reachable at the published address on the ports its StatefulSet gives it), pending (coming, going or rolling) or failed (a fault); the ConfigMap's status key says why.",
}, []string{"namespace", "statefulset", "state"})

func init() { metrics.Registry.MustRegister(brokerGauge) }

// StatusKey is the ConfigMap key with one line per broker: "<pod> exposed" or
// "<pod> not exposed: <reason>".
const StatusKey = "status"

// statusExposed is the state word of an exposed broker on its status line.
const statusExposed = "exposed"

// publish writes ConfigMap <sts>-external from the brokers' states, and says on the StatefulSet
// what changed: a Warning for each broker that stopped being exposed for a fault (not for the
// steps of a rollout, which the status key shows), a Normal Exposed once every broker is.
func (r *Reconciler) publish(ctx context.Context, sts *appsv1.StatefulSet, cfg patches.Config, states []patches.BrokerState) error {
	data := Addresses(cfg, states)
	r.mergeReachability(sts, data)
	counts := map[string]int{"exposed": 0, "pending": 0, "failed": 0}
	for _, s := range states {
		counts[brokerState(s)]++
	}
	for state, n := range counts {
		brokerGauge.WithLabelValues(sts.Namespace, sts.Name, state).Set(float64(n))
	}
	exposed := counts["exposed"]

	want := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Name: ConfigMapName(sts.Name), Namespace: sts.Namespace,
			Labels:          map[string]string{patches.LabelCluster: sts.Name, patches.LabelManagedBy: patches.ManagedByValue},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(sts, appsv1.SchemeGroupVersion.WithKind("StatefulSet"))},
		},
		Data: data,
	}
	current := &corev1.ConfigMap{}
	err := r.Client.Get(ctx, client.ObjectKeyFromObject(want), current)
	switch {
	case apierrors.IsNotFound(err):
		if created, err := r.createConfigMap(ctx, sts, want); !created {
			return err
		}
		current.Data = nil
	case err != nil:
		return fmt.Errorf("getting ConfigMap %s: %w", want.Name, err)
	case !isOurs(current.Labels, sts.Name):
		return r.configMapTaken(sts, want)
	case maps.Equal(current.Data, data):
		return nil
	default:
		before := current.Data
		current.Data = data
		if err := r.Client.Update(ctx, current); err != nil {
			return fmt.Errorf("updating ConfigMap %s: %w", want.Name, err)
		}
		current.Data = before
	}
	r.reportChanges(sts, cfg, current.Data[StatusKey], states, exposed)
	return nil
}

// Reachability gives the keys an external probe adds to a StatefulSet's ConfigMap
// ("<listener>.reachability", see webhook/probe); nil or empty adds none.
type Reachability interface {
	For(namespace, statefulSet string) map[string]string
}

// ProbeTargets is an in-cluster probe (webhook/probe) as the controller feeds it: Track hands it,
// each time a StatefulSet is published, exactly what its addresses were computed from; Forget
// says the StatefulSet is no longer brokerport's.
type ProbeTargets interface {
	Track(sts *appsv1.StatefulSet, cfg patches.Config, states []patches.BrokerState, nodes map[string]*corev1.Node)
	Forget(namespace, statefulSet string)
}

// mergeReachability adds the probe's keys, never over one of the addresses.
func (r *Reconciler) mergeReachability(sts *appsv1.StatefulSet, data map[string]string) {
	if r.Reachability == nil {
		return
	}
	for k, v := range r.Reachability.For(sts.Namespace, sts.Name) {
		if _, taken := data[k]; !taken {
			data[k] = v
		}
	}
}

// createConfigMap creates the ConfigMap. One of that name the cache does not show is either
// brokerport's own, created moments ago (by this or the previous leader; its arrival in the cache
// reconciles again), or someone else's, which is left alone and said.
func (r *Reconciler) createConfigMap(ctx context.Context, sts *appsv1.StatefulSet, want *corev1.ConfigMap) (created bool, err error) {
	err = r.Client.Create(ctx, want)
	if err == nil {
		return true, nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return false, fmt.Errorf("creating ConfigMap %s: %w", want.Name, err)
	}
	existing := &corev1.ConfigMap{}
	if err := r.API.Get(ctx, client.ObjectKeyFromObject(want), existing); err != nil {
		return false, fmt.Errorf("getting ConfigMap %s: %w", want.Name, err)
	}
	if isOurs(existing.Labels, sts.Name) {
		return false, nil
	}
	return false, r.configMapTaken(sts, want)
}

// configMapTaken says that a ConfigMap of the published name is someone else's, and leaves it.
func (r *Reconciler) configMapTaken(sts *appsv1.StatefulSet, want *corev1.ConfigMap) error {
	r.Events.Eventf(sts, nil, corev1.EventTypeWarning, "ConfigMapTaken", "Publish", "ConfigMap %s exists and is not brokerport's (no %s=%s and %s=%s labels): rename or delete it so that brokerport can publish the addresses", want.Name, patches.LabelCluster, sts.Name, patches.LabelManagedBy, patches.ManagedByValue)
	return reconcile.TerminalError(fmt.Errorf("ConfigMap %s/%s exists and is not brokerport's", want.Namespace, want.Name))
}

// reportChanges compares the new states with the status lines published before.
func (r *Reconciler) reportChanges(sts *appsv1.StatefulSet, cfg patches.Config, previousStatus string, states []patches.BrokerState, exposed int) {
	before := map[string]string{}
	for _, line := range strings.Split(previousStatus, "\n") {
		if pod, rest, ok := strings.Cut(line, " "); ok {
			before[pod] = rest
		}
	}
	allBefore := previousStatus != "" && !strings.Contains(previousStatus, "not exposed")
	for _, s := range states {
		if now := statusOf(s); !s.Exposed && !s.Transient && before[s.Pod] != now {
			r.Events.Eventf(sts, nil, corev1.EventTypeWarning, "BrokerNotExposed", "Publish", "broker %s is not exposed: %s", s.Pod, s.Reason)
		}
	}
	if exposed == len(states) && !allBefore {
		how := fmt.Sprintf("on ports %s", cfg.Block())
		if cfg.LoadBalanced() {
			how = "through their load balancers"
		}
		r.Events.Eventf(sts, nil, corev1.EventTypeNormal, "Exposed", "Publish", "all %d brokers exposed %s; addresses in ConfigMap %s", len(states), how, ConfigMapName(sts.Name))
	}
}

// brokerState is a broker's state for the metric: exposed, pending (coming, going or rolling)
// or failed (a fault the status key names).
func brokerState(s patches.BrokerState) string {
	switch {
	case s.Exposed:
		return "exposed"
	case s.Transient:
		return "pending"
	}
	return "failed"
}

func statusOf(s patches.BrokerState) string {
	if s.Exposed {
		return statusExposed
	}
	return "not exposed: " + s.Reason
}

// Addresses is the published data: for each listener L, "L.addresses" (one "pod host:port" line
// per broker reachable on it) and "L.bootstrap.servers"; "bootstrap.servers" is the first
// listener's; "status" has one line per broker saying whether it is exposed, and why not.
func Addresses(cfg patches.Config, states []patches.BrokerState) map[string]string {
	data := map[string]string{}
	for l, listener := range cfg.Listeners {
		var lines, servers []string
		for _, s := range states {
			if addr := s.Address(l); addr != "" {
				lines = append(lines, s.Pod+" "+addr)
				servers = append(servers, addr)
			}
		}
		data[listener.Name+".addresses"] = strings.Join(lines, "\n")
		data[listener.Name+".bootstrap.servers"] = strings.Join(servers, ",")
		if l == 0 {
			data["bootstrap.servers"] = strings.Join(servers, ",")
		}
	}
	status := make([]string, 0, len(states))
	for _, s := range states {
		status = append(status, s.Pod+" "+statusOf(s))
	}
	data[StatusKey] = strings.Join(status, "\n")
	return data
}

// Describe prints a published ConfigMap for people: bootstrap.servers, each listener's brokers,
// then the brokers that are not exposed and why.
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
	var notExposed []string
	for _, line := range strings.Split(cm.Data[StatusKey], "\n") {
		if pod, rest, _ := strings.Cut(line, " "); rest != statusExposed && line != "" {
			notExposed = append(notExposed, fmt.Sprintf("  %s %s\n", pod, rest))
		}
	}
	if len(notExposed) > 0 {
		fmt.Fprintf(&b, "\nnot exposed:\n%s", strings.Join(notExposed, ""))
	}
	return b.String()
}
