package probe

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/brokerport/brokerport/patches"
)

// Issue 27: a round's memory is linear in brokers, its duration bounded whatever the black holes,
// and what is over a cap is said, not dropped.

// refuse is a Dial that refuses every address at once, without touching the network.
func refuse(_ context.Context, network, _ string) (net.Conn, error) {
	return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
}

func nodeIP(i int) string { return fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255+1) }

// trackedProber is a prober told of one StatefulSet of brokers brokers (two listeners), whose
// cache also holds the ConfigMap the controller publishes for it.
func trackedProber(t testing.TB, brokers int) *Prober {
	c := newComputed(t, "rp", brokers, 1100, "kafka=9094,admin=9644", nodeIP)
	p := &Prober{Reader: reader(c.sts, c.configMap()), Options: patches.DefaultOptions(), Period: 2 * time.Second, Dial: refuse}
	p.Track(c.sts, c.cfg, c.states, c.nodes)
	return p
}

// roundBytes is what one round allocates, brokers refusing.
func roundBytes(t testing.TB, brokers int) int64 {
	p := trackedProber(t, brokers)
	res := testing.Benchmark(func(b *testing.B) {
		for b.Loop() {
			if err := p.Round(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
	})
	return res.AllocedBytesPerOp()
}

// (d) Twice the brokers, at most about twice the memory: one list of a listener's addresses is
// shared by the StatefulSet's brokers (each broker keeping every other's made it quadratic: 131 MB
// for 2,000 brokers).
func TestRoundMemoryLinear(t *testing.T) {
	if testing.Short() {
		t.Skip("measures allocations over many rounds")
	}
	n, twice := roundBytes(t, 100), roundBytes(t, 200)
	t.Logf("a round allocates %d bytes for 100 brokers, %d for 200", n, twice)
	assert.Less(t, float64(twice), 3*float64(n), "twice the brokers allocated more than three times the memory: quadratic")
}

// BenchmarkRound: bytes per op should double with the brokers (go test -bench Round -benchmem).
func BenchmarkRound(b *testing.B) {
	for _, n := range []int{64, 128, 256} {
		b.Run(fmt.Sprintf("brokers=%d", n), func(b *testing.B) {
			p := trackedProber(b, n)
			b.ReportAllocs()
			for b.Loop() {
				if err := p.Round(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkTrack: what the controller's reconcile pays to hand the probe its targets.
func BenchmarkTrack(b *testing.B) {
	for _, n := range []int{64, 128, 256} {
		b.Run(fmt.Sprintf("brokers=%d", n), func(b *testing.B) {
			c := newComputed(b, "rp", n, 1100, "kafka=9094,admin=9644", nodeIP)
			p := &Prober{}
			b.ReportAllocs()
			for b.Loop() {
				p.Track(c.sts, c.cfg, c.states, c.nodes)
			}
		})
	}
}

// lines splits a reachability key into pod → verdict.
func lines(key string) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(key, "\n") {
		if pod, verdict, ok := strings.Cut(line, " "); ok {
			out[pod] = verdict
		}
	}
	return out
}

// (e) A hundred black-holed addresses: the round ends within its period (here 1s, so each dial
// waits 0.5s), those it dialed are unreachable, those it did not reach are said not probed this
// round, and go first in the next one.
func TestRoundDeadline(t *testing.T) {
	c := newComputed(t, "rp", 100, 1100, "kafka=9094", nodeIP)
	r := newRouter()
	r.black = true
	p := &Prober{Reader: reader(c.sts, c.configMap()), Options: patches.DefaultOptions(), Period: time.Second, Concurrency: 8, Dial: r.dial}
	p.Track(c.sts, c.cfg, c.states, c.nodes)

	start := time.Now()
	require.NoError(t, p.Round(context.Background()))
	took := time.Since(start)
	assert.Less(t, took, 3*time.Second, "the round outlived three times its bound")

	first := lines(p.For("ns", "rp")["kafka.reachability"])
	require.Len(t, first, 100, "every broker has a line")
	var unreachable, notProbed []string
	for pod, v := range first {
		switch {
		case v == "unreachable: connect timed out":
			unreachable = append(unreachable, pod)
		case strings.HasPrefix(v, "not probed: "):
			assert.Contains(t, v, "round")
			notProbed = append(notProbed, pod)
		default:
			t.Errorf("%s: %s", pod, v)
		}
	}
	assert.NotEmpty(t, unreachable)
	assert.NotEmpty(t, notProbed)

	// The next round starts with the brokers this one did not reach.
	addr := map[string]string{}
	for _, s := range c.states {
		addr[s.Pod] = s.Address(0)
	}
	dialedFirst := len(r.dials())
	require.NoError(t, p.Round(context.Background()))
	second := r.dials()[dialedFirst:]
	require.NotEmpty(t, second)
	var again []string
	for _, pod := range unreachable {
		if slices.Contains(second, addr[pod]) {
			again = append(again, pod)
		}
	}
	assert.Empty(t, again, "probed again, before brokers the last round did not reach")
}

// What is over a cap is said on the broker's line, not dropped: brokers past
// MaxBrokersPerStatefulSet, addresses past MaxAddressesPerRound (which go first in the next
// round).
func TestRoundCaps(t *testing.T) {
	t.Run("brokers of one StatefulSet", func(t *testing.T) {
		n := MaxBrokersPerStatefulSet + 10
		c := newComputed(t, "rp", n, 1100, "kafka=9094", nodeIP)
		r := newRouter()
		p := &Prober{Reader: reader(c.sts, c.configMap()), Options: patches.DefaultOptions(), Period: 2 * time.Second, Dial: r.dial}
		p.Track(c.sts, c.cfg, c.states, c.nodes)
		require.NoError(t, p.Round(context.Background()))
		got := lines(p.For("ns", "rp")["kafka.reachability"])
		require.Len(t, got, n)
		assert.Len(t, r.dials(), MaxBrokersPerStatefulSet)
		assert.Equal(t, "unreachable: connection refused", got[fmt.Sprintf("rp-%d", MaxBrokersPerStatefulSet-1)])
		assert.Equal(t, fmt.Sprintf("not probed: past the %d brokers of a StatefulSet the probe dials", MaxBrokersPerStatefulSet),
			got[fmt.Sprintf("rp-%d", MaxBrokersPerStatefulSet)])
	})

	t.Run("addresses of a round", func(t *testing.T) {
		sets := MaxAddressesPerRound/MaxBrokersPerStatefulSet + 1
		var all []computed
		var objs []client.Object
		for k := range sets {
			c := newComputed(t, fmt.Sprintf("rp%d", k), MaxBrokersPerStatefulSet, int32(1100+k*MaxBrokersPerStatefulSet), "kafka=9094", nodeIP)
			all, objs = append(all, c), append(objs, c.sts, c.configMap())
		}
		r := newRouter()
		p := &Prober{Reader: reader(objs...), Options: patches.DefaultOptions(), Period: 2 * time.Second, Dial: r.dial}
		for _, c := range all {
			p.Track(c.sts, c.cfg, c.states, c.nodes)
		}
		require.NoError(t, p.Round(context.Background()))
		assert.Len(t, r.dials(), MaxAddressesPerRound)
		var left []string
		for k := range sets {
			for pod, v := range lines(p.For("ns", fmt.Sprintf("rp%d", k))["kafka.reachability"]) {
				if strings.HasPrefix(v, "not probed: ") {
					assert.Equal(t, fmt.Sprintf("not probed: past the %d addresses a round dials; first in the next round", MaxAddressesPerRound), v)
					left = append(left, pod)
				}
			}
		}
		assert.Len(t, left, sets*MaxBrokersPerStatefulSet-MaxAddressesPerRound)

		// The next round starts with them: within its cap, they are all probed.
		require.NoError(t, p.Round(context.Background()))
		var late []string
		for _, pod := range left {
			cluster, _, _ := strings.Cut(pod, "-")
			if v := lines(p.For("ns", cluster)["kafka.reachability"])[pod]; v != "unreachable: connection refused" {
				late = append(late, pod+" "+v)
			}
		}
		assert.Empty(t, late, "not probed in the round after the one that left them")
	})
}
