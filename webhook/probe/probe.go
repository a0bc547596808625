// Package probe checks, from the elected replica, that every broker answers at the addresses
// brokerport published for it, and says so in metrics, Events and the ConfigMap.
//
// Each period (jittered) it reads every opted-in StatefulSet and its ConfigMap <sts>-external
// from the manager's cache and, for each broker, dials each listener's published address in turn
// (so at most one connection per broker at a time, Concurrency brokers at once): the first
// listener (the Kafka API) is asked ApiVersions and Metadata on PLAINTEXT, ApiVersions only on
// SASL_PLAINTEXT, and only connected to on TLS; the other listeners (HTTP: admin API, proxy,
// schema registry) are only connected to. The Metadata response must list the dialed address
// among the brokers: a broker that answers there but advertises something else sends every
// client elsewhere, and is named as such.
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
		Help: "1 when the broker answered at its published address on the listener at the last probe (for the Kafka listener: and advertises that address), else 0.",
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
	// Reader is the manager's cache: StatefulSets, ConfigMaps and Services are read from it.
	Reader client.Reader
	Events events.EventRecorder
	// Options are brokerport's: the band whose free ports are counted, and ParseConfig's.
	Options patches.Options
	// Period between rounds (jittered); 0 or less turns the probe off.
	Period time.Duration
	// Concurrency is the number of brokers probed at once (default DefaultConcurrency).
	Concurrency int
	// Dial connects (default: a net.Dialer).
	Dial DialFunc

	mu       sync.Mutex
	results  map[types.NamespacedName]*published
	changes  chan event.GenericEvent
	initOnce sync.Once
}

// published is the last round's verdicts for one StatefulSet.
type published struct {
	verdicts map[Target]Verdict
	keys     map[string]string
}

func (p *Prober) init() {
	p.initOnce.Do(func() {
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

// job is one broker's addresses, probed in turn.
type job struct {
	sts       types.NamespacedName
	pod       string
	listeners []string
	addresses []string
	modes     []Mode
	peers     [][]string // every broker's address on the same listener
	verdicts  []Verdict
}

// Round probes every published address once and reports.
func (p *Prober) Round(ctx context.Context) error {
	p.init()
	var sets appsv1.StatefulSetList
	if err := p.Reader.List(ctx, &sets, client.MatchingLabels{patches.LabelExpose: patches.ExposeValue}); err != nil {
		return fmt.Errorf("listing opted-in StatefulSets: %w", err)
	}
	var services corev1.ServiceList
	if err := p.Reader.List(ctx, &services); err != nil {
		return fmt.Errorf("listing Services: %w", err)
	}
	p.countFreePorts(sets.Items, services.Items)

	byName := map[types.NamespacedName]*appsv1.StatefulSet{}
	pubs := map[types.NamespacedName]Published{}
	modes := map[types.NamespacedName]map[string]Mode{}
	var jobs []*job
	for i := range sets.Items {
		sts := &sets.Items[i]
		key := client.ObjectKeyFromObject(sts)
		cfg, errs := patches.ParseConfig(sts.Annotations, nil, p.Options)
		if len(errs) > 0 || !cfg.Configured() {
			continue
		}
		cm := &corev1.ConfigMap{}
		if err := p.Reader.Get(ctx, client.ObjectKey{Namespace: sts.Namespace, Name: sts.Name + "-external"}, cm); err != nil || cm.Labels[patches.LabelCluster] != sts.Name {
			continue // not published yet (or not brokerport's)
		}
		pub := ParsePublished(cm.Data)
		byName[key], pubs[key], modes[key] = sts, pub, map[string]Mode{}
		for _, l := range pub.Listeners {
			if i := slices.IndexFunc(cfg.Listeners, func(c patches.Listener) bool { return c.Name == l }); i >= 0 {
				modes[key][l] = ModeOf(i, cfg.SecurityProtocol)
			}
		}
		for _, b := range pub.Brokers {
			j := &job{sts: key, pod: b.Pod}
			for _, l := range pub.Listeners {
				mode, known := modes[key][l]
				if addr := b.Addresses[l]; addr != "" && known {
					j.listeners, j.addresses, j.modes = append(j.listeners, l), append(j.addresses, addr), append(j.modes, mode)
					j.peers = append(j.peers, pub.All(l))
				}
			}
			if len(j.addresses) > 0 {
				jobs = append(jobs, j)
			}
		}
	}

	p.run(ctx, jobs)
	if ctx.Err() != nil {
		return nil // a round cut short says nothing
	}

	verdicts := map[types.NamespacedName]map[Target]Verdict{}
	addresses := map[types.NamespacedName]map[Target]string{}
	for _, j := range jobs {
		if verdicts[j.sts] == nil {
			verdicts[j.sts], addresses[j.sts] = map[Target]Verdict{}, map[Target]string{}
		}
		for i, l := range j.listeners {
			verdicts[j.sts][Target{Pod: j.pod, Listener: l}] = j.verdicts[i]
			addresses[j.sts][Target{Pod: j.pod, Listener: l}] = j.addresses[i]
		}
	}
	p.report(byName, pubs, modes, verdicts, addresses)
	return nil
}

// run probes the jobs, Concurrency at a time.
func (p *Prober) run(ctx context.Context, jobs []*job) {
	dial := p.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	timeout := maxTimeout
	if p.Period > 0 {
		timeout = min(timeout, p.Period/2)
	}
	workers := p.Concurrency
	if workers <= 0 {
		workers = DefaultConcurrency
	}
	queue := make(chan *job)
	var wg sync.WaitGroup
	for range min(workers, len(jobs)) {
		wg.Go(func() {
			for j := range queue {
				for i, addr := range j.addresses {
					actx, cancel := context.WithTimeout(ctx, timeout)
					obs := Observe(actx, dial, addr, j.modes[i])
					cancel()
					v := Judge(addr, j.modes[i], obs, j.peers[i])
					j.verdicts = append(j.verdicts, v)
					probeDuration.WithLabelValues(j.modes[i].String(), result(v)).Observe(obs.Latency.Seconds())
				}
			}
		})
	}
	for _, j := range jobs {
		select {
		case queue <- j:
		case <-ctx.Done():
		}
	}
	close(queue)
	wg.Wait()
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
func (p *Prober) report(sets map[types.NamespacedName]*appsv1.StatefulSet, pubs map[types.NamespacedName]Published,
	modes map[types.NamespacedName]map[string]Mode, verdicts map[types.NamespacedName]map[Target]Verdict, addresses map[types.NamespacedName]map[Target]string) {
	p.mu.Lock()
	defer p.mu.Unlock()
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
				p.notify(sets[key], key)
			}
		}
	}
	for key, now := range verdicts {
		sts := sets[key]
		before := p.results[key]
		if before == nil {
			before = &published{}
		}
		for _, t := range slices.SortedFunc(maps.Keys(now), cmpTarget) {
			v := now[t]
			reachableGauge.WithLabelValues(key.Namespace, key.Name, t.Pod, t.Listener).Set(boolValue(v.State == Reachable))
			if modes[key][t.Listener] == KafkaMetadata {
				mismatchGauge.WithLabelValues(key.Namespace, key.Name, t.Pod, t.Listener).Set(boolValue(v.State == Mismatch))
			}
			old, known := before.verdicts[t]
			if e, ok := Transition(t.Pod, t.Listener, addresses[key][t], old, known, v); ok && p.Events != nil {
				p.Events.Eventf(sts, nil, e.Type, e.Reason, "Probe", "%s", e.Message)
			}
		}
		keys := ReachabilityKeys(pubs[key], now)
		p.results[key] = &published{verdicts: now, keys: keys}
		if !maps.Equal(before.keys, keys) {
			p.notify(sts, key)
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
func (p *Prober) countFreePorts(sets []appsv1.StatefulSet, services []corev1.Service) {
	var held []patches.PortRange
	for _, sts := range sets {
		if cfg, errs := patches.ParseConfig(sts.Annotations, nil, p.Options); len(errs) == 0 && cfg.HoldsBlock() {
			held = append(held, cfg.Block())
		}
	}
	for _, svc := range services {
		for _, port := range svc.Spec.Ports {
			if port.NodePort != 0 {
				held = append(held, patches.PortRange{First: port.NodePort, Last: port.NodePort})
			}
		}
	}
	band := p.Options.PortRange
	portsFree.WithLabelValues(band.String()).Set(float64(FreePorts(band, held)))
}

func cmpTarget(a, b Target) int {
	return cmp.Or(strings.Compare(a.Pod, b.Pod), strings.Compare(a.Listener, b.Listener))
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
