package probe

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/brokerport/brokerport/patches"
	"github.com/brokerport/brokerport/webhook"
)

// relabeled is a listener whose advertised address (what kfake puts in Metadata responses) can
// be changed while it runs.
type relabeled struct {
	net.Listener
	advertised atomic.Pointer[string]
}

func (l *relabeled) Addr() net.Addr {
	if a := l.advertised.Load(); a != nil {
		return textAddr(*a)
	}
	return l.Listener.Addr()
}

type textAddr string

func (a textAddr) Network() string { return "tcp" }
func (a textAddr) String() string  { return string(a) }

// fixture: two kfake brokers (Kafka listener) and two plain TCP listeners (admin), the brokers of
// StatefulSet fixture/rp as the controller hands them to the probe: on nodes 10.1.0.1 and 10.1.0.2,
// block 30000, which the probe's Dial routes to the test's listeners.
type fixture struct {
	prober   *Prober
	events   *events.FakeRecorder
	kafka    []*relabeled
	admin    []net.Listener
	cluster  *kfake.Cluster
	computed computed
	router   *router
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{events: events.NewFakeRecorder(100), router: newRouter()}
	var mu sync.Mutex
	cluster, err := kfake.NewCluster(kfake.NumBrokers(2), kfake.ListenFn(func(network, _ string) (net.Listener, error) {
		ln, err := net.Listen(network, "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		mu.Lock()
		defer mu.Unlock()
		r := &relabeled{Listener: ln}
		f.kafka = append(f.kafka, r)
		return r, nil
	}))
	require.NoError(t, err)
	t.Cleanup(cluster.Close)
	f.cluster = cluster
	f.computed = newComputed(t, "rp", 2, 30000, "kafka=9094,admin=9644", func(i int) string { return fmt.Sprintf("10.1.0.%d", i+1) })
	f.computed.sts.Namespace = "fixture" // the metrics are the package's: apart from other tests'
	for i, k := range f.kafka {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		t.Cleanup(func() { ln.Close() })
		go acceptAndClose(ln)
		f.admin = append(f.admin, ln)
		s := f.computed.states[i]
		kafkaAddr := s.Address(0)
		k.advertised.Store(&kafkaAddr) // the broker advertises what brokerport computed
		f.router.route(kafkaAddr, k.Listener.Addr().String())
		f.router.route(s.Address(1), ln.Addr().String())
	}
	other := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "web"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80, NodePort: 30050}}}}
	reader := fake.NewClientBuilder().WithScheme(webhook.Scheme()).WithObjects(f.computed.sts, other).Build()
	f.prober = &Prober{Reader: reader, Events: f.events, Options: patches.DefaultOptions(), Period: 2 * time.Second, Concurrency: 2, Dial: f.router.dial}
	f.track()
	return f
}

// track hands the probe the StatefulSet's brokers, as the controller does when it publishes.
func (f *fixture) track() {
	c := f.computed
	f.prober.Track(c.sts, c.cfg, c.states, c.nodes)
}

func acceptAndClose(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

func (f *fixture) round(t *testing.T) {
	t.Helper()
	require.NoError(t, f.prober.Round(context.Background()))
}

func (f *fixture) drainEvents() []string {
	var out []string
	for {
		select {
		case e := <-f.events.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func reachable(pod, listener string) float64 {
	return value(reachableGauge.WithLabelValues("fixture", "rp", pod, listener))
}

func TestProber(t *testing.T) {
	f := newFixture(t)

	f.round(t)
	for _, pod := range []string{"rp-0", "rp-1"} {
		for _, l := range []string{"kafka", "admin"} {
			assert.Equal(t, 1.0, reachable(pod, l), "%s %s", pod, l)
		}
		assert.Equal(t, 0.0, value(mismatchGauge.WithLabelValues("fixture", "rp", pod, "kafka")))
	}
	assert.Empty(t, f.drainEvents(), "a healthy first round says nothing")
	assert.Equal(t, map[string]string{
		"kafka.reachability": "rp-0 reachable\nrp-1 reachable",
		"admin.reachability": "rp-0 reachable\nrp-1 reachable",
	}, f.prober.For("fixture", "rp"))
	assert.Equal(t, 81.0, value(portsFree.WithLabelValues("30000-30085")), "86 ports less rp's block 30000-30003 and web's nodePort 30050")
	assert.Len(t, f.prober.Changes(), 1, "the first keys are a change")
	<-f.prober.Changes()

	t.Run("a closed listener is unreachable, said once", func(t *testing.T) {
		addr := f.computed.states[1].Address(1)
		require.NoError(t, f.admin[1].Close())
		f.round(t)
		assert.Equal(t, 0.0, reachable("rp-1", "admin"))
		assert.Equal(t, 1.0, reachable("rp-0", "admin"))
		evs := f.drainEvents()
		require.Len(t, evs, 1)
		assert.Contains(t, evs[0], "Warning BrokerUnreachable broker rp-1 is unreachable on listener admin at its published address "+addr+": connection refused")
		assert.Contains(t, f.prober.For("fixture", "rp")["admin.reachability"], "rp-1 unreachable: connection refused")
		assert.Len(t, f.prober.Changes(), 1)
		<-f.prober.Changes()

		f.round(t)
		assert.Empty(t, f.drainEvents(), "still down: nothing new to say")
		assert.Empty(t, f.prober.Changes(), "same keys: no reconcile")
	})

	t.Run("a broker advertising another port is said, the port not repeated", func(t *testing.T) {
		published := f.computed.states[0].Address(0)
		wrong := net.JoinHostPort("10.1.0.1", "1") // same host, wrong port
		f.kafka[0].advertised.Store(&wrong)
		f.round(t)
		assert.Equal(t, 0.0, reachable("rp-0", "kafka"))
		assert.Equal(t, 1.0, value(mismatchGauge.WithLabelValues("fixture", "rp", "rp-0", "kafka")))
		evs := f.drainEvents()
		require.Len(t, evs, 1)
		assert.Contains(t, evs[0], "Warning BrokerAdvertisesOther broker rp-0 answers on listener kafka at its published address "+published+" but advertises an address brokerport did not publish for it")
		assert.NotContains(t, evs[0], wrong)
		// Every broker's Metadata lists rp-0's wrong address: only rp-0 is wrong.
		assert.Equal(t, 1.0, reachable("rp-1", "kafka"))
		assert.Equal(t, "rp-0 advertises "+unpublished+"\nrp-1 reachable", f.prober.For("fixture", "rp")["kafka.reachability"])

		f.kafka[0].advertised.Store(&published)
		f.round(t)
		evs = f.drainEvents()
		require.Len(t, evs, 1)
		assert.Contains(t, evs[0], "Normal BrokerReachable broker rp-0 is reachable again on listener kafka")
		assert.Equal(t, 0.0, value(mismatchGauge.WithLabelValues("fixture", "rp", "rp-0", "kafka")))
	})

	t.Run("a broker brokerport stops dialing takes its series, and its line says why", func(t *testing.T) {
		for len(f.prober.Changes()) > 0 {
			<-f.prober.Changes()
		}
		c := f.computed
		states := slices.Clone(c.states)
		states[1].Host = "rp-1.brokers.example.com" // what a host template makes
		cfg := c.cfg
		tmpl, err := patches.ParseHostTemplate("{{.Node}}.brokers.example.com")
		require.NoError(t, err)
		cfg.HostTemplate = tmpl
		f.prober.Track(c.sts, cfg, states, c.nodes)
		f.round(t)
		assert.Equal(t, []string{"rp-0/admin", "rp-0/kafka"}, series(reachableGauge, "fixture", "rp"), "rp-1's series are gone")
		assert.Contains(t, f.prober.For("fixture", "rp")["kafka.reachability"], "rp-1 not probed: host from "+patches.AnnotationHostTemplate)
		assert.Empty(t, f.drainEvents(), "not probed: no Event (its line says it)")
		assert.Len(t, f.prober.Changes(), 1)
		f.track()
	})

	t.Run("a StatefulSet forgotten takes its series and keys", func(t *testing.T) {
		for len(f.prober.Changes()) > 0 {
			<-f.prober.Changes()
		}
		f.prober.Forget("fixture", "rp")
		f.round(t)
		assert.Nil(t, f.prober.For("fixture", "rp"))
		assert.Empty(t, series(reachableGauge, "fixture", "rp"))
		assert.Len(t, f.prober.Changes(), 1, "the controller is told, to drop the keys")
	})
}

func TestProberOff(t *testing.T) {
	p := &Prober{Period: 0}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Start(ctx) }()
	select {
	case err := <-done:
		assert.NoError(t, err, "--probe-period=0 returns at once, probing nothing")
	case <-ctx.Done():
		t.Fatal("Start with Period 0 did not return")
	}
	assert.Nil(t, p.For("ns", "rp"))
	assert.Nil(t, (*Prober)(nil).For("ns", "rp"))
	assert.True(t, p.NeedLeaderElection())
}

// TestProberRace reads For and tracks (as the controller does) while rounds run (go test -race).
func TestProberRace(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			_ = f.prober.For("fixture", "rp")
		}
	})
	wg.Go(func() {
		for ctx.Err() == nil {
			f.track()
			time.Sleep(time.Millisecond)
		}
	})
	for range 3 {
		f.round(t)
	}
	cancel()
	wg.Wait()
}

// TestObserveTimeout: a listener that accepts and never answers is unreachable within the
// probe's deadline, not hung.
func TestObserveTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	obs := Observe(ctx, (&net.Dialer{}).DialContext, ln.Addr().String(), KafkaMetadata)
	require.Error(t, obs.Err)
	assert.Equal(t, "kafka ApiVersions: no answer in time", obs.Err.Error())
	assert.Less(t, obs.Latency, 2*time.Second)
}

// value reads a gauge (prometheus' testutil would add a dependency).
func value(g prometheus.Gauge) float64 {
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		panic(err)
	}
	return m.GetGauge().GetValue()
}

// series are a StatefulSet's series of a metric, as "pod/listener", sorted (the metrics are the
// package's: other tests leave theirs).
func series(c prometheus.Collector, namespace, sts string) []string {
	ch := make(chan prometheus.Metric)
	go func() { c.Collect(ch); close(ch) }()
	var out []string
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			panic(err)
		}
		labels := map[string]string{}
		for _, l := range d.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["namespace"] == namespace && labels["statefulset"] == sts {
			out = append(out, labels["broker"]+"/"+labels["listener"])
		}
	}
	slices.Sort(out)
	return out
}
