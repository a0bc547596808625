package probe

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/brokerport/brokerport/patches"
	"github.com/brokerport/brokerport/webhook"
	"github.com/brokerport/brokerport/webhook/controller"
)

// Issue 27: the probe dials only what brokerport computed, never what a ConfigMap says, never a
// host a tenant chose; what it says never repeats a listener's bytes; its cost is bounded.
//
// Each test also keeps, in the probe's cache, the ConfigMap the controller publishes: the probe
// once read its targets from there (which is how these tests ran red before the fix); it must
// read none now.

// computed is one StatefulSet as the controller hands it to the probe: its configuration, its
// brokers' states and their nodes.
type computed struct {
	sts    *appsv1.StatefulSet
	cfg    patches.Config
	states []patches.BrokerState
	nodes  map[string]*corev1.Node
}

// newComputed is StatefulSet ns/name with the given brokers, each exposed on its own node whose
// InternalIP is nodeIP(i), on the ports of block base.
func newComputed(t testing.TB, name string, brokers int, base int32, listeners string, nodeIP func(i int) string) computed {
	t.Helper()
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("uid-" + name),
		Labels: map[string]string{patches.LabelExpose: patches.ExposeValue},
		Annotations: map[string]string{patches.AnnotationListeners: listeners, patches.AnnotationPortBase: strconv.Itoa(int(base)),
			patches.AnnotationMaxBrokers: strconv.Itoa(brokers)}},
		Spec: appsv1.StatefulSetSpec{Replicas: ptr.To(int32(brokers))}}
	opts := patches.DefaultOptions()
	opts.PortRange = patches.PortRange{First: 1024, Last: 65535}
	cfg, errs := patches.ParseConfig(sts.Annotations, nil, opts)
	require.Empty(t, errs)
	c := computed{sts: sts, cfg: cfg, nodes: map[string]*corev1.Node{}}
	for i := range brokers {
		node := fmt.Sprintf("node-%d", i)
		c.nodes[node] = &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: nodeIP(i)}}}}
		s := patches.BrokerState{Pod: fmt.Sprintf("%s-%d", name, i), Node: node, Host: nodeIP(i), Exposed: true}
		for l := range cfg.Listeners {
			s.Ports = append(s.Ports, cfg.Port(i, l))
		}
		c.states = append(c.states, s)
	}
	return c
}

// configMap is what the controller publishes for c.
func (c computed) configMap() *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: c.sts.Namespace, Name: c.sts.Name + "-external",
		Labels: map[string]string{patches.LabelCluster: c.sts.Name, patches.LabelManagedBy: patches.ManagedByValue}},
		Data: controller.Addresses(c.cfg, c.states)}
}

// addresses are c's computed addresses, every broker's on every listener.
func (c computed) addresses() []string {
	var out []string
	for _, s := range c.states {
		for l := range c.cfg.Listeners {
			if a := s.Address(l); a != "" {
				out = append(out, a)
			}
		}
	}
	return out
}

// router is the probe's Dial in these tests: it records every address dialed, connects those a
// test stands a listener for, refuses the others without touching the network, and, as a black
// hole, blocks until the dial's context ends.
type router struct {
	mu     sync.Mutex
	routes map[string]string // dialed address → the test listener's
	dialed []string
	black  bool
}

func newRouter() *router { return &router{routes: map[string]string{}} }

func (r *router) route(from, to string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.routes[from] = to
}

func (r *router) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	r.mu.Lock()
	r.dialed = append(r.dialed, addr)
	to, ok := r.routes[addr]
	black := r.black
	r.mu.Unlock()
	switch {
	case black:
		<-ctx.Done()
		return nil, ctx.Err()
	case !ok:
		return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
	}
	return (&net.Dialer{}).DialContext(ctx, network, to)
}

func (r *router) dials() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.dialed...)
}

// counting is a loopback listener that counts the connections it accepts, and closes them.
func counting(t *testing.T) (addr string, accepted *atomic.Int64) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	accepted = &atomic.Int64{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	return ln.Addr().String(), accepted
}

// reader is the manager's cache as the probe sees it.
func reader(objs ...client.Object) client.Reader {
	return fake.NewClientBuilder().WithScheme(webhook.Scheme()).WithObjects(objs...).Build()
}

func drain(r *events.FakeRecorder) []string {
	var out []string
	for {
		select {
		case e := <-r.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

// (a) A ConfigMap <sts>-external a tenant wrote (or brokerport's own, its managed-by label
// stripped) lists an address of a real loopback listener: the probe never dials it, and dials
// only the addresses the controller computed.
func TestProbeDialsNoConfigMapAddress(t *testing.T) {
	bait, accepted := counting(t)
	tests := map[string]struct {
		tracked bool // the controller handed the probe the StatefulSet's brokers
		cm      func(c computed) *corev1.ConfigMap
	}{
		"a tenant's ConfigMap with the cluster label": {
			tracked: true,
			cm: func(c computed) *corev1.ConfigMap {
				return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "rp-external",
					Labels: map[string]string{patches.LabelCluster: "rp"}},
					Data: map[string]string{"bootstrap.servers": bait, "kafka.bootstrap.servers": bait, "kafka.addresses": "rp-0 " + bait + "\nrp-9 " + bait}}
			},
		},
		"brokerport's own, its managed-by label stripped and an address rewritten": {
			tracked: true,
			cm: func(c computed) *corev1.ConfigMap {
				cm := c.configMap()
				delete(cm.Labels, patches.LabelManagedBy)
				cm.Data["kafka.addresses"] = strings.Replace(cm.Data["kafka.addresses"], c.states[0].Address(0), bait, 1)
				cm.Data["admin.addresses"] += "\nrp-7 " + bait
				return cm
			},
		},
		"a ConfigMap for an opted-in StatefulSet the controller never computed": {
			cm: func(c computed) *corev1.ConfigMap {
				return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "rp-external",
					Labels: map[string]string{patches.LabelCluster: "rp", patches.LabelManagedBy: patches.ManagedByValue}},
					Data: map[string]string{"bootstrap.servers": bait, "kafka.bootstrap.servers": bait, "kafka.addresses": "rp-0 " + bait}}
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			accepted.Store(0)
			c := newComputed(t, "rp", 2, 30000, "kafka=9094,admin=9644", func(i int) string { return fmt.Sprintf("10.1.0.%d", i+1) })
			r := newRouter()
			p := &Prober{Reader: reader(c.sts, tc.cm(c)), Options: patches.DefaultOptions(), Period: 2 * time.Second, Dial: r.dial}
			if tc.tracked {
				p.Track(c.sts, c.cfg, c.states, c.nodes)
			}
			require.NoError(t, p.Round(context.Background()))
			assert.Zero(t, accepted.Load(), "the listener a ConfigMap names was connected to")
			assert.NotContains(t, r.dials(), bait)
			if tc.tracked {
				assert.ElementsMatch(t, c.addresses(), r.dials(), "exactly the computed addresses, each once")
			} else {
				assert.Empty(t, r.dials())
				assert.Nil(t, p.For("ns", "rp"))
			}
		})
	}
}

// (b) A StatefulSet whose host template is a literal: the controller publishes the host, and the
// probe does not dial it unless brokerport runs with --probe-host-templates; the broker's line
// says it was not probed, why, and the flag. Driven through the real controller, as it runs.
func TestProbeHostTemplate(t *testing.T) {
	tests := map[string]struct {
		allow bool
		want  int64
	}{
		"not dialed by default":              {},
		"dialed with --probe-host-templates": {allow: true, want: 1},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			bait, accepted := counting(t)
			sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "rp", UID: "rp-uid",
				Labels: map[string]string{patches.LabelExpose: patches.ExposeValue},
				Annotations: map[string]string{patches.AnnotationListeners: "kafka=9094", patches.AnnotationPortBase: "30000",
					patches.AnnotationHostTemplate: "127.0.0.1", patches.AnnotationSecurityProtocol: "SSL"}},
				Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](1)}}
			node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-0"},
				Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.1.0.1"}}}}
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "rp-0",
				Labels: map[string]string{patches.LabelCluster: "rp", patches.LabelExpose: patches.ExposeValue}},
				Spec: corev1.PodSpec{NodeName: "node-0", Containers: []corev1.Container{{Name: "broker",
					Ports: []corev1.ContainerPort{{Name: "kafka", ContainerPort: 9094, HostPort: 30000, Protocol: corev1.ProtocolTCP}}}}}}
			c := fake.NewClientBuilder().WithScheme(webhook.Scheme()).WithObjects(sts, node, pod).Build()
			r := newRouter()
			r.route("127.0.0.1:30000", bait) // the template's host, on the broker's port
			r.route("10.1.0.1:30000", bait)  // its node's address (not what it advertises)
			p := &Prober{Reader: c, Options: patches.DefaultOptions(), Period: 2 * time.Second, Dial: r.dial, HostTemplates: tc.allow}
			rec := &controller.Reconciler{Client: c, API: c, Events: events.NewFakeRecorder(100), Options: patches.DefaultOptions(),
				Reachability: p, Targets: p}
			req := reconcile.Request{NamespacedName: client.ObjectKeyFromObject(sts)}
			_, err := rec.Reconcile(context.Background(), req)
			require.NoError(t, err)
			cm := &corev1.ConfigMap{}
			require.NoError(t, c.Get(context.Background(), client.ObjectKey{Namespace: "ns", Name: "rp-external"}, cm))
			require.Equal(t, "rp-0 127.0.0.1:30000", cm.Data["kafka.addresses"], "the template's host is published")

			require.NoError(t, p.Round(context.Background()))
			// The listener counts what it accepts on its own goroutine: wait for a connection due.
			assert.Eventually(t, func() bool { return accepted.Load() >= tc.want }, 5*time.Second, 10*time.Millisecond)
			assert.Equal(t, tc.want, accepted.Load())
			line := p.For("ns", "rp")["kafka.reachability"]
			if tc.allow {
				assert.Equal(t, []string{"127.0.0.1:30000"}, r.dials())
				assert.Equal(t, "rp-0 reachable", line)
			} else {
				assert.Empty(t, r.dials())
				assert.Contains(t, line, "rp-0 not probed: ")
				assert.Contains(t, line, patches.AnnotationHostTemplate)
				assert.Contains(t, line, "--probe-host-templates")
			}

			// The controller publishes the line.
			_, err = rec.Reconcile(context.Background(), req)
			require.NoError(t, err)
			require.NoError(t, c.Get(context.Background(), client.ObjectKey{Namespace: "ns", Name: "rp-external"}, cm))
			assert.Equal(t, line, cm.Data["kafka.reachability"])
		})
	}
}

// (c) A listener that is not Kafka: what the probe says (Events, the ConfigMap's lines) carries
// none of the bytes it read, nor a number decoded from them; a Kafka listener that advertises
// addresses brokerport did not compute for this StatefulSet does not get them repeated either.
func TestProbeSaysNoListenerBytes(t *testing.T) {
	be32 := func(n uint32) string { return string(binary.BigEndian.AppendUint32(nil, n)) }
	tests := map[string]struct {
		answer    string
		forbidden []string
	}{
		"an SSH server": {
			answer:    "SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n",
			forbidden: []string{"SSH", "OpenSSH", "Ubuntu", "1397966893"},
		},
		"an HTTP server": {
			answer:    "HTTP/1.1 400 Bad Request\r\nServer: internal-billing/2.1\r\n\r\n",
			forbidden: []string{"HTTP", "billing", "400", "1213486160"},
		},
		"an answer to another request": {
			answer:    be32(8) + "AAAA" + "BBBB",
			forbidden: []string{"AAAA", "BBBB", "1094795585", "8 bytes"},
		},
		"an answer that does not decode": {
			answer:    be32(6) + be32(1) + "ZZ",
			forbidden: []string{"ZZ", "23130", "6 bytes"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			t.Cleanup(func() { ln.Close() })
			go func() {
				for {
					conn, err := ln.Accept()
					if err != nil {
						return
					}
					go func() {
						defer conn.Close()
						_, _ = conn.Write([]byte(tc.answer))
						_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
						_, _ = conn.Read(make([]byte, 512)) // the probe's request, then its close
					}()
				}
			}()
			c := newComputed(t, "rp", 1, 30000, "kafka=9094", func(int) string { return "10.1.0.1" })
			r := newRouter()
			r.route(c.states[0].Address(0), ln.Addr().String())
			rec := events.NewFakeRecorder(100)
			p := &Prober{Reader: reader(c.sts, c.configMap()), Events: rec, Options: patches.DefaultOptions(), Period: 2 * time.Second, Dial: r.dial}
			p.Track(c.sts, c.cfg, c.states, c.nodes)
			require.NoError(t, p.Round(context.Background()))

			said := strings.Join(append(drain(rec), p.For("ns", "rp")["kafka.reachability"]), "\n")
			assert.Contains(t, said, "not a Kafka listener")
			for _, f := range tc.forbidden {
				assert.NotContains(t, said, f)
			}
		})
	}

	t.Run("a Kafka listener advertising other brokers", func(t *testing.T) {
		// Another team's brokers, as a listener that relays to them would advertise them.
		others := []string{"kafka-0.payments.svc.cluster.local:9092", "10.9.9.9:9092"}
		var lns []*relabeled
		cluster, err := kfake.NewCluster(kfake.NumBrokers(2), kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			ln, err := net.Listen(network, "127.0.0.1:0")
			if err != nil {
				return nil, err
			}
			r := &relabeled{Listener: ln}
			r.advertised.Store(&others[len(lns)])
			lns = append(lns, r)
			return r, nil
		}))
		require.NoError(t, err)
		t.Cleanup(cluster.Close)
		c := newComputed(t, "rp", 1, 30000, "kafka=9094", func(int) string { return "10.1.0.1" })
		r := newRouter()
		r.route(c.states[0].Address(0), lns[0].Listener.Addr().String())
		rec := events.NewFakeRecorder(100)
		p := &Prober{Reader: reader(c.sts, c.configMap()), Events: rec, Options: patches.DefaultOptions(), Period: 2 * time.Second, Dial: r.dial}
		p.Track(c.sts, c.cfg, c.states, c.nodes)
		require.NoError(t, p.Round(context.Background()))

		evs := drain(rec)
		require.Len(t, evs, 1)
		assert.Contains(t, evs[0], "BrokerAdvertisesOther")
		said := strings.Join(append(evs, p.For("ns", "rp")["kafka.reachability"]), "\n")
		assert.Contains(t, said, "advertises an address brokerport did not publish")
		for _, o := range others {
			host, _, _ := net.SplitHostPort(o)
			assert.NotContains(t, said, host)
		}
	})
}
