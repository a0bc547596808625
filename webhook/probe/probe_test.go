package probe

import (
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
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

// fixture: two kfake brokers (Kafka listener) and two plain TCP listeners (admin), published in
// ConfigMap rp-external of StatefulSet ns/rp.
type fixture struct {
	prober  *Prober
	events  *events.FakeRecorder
	kafka   []*relabeled
	admin   []net.Listener
	cluster *kfake.Cluster
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{events: events.NewFakeRecorder(100)}
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
	var kafkaLines, adminLines, servers []string
	for i, k := range f.kafka {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		t.Cleanup(func() { ln.Close() })
		go acceptAndClose(ln)
		f.admin = append(f.admin, ln)
		pod := []string{"rp-0", "rp-1"}[i]
		kafkaLines = append(kafkaLines, pod+" "+k.Listener.Addr().String())
		adminLines = append(adminLines, pod+" "+ln.Addr().String())
		servers = append(servers, k.Listener.Addr().String())
	}
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "rp",
		Labels:      map[string]string{patches.LabelExpose: patches.ExposeValue},
		Annotations: map[string]string{patches.AnnotationListeners: "kafka=9094,admin=9644", patches.AnnotationPortBase: "30000", patches.AnnotationMaxBrokers: "2"}}}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "rp-external", Labels: map[string]string{patches.LabelCluster: "rp"}},
		Data: map[string]string{
			"bootstrap.servers": strings.Join(servers, ","), "kafka.bootstrap.servers": strings.Join(servers, ","),
			"kafka.addresses": strings.Join(kafkaLines, "\n"), "admin.addresses": strings.Join(adminLines, "\n"),
			"admin.bootstrap.servers": "x", "status": "rp-0 exposed\nrp-1 exposed",
		}}
	other := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "web"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80, NodePort: 30050}}}}
	reader := fake.NewClientBuilder().WithScheme(webhook.Scheme()).WithObjects(sts, cm, other).Build()
	f.prober = &Prober{Reader: reader, Events: f.events, Options: patches.DefaultOptions(), Period: 2 * time.Second, Concurrency: 2}
	return f
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
	return value(reachableGauge.WithLabelValues("ns", "rp", pod, listener))
}

func TestProber(t *testing.T) {
	f := newFixture(t)

	f.round(t)
	for _, pod := range []string{"rp-0", "rp-1"} {
		for _, l := range []string{"kafka", "admin"} {
			assert.Equal(t, 1.0, reachable(pod, l), "%s %s", pod, l)
		}
		assert.Equal(t, 0.0, value(mismatchGauge.WithLabelValues("ns", "rp", pod, "kafka")))
	}
	assert.Empty(t, f.drainEvents(), "a healthy first round says nothing")
	assert.Equal(t, map[string]string{
		"kafka.reachability": "rp-0 reachable\nrp-1 reachable",
		"admin.reachability": "rp-0 reachable\nrp-1 reachable",
	}, f.prober.For("ns", "rp"))
	assert.Equal(t, 81.0, value(portsFree.WithLabelValues("30000-30085")), "86 ports less rp's block 30000-30003 and web's nodePort 30050")
	assert.Len(t, f.prober.Changes(), 1, "the first keys are a change")
	<-f.prober.Changes()

	t.Run("a closed listener is unreachable, said once", func(t *testing.T) {
		addr := f.admin[1].Addr().String()
		require.NoError(t, f.admin[1].Close())
		f.round(t)
		assert.Equal(t, 0.0, reachable("rp-1", "admin"))
		assert.Equal(t, 1.0, reachable("rp-0", "admin"))
		evs := f.drainEvents()
		require.Len(t, evs, 1)
		assert.Contains(t, evs[0], "Warning BrokerUnreachable broker rp-1 is unreachable on listener admin at its published address "+addr+": connection refused")
		assert.Contains(t, f.prober.For("ns", "rp")["admin.reachability"], "rp-1 unreachable: connection refused")
		assert.Len(t, f.prober.Changes(), 1)
		<-f.prober.Changes()

		f.round(t)
		assert.Empty(t, f.drainEvents(), "still down: nothing new to say")
		assert.Empty(t, f.prober.Changes(), "same keys: no reconcile")
	})

	t.Run("a broker advertising another port is named", func(t *testing.T) {
		real := f.kafka[0].Listener.Addr().(*net.TCPAddr)
		wrong := net.JoinHostPort("127.0.0.1", "1") // same host, wrong port
		f.kafka[0].advertised.Store(&wrong)
		f.round(t)
		assert.Equal(t, 0.0, reachable("rp-0", "kafka"))
		assert.Equal(t, 1.0, value(mismatchGauge.WithLabelValues("ns", "rp", "rp-0", "kafka")))
		evs := f.drainEvents()
		require.Len(t, evs, 1)
		assert.Contains(t, evs[0], "Warning BrokerAdvertisesOther broker rp-0 answers on listener kafka at its published address "+real.String()+" but advertises 127.0.0.1:1")
		// Every broker's Metadata lists rp-0's wrong address: only rp-0 is wrong.
		assert.Equal(t, 1.0, reachable("rp-1", "kafka"))
		assert.Equal(t, "rp-0 advertises 127.0.0.1:1\nrp-1 reachable", f.prober.For("ns", "rp")["kafka.reachability"])

		f.kafka[0].advertised.Store(nil)
		f.round(t)
		evs = f.drainEvents()
		require.Len(t, evs, 1)
		assert.Contains(t, evs[0], "Normal BrokerReachable broker rp-0 is reachable again on listener kafka")
		assert.Equal(t, 0.0, value(mismatchGauge.WithLabelValues("ns", "rp", "rp-0", "kafka")))
	})

	t.Run("a StatefulSet gone takes its series and keys", func(t *testing.T) {
		for len(f.prober.Changes()) > 0 {
			<-f.prober.Changes()
		}
		require.NoError(t, f.prober.Reader.(interface {
			DeleteAllOf(context.Context, client.Object, ...client.DeleteAllOfOption) error
		}).DeleteAllOf(context.Background(), &appsv1.StatefulSet{}, client.InNamespace("ns")))
		f.round(t)
		assert.Nil(t, f.prober.For("ns", "rp"))
		assert.Equal(t, 0, count(reachableGauge))
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

// TestProberRace reads For while rounds run (go test -race).
func TestProberRace(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			_ = f.prober.For("ns", "rp")
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

func count(c prometheus.Collector) int {
	ch := make(chan prometheus.Metric)
	go func() { c.Collect(ch); close(ch) }()
	n := 0
	for range ch {
		n++
	}
	return n
}
