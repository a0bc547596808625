//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/brokerport/brokerport/patches"
	"github.com/brokerport/brokerport/webhook"
	"github.com/brokerport/brokerport/webhook/controller"
	"github.com/brokerport/brokerport/webhook/probe"
)

const (
	probeNS  = "probe-e2e"
	probeSTS = "probed"
	// probeReporter tells this test's Events from those of the shared brokerport process, whose
	// own probe runs too (every 30 s).
	probeReporter = "brokerport-probe-e2e"
	probePeriod   = 2 * time.Second
)

// TestProbe runs the probe in this process with brokerport's ServiceAccount token (its real
// RBAC) against kfake brokers listening where brokerport published two brokers of StatefulSet
// probe-e2e/probed (Kafka listener and an "admin" HTTP listener, probed by TCP): all reachable,
// one listener closed, recovery, one broker advertising a wrong port; each seen in the metrics,
// the Events and `brokerport check --from-here`.
func TestProbe(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	convergeNamespace(t, ctx, probeNS, nil)
	labels := map[string]string{"app": probeSTS}
	require.NoError(t, env.admin.Create(ctx, &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: probeNS, Name: probeSTS,
			Labels: map[string]string{patches.LabelExpose: patches.ExposeValue},
			Annotations: map[string]string{patches.AnnotationListeners: "kafka=9094,admin=9644", patches.AnnotationMaxBrokers: "2",
				patches.AnnotationAddressTypes: "ExternalIP"}},
		Spec: appsv1.StatefulSetSpec{
			Replicas: ptrTo(int32(2)), Selector: &metav1.LabelSelector{MatchLabels: labels},
			PodManagementPolicy: appsv1.ParallelPodManagement,
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "redpanda", Image: "rp",
					Ports: []corev1.ContainerPort{{ContainerPort: 9094}, {ContainerPort: 9644}}}}}},
		},
	}))
	require.NoError(t, waitFor(ctx, 2*time.Minute, "the probed brokers published", func() error { return published(ctx, probeNS, probeSTS, 2) }))
	cm := &corev1.ConfigMap{}
	require.NoError(t, env.admin.Get(ctx, client.ObjectKey{Namespace: probeNS, Name: controller.ConfigMapName(probeSTS)}, cm))
	pub := probe.ParsePublished(cm.Data)
	require.Equal(t, []string{"kafka", "admin"}, pub.Listeners)
	require.Len(t, pub.Brokers, 2)
	// The block brokerport assigned (2 brokers x 2 listeners): the brokers this test listens as
	// never share a port with another test's.
	sts := &appsv1.StatefulSet{}
	require.NoError(t, env.admin.Get(ctx, client.ObjectKey{Namespace: probeNS, Name: probeSTS}, sts))
	base, err := strconv.Atoi(sts.Annotations[patches.AnnotationPortBase])
	require.NoError(t, err)
	for _, b := range pub.Brokers {
		for _, addr := range b.Addresses {
			_, portText, _ := net.SplitHostPort(addr)
			port, _ := strconv.Atoi(portText)
			require.True(t, port >= base && port < base+4, "%s publishes %s outside the test's block", b.Pod, addr)
		}
	}

	// The brokers: kfake on the published Kafka addresses (broker i is pod i), plain TCP on the
	// admin addresses.
	kafka := make([]*probeListener, 2)
	next := 0
	var mu sync.Mutex
	cluster, err := kfake.NewCluster(kfake.NumBrokers(2), kfake.ListenFn(func(string, string) (net.Listener, error) {
		mu.Lock()
		defer mu.Unlock()
		l := &probeListener{addr: pub.Brokers[next].Addresses["kafka"], conns: make(chan net.Conn), done: make(chan struct{})}
		next++
		if err := l.open(); err != nil {
			return nil, err
		}
		kafka[next-1] = l
		return l, nil
	}))
	require.NoError(t, err)
	defer cluster.Close()
	for _, b := range pub.Brokers {
		ln, err := net.Listen("tcp", b.Addresses["admin"])
		require.NoError(t, err)
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}

	// The probe dials only what the controller hands it, as brokerport's controller does on each
	// publish: the brokers' states computed from their pods and nodes (read-only here).
	prober := startProbe(t, ctx)
	cfg, errs := patches.ParseConfig(sts.Annotations, nil, patches.DefaultOptions())
	require.Empty(t, errs)
	nodes := map[string]*corev1.Node{}
	var states []patches.BrokerState
	for i := range 2 {
		pod, node := &corev1.Pod{}, &corev1.Node{}
		require.NoError(t, env.admin.Get(ctx, client.ObjectKey{Namespace: probeNS, Name: fmt.Sprintf("%s-%d", probeSTS, i)}, pod))
		require.NoError(t, env.admin.Get(ctx, client.ObjectKey{Name: pod.Spec.NodeName}, node))
		nodes[node.Name] = node
		states = append(states, patches.ObserveBroker(cfg, probeSTS, i, patches.BrokerFacts{Pod: pod, Node: node}))
	}
	prober.Track(sts, cfg, states, nodes)
	pod0, pod1 := pub.Brokers[0].Pod, pub.Brokers[1].Pod

	t.Run("all reachable", func(t *testing.T) {
		require.NoError(t, waitFor(ctx, 3*probePeriod, "every broker reachable on every listener", func() error {
			for _, b := range pub.Brokers {
				for _, l := range pub.Listeners {
					if v := gauge(t, "brokerport_broker_reachable", b.Pod, l); v != 1 {
						return fmt.Errorf("%s %s: brokerport_broker_reachable=%v", b.Pod, l, v)
					}
				}
				if v := gauge(t, "brokerport_broker_advertised_mismatch", b.Pod, "kafka"); v != 0 {
					return fmt.Errorf("%s: brokerport_broker_advertised_mismatch=%v", b.Pod, v)
				}
			}
			return nil
		}))
		out, err := runCheck(ctx)
		require.NoError(t, err, out)
		assert.Contains(t, out, pub.Brokers[0].Addresses["kafka"])
	})

	t.Run("one listener closed", func(t *testing.T) {
		kafka[1].shut()
		start := time.Now()
		require.NoError(t, waitFor(ctx, 2*probePeriod+time.Second, "broker 1 unreachable, said by a Warning", func() error {
			if v := gauge(t, "brokerport_broker_reachable", pod1, "kafka"); v != 0 {
				return fmt.Errorf("brokerport_broker_reachable=%v", v)
			}
			return probeEvent(ctx, "Warning", "BrokerUnreachable", pod1+" is unreachable on listener kafka at its published address "+pub.Brokers[1].Addresses["kafka"]+": connection refused")
		}))
		t.Logf("seen in %s (period %s)", time.Since(start).Round(time.Millisecond), probePeriod)
		assert.Equal(t, 1.0, gauge(t, "brokerport_broker_reachable", pod0, "kafka"), "the other broker is not affected")
		out, err := runCheck(ctx)
		require.Error(t, err)
		assert.Contains(t, out, pod1+" kafka at "+pub.Brokers[1].Addresses["kafka"]+" unreachable: connection refused")
	})

	t.Run("recovery", func(t *testing.T) {
		require.NoError(t, kafka[1].open())
		require.NoError(t, waitFor(ctx, 2*probePeriod+time.Second, "broker 1 reachable again, said by a Normal Event", func() error {
			if v := gauge(t, "brokerport_broker_reachable", pod1, "kafka"); v != 1 {
				return fmt.Errorf("brokerport_broker_reachable=%v", v)
			}
			return probeEvent(ctx, "Normal", "BrokerReachable", pod1+" is reachable again on listener kafka")
		}))
		out, err := runCheck(ctx)
		require.NoError(t, err, out)
	})

	t.Run("a broker advertising a wrong port", func(t *testing.T) {
		host, port, _ := net.SplitHostPort(pub.Brokers[0].Addresses["kafka"])
		n, _ := strconv.Atoi(port)
		wrong := net.JoinHostPort(host, strconv.Itoa(n+1)) // its own admin port
		kafka[0].advertised.Store(&wrong)
		require.NoError(t, waitFor(ctx, 2*probePeriod+time.Second, "broker 0's mismatch named", func() error {
			if v := gauge(t, "brokerport_broker_advertised_mismatch", pod0, "kafka"); v != 1 {
				return fmt.Errorf("brokerport_broker_advertised_mismatch=%v", v)
			}
			return probeEvent(ctx, "Warning", "BrokerAdvertisesOther", "but advertises "+wrong)
		}))
		assert.Equal(t, 0.0, gauge(t, "brokerport_broker_reachable", pod0, "kafka"))
		out, err := runCheck(ctx)
		require.Error(t, err)
		assert.Contains(t, out, pod0+" kafka at "+pub.Brokers[0].Addresses["kafka"]+" advertises "+wrong)
	})
}

// startProbe runs the probe in a manager of its own with brokerport's credentials until the test
// ends.
func startProbe(t *testing.T, ctx context.Context) *probe.Prober {
	restConfig, err := clientcmd.BuildConfigFromFlags("", filepath.Join(env.cp.Dir, "brokerport.kubeconfig"))
	require.NoError(t, err)
	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
		Scheme: webhook.Scheme(), Cache: webhook.CacheOptions(),
		Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
	})
	require.NoError(t, err)
	prober := &probe.Prober{Reader: mgr.GetCache(), Events: mgr.GetEventRecorder(probeReporter), Options: patches.DefaultOptions(), Period: probePeriod}
	require.NoError(t, mgr.Add(prober))
	mgrCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mgrCtx) }()
	t.Cleanup(func() {
		stop()
		assert.NoError(t, <-done)
	})
	return prober
}

// runCheck runs `brokerport check --from-here` as a user would, with the admin kubeconfig.
func runCheck(ctx context.Context) (string, error) {
	cmd := exec.CommandContext(ctx, env.binary, "check", probeSTS, "-n", probeNS, "--from-here", "--timeout", "2s")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+env.cp.AdminKubeconfig)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// gauge reads a gauge of this process's registry for the probed StatefulSet.
func gauge(t *testing.T, name, pod, listener string) float64 {
	families, err := metrics.Registry.Gather()
	require.NoError(t, err)
	want := map[string]string{"namespace": probeNS, "statefulset": probeSTS, "broker": pod, "listener": listener}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.Metric {
			if labelsMatch(m, want) {
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}

func labelsMatch(m *dto.Metric, want map[string]string) bool {
	got := prometheus.Labels{}
	for _, l := range m.Label {
		got[l.GetName()] = l.GetValue()
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// probeEvent finds an Event of this test's probe on the StatefulSet.
func probeEvent(ctx context.Context, eventType, reason, note string) error {
	var list eventsv1.EventList
	if err := env.admin.List(ctx, &list, client.InNamespace(probeNS)); err != nil {
		return err
	}
	var seen []string
	for _, e := range list.Items {
		if e.ReportingController != probeReporter || e.Regarding.Name != probeSTS {
			continue
		}
		if e.Type == eventType && e.Reason == reason && strings.Contains(e.Note, note) {
			return nil
		}
		seen = append(seen, e.Type+" "+e.Reason+": "+e.Note)
	}
	return fmt.Errorf("no %s %s Event with %q; seen %q", eventType, reason, note, seen)
}

// probeListener is a broker's listener that can be shut (connections refused) and opened again
// on the same address while kfake keeps serving through it, and whose advertised address can be
// changed (kfake advertises its listener's Addr).
type probeListener struct {
	addr       string
	conns      chan net.Conn
	done       chan struct{}
	closeOnce  sync.Once
	mu         sync.Mutex
	ln         net.Listener
	advertised atomic.Pointer[string]
}

func (l *probeListener) open() error {
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.ln = ln
	l.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case l.conns <- c:
			case <-l.done:
				c.Close()
				return
			}
		}
	}()
	return nil
}

func (l *probeListener) shut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ln.Close()
}

func (l *probeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *probeListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	l.shut()
	return nil
}

func (l *probeListener) Addr() net.Addr {
	if a := l.advertised.Load(); a != nil {
		return advertisedAddr(*a)
	}
	return advertisedAddr(l.addr)
}
