// Package probe checks, from the elected replica, that every broker answers at the addresses
// brokerport computed and published for it, and says so in metrics, Events and the ConfigMap.
//
// The controller hands the probe, each time it publishes a StatefulSet, what it computed the
// published addresses from (Track; Forget once the StatefulSet is no longer brokerport's). The
// probe reads no ConfigMap and dials nothing else, and of those addresses only the ones whose host
// and port brokerport chose (targets.go). Each period (jittered), for each broker, it dials each
// listener's address in turn (so at most one connection per broker at a time, Concurrency brokers
// at once): the first listener (the Kafka API) is asked ApiVersions and Metadata on PLAINTEXT,
// ApiVersions only on SASL_PLAINTEXT, and only connected to on TLS; the other listeners (HTTP:
// admin API, proxy, schema registry) are only connected to. The Metadata response must list the
// dialed address among the brokers: a broker that answers there but advertises something else
// sends every client elsewhere, and is named as such.
//
// A round ends within one period whatever the black holes: the addresses it did not reach in time
// (or past MaxAddressesPerRound) are said not probed, and go first in the next round. What the
// probe says never repeats what a listener answered, unless it is an address brokerport computed
// for that StatefulSet (verdict.go).
//
// The probe writes nothing to the API server but Events; the ConfigMap's reachability keys are
// written by the controller, which asks For when it publishes and is told of changes through
// Changes.
package probe

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/brokerport/brokerport/patches"
)

var (
	reachableGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "brokerport_broker_reachable",
		Help: "1 when the broker answered at its published address on the listener at the last probe (for the Kafka listener: and advertises that address), else 0. No series for an address the probe does not dial (the ConfigMap's reachability line says why).",
	}, []string{"namespace", "statefulset", "broker", "listener"})
	mismatchGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "brokerport_broker_advertised_mismatch",
		Help: "1 when the broker answers at its published Kafka address but advertises another address, else 0 (Kafka listeners probed with Metadata only).",
	}, []string{"namespace", "statefulset", "broker", "listener"})
	probeDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "brokerport_probe_duration_seconds",
		Help:    "Time to connect to a published broker address and, for the Kafka listener, to be answered, by probe mode (tcp, kafka-apiversions, kafka) and result (reachable, unreachable, mismatch).",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	}, []string{"mode", "result"})
	portsFree = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "brokerport_ports_free",
		Help: "Ports of the band (--port-range) held by no opted-in StatefulSet's block and no Service's nodePort, as the cache sees them.",
	}, []string{"band"})
)

func init() {
	metrics.Registry.MustRegister(reachableGauge, mismatchGauge, probeDuration, portsFree)
}

// Defaults.
const (
	DefaultPeriod      = 30 * time.Second
	DefaultConcurrency = 8
	// maxTimeout bounds one address's probe; a shorter period shortens it to half a period.
	maxTimeout = 5 * time.Second
)

// Prober is a manager Runnable that needs leader election.
type Prober struct {
	// Reader is the manager's cache: opted-in StatefulSets and Services are read from it to count
	// the band's free ports (brokerport_ports_free), nothing else; nil counts none.
	Reader client.Reader
	Events events.EventRecorder
	// Options are brokerport's: the band whose free ports are counted, and ParseConfig's.
	Options patches.Options
	// Period between rounds (jittered), and the longest a round lasts; 0 or less turns the probe
	// off (a Round called on its own then lasts at most DefaultPeriod).
	Period time.Duration
	// Concurrency is the number of brokers probed at once (default DefaultConcurrency).
	Concurrency int
	// Dial connects (default: a net.Dialer).
	Dial DialFunc
	// HostTemplates also dials hosts made by a StatefulSet's brokerport.io/host-template (serve
	// --probe-host-templates). Off by default: such a host is the StatefulSet's author's choice,
	// and the probe would dial it from brokerport's place in the network.
	HostTemplates bool

	mu      sync.Mutex
	targets map[types.NamespacedName]*targetSet
	results map[types.NamespacedName]*published
	// behind are the brokers the last round did not reach (its time or its cap ran out): the next
	// round starts with them, so that no broker goes unprobed round after round.
	behind   map[brokerKey]bool
	changes  chan event.GenericEvent
	initOnce sync.Once
}

// published is the last round's verdicts for one StatefulSet.
type published struct {
	// verdicts are the round's, "not probed" included: what the keys say.
	verdicts map[Target]Verdict
	// probed is each address's last verdict from a probe: what Events and metrics follow.
	probed map[Target]Verdict
	keys   map[string]string
}

type brokerKey struct {
	sts types.NamespacedName
	pod string
}

func (p *Prober) init() {
	p.initOnce.Do(func() {
		p.targets = map[types.NamespacedName]*targetSet{}
		p.results = map[types.NamespacedName]*published{}
		// Buffered, and never waited on: a change that finds it full is published with the
		// StatefulSet's next reconcile.
		p.changes = make(chan event.GenericEvent, 64)
	})
}

// NeedLeaderElection: only the elected replica probes, as only it publishes.
func (p *Prober) NeedLeaderElection() bool { return true }

// Changes carries each StatefulSet whose reachability keys changed, for a controller's channel
// source (source.Channel(p.Changes(), &handler.EnqueueRequestForObject{})).
func (p *Prober) Changes() <-chan event.GenericEvent {
	p.init()
	return p.changes
}

// Track sets what the probe dials for a StatefulSet: the controller calls it each time it
// publishes the StatefulSet, with what it computed the published addresses from (its
// configuration, its brokers' states and their nodes). Rounds dial those addresses, as far as
// brokerport chose them (targets.go), and nothing else, until the next Track or Forget.
func (p *Prober) Track(sts *appsv1.StatefulSet, cfg patches.Config, states []patches.BrokerState, nodes map[string]*corev1.Node) {
	set := newTargetSet(sts, cfg, states, nodes, p.HostTemplates)
	p.init()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.targets[client.ObjectKeyFromObject(sts)] = set
}

// Forget stops probing a StatefulSet: the next round drops its series and keys.
func (p *Prober) Forget(namespace, name string) {
	p.init()
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.targets, types.NamespacedName{Namespace: namespace, Name: name})
}

// For is the reachability keys of StatefulSet namespace/name to publish in its ConfigMap, nil
// when it has not been probed (or the probe is off). It never waits on a probe.
func (p *Prober) For(namespace, name string) map[string]string {
	if p == nil {
		return nil
	}
	p.init()
	p.mu.Lock()
	defer p.mu.Unlock()
	if r := p.results[types.NamespacedName{Namespace: namespace, Name: name}]; r != nil {
		return maps.Clone(r.keys)
	}
	return nil
}

// Start probes every period until ctx ends.
func (p *Prober) Start(ctx context.Context) error {
	p.init()
	if p.Period <= 0 {
		return nil
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))
	// The first round waits too: the caches are synced, but the controller may not have
	// published since this replica was elected.
	timer := time.NewTimer(Jitter(p.Period, rng))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		if err := p.Round(ctx); err != nil {
			logf.FromContext(ctx).Error(err, "probing brokers")
		}
		timer.Reset(Jitter(p.Period, rng))
	}
}

// period is how long a round may last, and sets each address's timeout.
func (p *Prober) period() time.Duration {
	if p.Period > 0 {
		return p.Period
	}
	return DefaultPeriod
}

// job is one broker's addresses, probed in turn.
type job struct {
	key    types.NamespacedName
	set    *targetSet
	broker int // index in set.brokers
	// verdicts are per listener of set; a probe replaces notReached.
	verdicts []Verdict
}

// Verdicts of the addresses a round did not dial.
var (
	notReached   = Verdict{State: NotProbed, Reason: "the round's time (one period) ran out first; first in the next round", later: true}
	pastRoundCap = Verdict{State: NotProbed, Reason: fmt.Sprintf("past the %d addresses a round dials; first in the next round", MaxAddressesPerRound), later: true}
)

// Round probes every tracked address once, within one period, and reports.
func (p *Prober) Round(ctx context.Context) error {
	p.init()
	countErr := p.countFreePorts(ctx)
	p.mu.Lock()
	sets := maps.Clone(p.targets)
	behind := p.behind
	p.mu.Unlock()

	jobs, left := plan(sets, behind)
	rctx, cancel := context.WithTimeout(ctx, p.period())
	p.run(rctx, jobs)
	cancel()
	if ctx.Err() != nil {
		return nil // a round cut short (brokerport stopping) says nothing
	}

	verdicts := make(map[types.NamespacedName]map[Target]Verdict, len(sets))
	for key, set := range sets {
		now := map[Target]Verdict{}
		for _, b := range set.brokers {
			if b.skip == "" {
				continue // a job's
			}
			for l, a := range b.addrs {
				if a != "" {
					now[Target{Pod: b.pod, Listener: set.listeners[l].name}] = Verdict{State: NotProbed, Reason: b.skip}
				}
			}
		}
		verdicts[key] = now
	}
	nextBehind := map[brokerKey]bool{}
	notReachedCount := 0
	for _, j := range slices.Concat(jobs, left) {
		b := j.set.brokers[j.broker]
		for l, a := range b.addrs {
			if a == "" {
				continue
			}
			v := j.verdicts[l]
			if v.later {
				nextBehind[brokerKey{sts: j.key, pod: b.pod}] = true
				notReachedCount++
			}
			verdicts[j.key][Target{Pod: b.pod, Listener: j.set.listeners[l].name}] = v
		}
	}
	if notReachedCount > 0 {
		logf.FromContext(ctx).Info("probe round ended with addresses not probed; they go first in the next round",
			"notProbed", notReachedCount, "period", p.period(), "maxAddressesPerRound", MaxAddressesPerRound)
	}
	p.report(sets, verdicts, nextBehind)
	return countErr
}

// plan is a round's jobs, one per broker to dial: those the last round did not reach first, then
// by StatefulSet and ordinal. run are within MaxAddressesPerRound; left, those past it, are not
// dialed this round.
func plan(sets map[types.NamespacedName]*targetSet, behind map[brokerKey]bool) (run, left []*job) {
	var first, rest []*job
	for _, key := range slices.SortedFunc(maps.Keys(sets), cmpKey) {
		set := sets[key]
		for i, b := range set.brokers {
			if b.skip != "" {
				continue
			}
			j := &job{key: key, set: set, broker: i, verdicts: make([]Verdict, len(set.listeners))}
			for l := range j.verdicts {
				j.verdicts[l] = notReached
			}
			if behind[brokerKey{sts: key, pod: b.pod}] {
				first = append(first, j)
			} else {
				rest = append(rest, j)
			}
		}
	}
	addresses := 0
	for _, j := range slices.Concat(first, rest) {
		n := 0
		for _, a := range j.set.brokers[j.broker].addrs {
			if a != "" {
				n++
			}
		}
		if len(left) > 0 || addresses+n > MaxAddressesPerRound {
			for l := range j.verdicts {
				j.verdicts[l] = pastRoundCap
			}
			left = append(left, j)
			continue
		}
		addresses += n
		run = append(run, j)
	}
	return run, left
}

// run probes the jobs, Concurrency at a time, until ctx (the round) ends.
func (p *Prober) run(ctx context.Context, jobs []*job) {
	dial := p.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	timeout := min(maxTimeout, p.period()/2)
	workers := p.Concurrency
	if workers <= 0 {
		workers = DefaultConcurrency
	}
	queue := make(chan *job)
	var wg sync.WaitGroup
	for range min(workers, len(jobs)) {
		wg.Go(func() {
			for j := range queue {
				probeBroker(ctx, dial, timeout, j)
			}
		})
	}
feed:
	for _, j := range jobs {
		select {
		case queue <- j:
		case <-ctx.Done():
			break feed
		}
	}
	close(queue)
	wg.Wait()
}

// probeBroker dials a broker's addresses in turn, until the round ends.
func probeBroker(ctx context.Context, dial DialFunc, timeout time.Duration, j *job) {
	b := j.set.brokers[j.broker]
	for l, addr := range b.addrs {
		if addr == "" {
			continue
		}
		listener := j.set.listeners[l]
		actx, cancel := context.WithTimeout(ctx, timeout)
		obs := Observe(actx, dial, addr, listener.mode)
		cancel()
		if ctx.Err() != nil {
			return // the round ended first: what was seen says nothing of the broker
		}
		v := judgeInCluster(addr, listener.mode, obs, listener.peers, j.set.own)
		j.verdicts[l] = v
		probeDuration.WithLabelValues(listener.mode.String(), result(v)).Observe(obs.Latency.Seconds())
	}
}

func result(v Verdict) string {
	switch v.State {
	case Unreachable:
		return "unreachable"
	case Mismatch:
		return "mismatch"
	}
	return "reachable"
}

// report sets the metrics, says transitions on the StatefulSets, and keeps the keys For gives.
// An address not probed has no series, unless the round only ran out before it: then its last
// probe's verdict and series stand.
func (p *Prober) report(sets map[types.NamespacedName]*targetSet, verdicts map[types.NamespacedName]map[Target]Verdict, behind map[brokerKey]bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.behind = behind
	for key, before := range p.results {
		for t := range before.verdicts {
			if _, still := verdicts[key][t]; !still {
				reachableGauge.DeleteLabelValues(key.Namespace, key.Name, t.Pod, t.Listener)
				mismatchGauge.DeleteLabelValues(key.Namespace, key.Name, t.Pod, t.Listener)
			}
		}
		if _, still := verdicts[key]; !still {
			delete(p.results, key)
			if len(before.keys) > 0 {
				p.notify(nil, key)
			}
		}
	}
	for key, now := range verdicts {
		set := sets[key]
		before := p.results[key]
		if before == nil {
			before = &published{}
		}
		probed := make(map[Target]Verdict, len(now))
		pods := make([]string, 0, len(set.brokers))
		for _, b := range set.brokers {
			pods = append(pods, b.pod)
			for l, addr := range b.addrs {
				t := Target{Pod: b.pod, Listener: set.listeners[l].name}
				v, ok := now[t]
				if addr == "" || !ok {
					continue
				}
				old, known := before.probed[t]
				if v.State == NotProbed {
					if v.later && known {
						probed[t] = old
					} else {
						reachableGauge.DeleteLabelValues(key.Namespace, key.Name, t.Pod, t.Listener)
						mismatchGauge.DeleteLabelValues(key.Namespace, key.Name, t.Pod, t.Listener)
					}
					continue
				}
				probed[t] = v
				reachableGauge.WithLabelValues(key.Namespace, key.Name, t.Pod, t.Listener).Set(boolValue(v.State == Reachable))
				if set.listeners[l].mode == KafkaMetadata {
					mismatchGauge.WithLabelValues(key.Namespace, key.Name, t.Pod, t.Listener).Set(boolValue(v.State == Mismatch))
				}
				if e, ok := Transition(t.Pod, t.Listener, addr, old, known, v); ok && p.Events != nil {
					p.Events.Eventf(set.sts, nil, e.Type, e.Reason, "Probe", "%s", e.Message)
				}
			}
		}
		names := make([]string, len(set.listeners))
		for l, listener := range set.listeners {
			names[l] = listener.name
		}
		keys := ReachabilityKeys(names, pods, now)
		p.results[key] = &published{verdicts: now, probed: probed, keys: keys}
		if !maps.Equal(before.keys, keys) {
			p.notify(set.sts, key)
		}
	}
}

// notify tells the controller, without waiting, that a StatefulSet's keys changed.
func (p *Prober) notify(sts *appsv1.StatefulSet, key types.NamespacedName) {
	if sts == nil {
		sts = &appsv1.StatefulSet{}
		sts.Namespace, sts.Name = key.Namespace, key.Name
	}
	select {
	case p.changes <- event.GenericEvent{Object: sts}:
	default:
	}
}

// countFreePorts sets brokerport_ports_free for the band.
func (p *Prober) countFreePorts(ctx context.Context) error {
	if p.Reader == nil {
		return nil
	}
	var sets appsv1.StatefulSetList
	if err := p.Reader.List(ctx, &sets, client.MatchingLabels{patches.LabelExpose: patches.ExposeValue}); err != nil {
		return fmt.Errorf("listing opted-in StatefulSets: %w", err)
	}
	var services corev1.ServiceList
	if err := p.Reader.List(ctx, &services); err != nil {
		return fmt.Errorf("listing Services: %w", err)
	}
	var held []patches.PortRange
	for _, sts := range sets.Items {
		if cfg, errs := patches.ParseConfig(sts.Annotations, nil, p.Options); len(errs) == 0 && cfg.HoldsBlock() {
			held = append(held, cfg.Block())
		}
	}
	for _, svc := range services.Items {
		for _, port := range svc.Spec.Ports {
			if port.NodePort != 0 {
				held = append(held, patches.PortRange{First: port.NodePort, Last: port.NodePort})
			}
		}
	}
	band := p.Options.PortRange
	portsFree.WithLabelValues(band.String()).Set(float64(FreePorts(band, held)))
	return nil
}

func cmpKey(a, b types.NamespacedName) int {
	return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
