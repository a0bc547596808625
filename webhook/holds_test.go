package webhook

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/brokerport/brokerport/patches"
)

// Issue 27, item 4: a block assigned to an admission request is held on the request's word only
// for a short grace; after it, what the API server has decides.

// fakeClock is a clock a test moves; safe for concurrent use.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// afterGrace is a moment past the grace, as the tests move the clock.
const afterGrace = holdGrace + time.Second

// admitSTS sends the create of StatefulSet namespace/name, opted in with extra annotations
// (JSON members), through h.
func admitSTS(h *StatefulSetHandler, namespace, name, annotations string) admission.Response {
	return admitSTSAs(h, "user-of-"+namespace+"-"+name, namespace, name, annotations)
}

// admitSTSAs is admitSTS as requested by user.
func admitSTSAs(h *StatefulSetHandler, user, namespace, name, annotations string) admission.Response {
	if annotations != "" {
		annotations = "," + annotations
	}
	raw := fmt.Sprintf(`{"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":%q,"namespace":%q,"labels":{"brokerport.io/expose":"true"},"annotations":{"x":"y"%s}},"spec":{"template":{"metadata":{"labels":{"a":"b"}}}}}`, name, namespace, annotations)
	return h.Handle(context.Background(), admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		Operation: admissionv1.Create, Namespace: namespace, Name: name, Object: runtime.RawExtension{Raw: []byte(raw)},
		UserInfo: authenticationv1.UserInfo{Username: user},
	}})
}

// portBase is the port base an allowed response assigns ("" when none).
func portBase(resp admission.Response) string {
	for _, op := range resp.Patches {
		if op.Path == "/metadata/annotations" {
			return op.Value.(map[string]any)[patches.AnnotationPortBase].(string)
		}
		if op.Path == "/metadata/annotations/brokerport.io~1port-base" {
			return op.Value.(string)
		}
	}
	return ""
}

// stored is StatefulSet namespace/name as the API server stores it with its block.
func stored(namespace, name, base string, annotations map[string]string) *appsv1.StatefulSet {
	a := map[string]string{patches.AnnotationPortBase: base}
	for k, v := range annotations {
		a[k] = v
	}
	return &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name,
		Labels: map[string]string{patches.LabelExpose: patches.ExposeValue}, Annotations: a}}
}

// The case seen: a create of attacker/ghost with max-brokers 86 (the whole default band) and a
// spec the API server refuses after the webhook (never stored) held the band for 2 minutes, and
// team-b's opt-in was refused. Now it is held while the request may still be stored, and not
// past the grace: a live read shows no such StatefulSet.
func TestNeverStoredRequestHoldsItsBlockOnlyForTheGrace(t *testing.T) {
	cache := fake.NewClientBuilder().WithScheme(Scheme()).Build()
	api := fake.NewClientBuilder().WithScheme(Scheme()).Build()
	h := NewStatefulSetHandler(ReaderSnapshot{Reader: cache, Live: api}, patches.DefaultOptions())
	clock := newFakeClock()
	h.recent.now = clock.Now

	ghost := admitSTS(h, "attacker", "ghost", `"brokerport.io/max-brokers":"86"`)
	require.True(t, ghost.Allowed, "%v", ghost.Result)
	require.Equal(t, "30000", portBase(ghost))

	resp := admitSTS(h, "team-b", "kafka", "")
	require.False(t, resp.Allowed, "within the grace the ghost's request may still be stored")
	assert.Contains(t, resp.Result.Message, "held by StatefulSet attacker/ghost (assigned moments ago")

	clock.Advance(afterGrace)
	resp = admitSTS(h, "team-b", "kafka", "")
	require.True(t, resp.Allowed, "%v", resp.Result)
	assert.Equal(t, "30000", portBase(resp), "the request was not stored: its block is free")
}

// A request that was stored keeps its block after the grace for as long as the API server shows
// it and the cache does not yet: on evidence, never on a timer.
func TestStoredRequestKeepsItsBlockUntilTheCacheShowsIt(t *testing.T) {
	cache := fake.NewClientBuilder().WithScheme(Scheme()).Build()
	api := fake.NewClientBuilder().WithScheme(Scheme()).Build()
	h := NewStatefulSetHandler(ReaderSnapshot{Reader: cache, Live: api}, patches.DefaultOptions())
	clock := newFakeClock()
	h.recent.now = clock.Now
	ctx := context.Background()

	first := admitSTS(h, "team-a", "kafka", `"brokerport.io/max-brokers":"86"`)
	require.Equal(t, "30000", portBase(first))
	require.NoError(t, api.Create(ctx, stored("team-a", "kafka", "30000", map[string]string{patches.AnnotationMaxBrokers: "86"})))

	for _, wait := range []time.Duration{afterGrace, time.Minute, 5 * time.Minute} {
		clock.Advance(wait)
		resp := admitSTS(h, "team-b", "kafka", "")
		require.False(t, resp.Allowed, "the cache lags %s behind the API server", wait)
		assert.Contains(t, resp.Result.Message, "held by StatefulSet team-a/kafka (assigned moments ago")
	}

	// The cache catches up: the block is the cache's to hold from then on.
	sts := stored("team-a", "kafka", "30000", map[string]string{patches.AnnotationMaxBrokers: "86"})
	require.NoError(t, cache.Create(ctx, sts))
	h.EventHandler().OnAdd(sts, false)
	assert.Empty(t, h.recent.holds, "shown: no longer held for the request")
	resp := admitSTS(h, "team-b", "kafka", "")
	require.False(t, resp.Allowed)
	assert.Contains(t, resp.Result.Message, "held by StatefulSet team-a/kafka 30000-30085")

	// Deleted from both: free at once.
	require.NoError(t, cache.Delete(ctx, sts))
	require.NoError(t, api.Delete(ctx, stored("team-a", "kafka", "30000", nil)))
	resp = admitSTS(h, "team-b", "kafka", "")
	require.True(t, resp.Allowed, "%v", resp.Result)
	assert.Equal(t, "30000", portBase(resp))
}

// A live read that shows the StatefulSet with another block (its request was not stored; an
// older version of it is) ends the hold too.
func TestHoldEndsWhenTheAPIServerShowsAnotherBlock(t *testing.T) {
	cache := fake.NewClientBuilder().WithScheme(Scheme()).Build()
	api := fake.NewClientBuilder().WithScheme(Scheme()).Build()
	opts := patches.DefaultOptions()
	h := NewStatefulSetHandler(ReaderSnapshot{Reader: cache, Live: api}, opts)
	clock := newFakeClock()
	h.recent.now = clock.Now

	require.Equal(t, "30000", portBase(admitSTS(h, "team-a", "kafka", `"brokerport.io/max-brokers":"86"`)))
	// What the API server has: the StatefulSet as it was, opted out.
	optedOut := stored("team-a", "kafka", "30000", nil)
	optedOut.Labels = nil
	require.NoError(t, api.Create(context.Background(), optedOut))

	clock.Advance(afterGrace)
	resp := admitSTS(h, "team-b", "kafka", "")
	require.True(t, resp.Allowed, "%v", resp.Result)
	assert.Equal(t, "30000", portBase(resp))
}

// Holds are bounded: past maxPendingHolds blocks assigned to requests not shown stored yet, a
// new assignment is refused, naming the bound, until the grace has settled them.
func TestPendingHoldsAreBounded(t *testing.T) {
	cache := fake.NewClientBuilder().WithScheme(Scheme()).Build()
	opts := patches.DefaultOptions()
	opts.PortRange = patches.PortRange{First: 30000, Last: 32767}
	h := NewStatefulSetHandler(ReaderSnapshot{Reader: cache}, opts)
	clock := newFakeClock()
	h.recent.now = clock.Now

	for i := range maxPendingHolds {
		resp := admitSTS(h, fmt.Sprintf("tenant-%d", i), "s", `"brokerport.io/max-brokers":"1"`)
		require.True(t, resp.Allowed, "%d: %v", i, resp.Result)
	}
	resp := admitSTS(h, "team-b", "kafka", "")
	require.False(t, resp.Allowed)
	assert.Contains(t, resp.Result.Message, "metadata.annotations[brokerport.io/port-base]")
	assert.Contains(t, resp.Result.Message, fmt.Sprintf("at most %d", maxPendingHolds))
	assert.Contains(t, resp.Result.Message, "retry")

	update := admitSTS(h, "tenant-0", "s", `"brokerport.io/max-brokers":"1","brokerport.io/port-base":"30000"`)
	assert.True(t, update.Allowed, "a StatefulSet that keeps its block needs no hold: %v", update.Result)

	clock.Advance(afterGrace)
	resp = admitSTS(h, "team-b", "kafka", "")
	require.True(t, resp.Allowed, "%v", resp.Result)
	assert.Equal(t, "30000", portBase(resp), "none of them was stored")
}

// One requester cannot fill the holds for everyone: past its share of never-stored requests
// within the grace it is refused, another team's opt-in is not.
func TestPendingHoldsAreBoundedPerRequester(t *testing.T) {
	opts := patches.DefaultOptions()
	opts.PortRange = patches.PortRange{First: 30000, Last: 32767}
	h := NewStatefulSetHandler(ReaderSnapshot{Reader: fake.NewClientBuilder().WithScheme(Scheme()).Build()}, opts)
	clock := newFakeClock()
	h.recent.now = clock.Now
	for i := range maxPendingHoldsPerUser {
		require.True(t, admitSTSAs(h, "mallory", "mallory", fmt.Sprintf("ghost-%d", i), `"brokerport.io/max-brokers":"1"`).Allowed)
	}
	resp := admitSTSAs(h, "mallory", "mallory", "ghost-x", `"brokerport.io/max-brokers":"1"`)
	require.False(t, resp.Allowed)
	assert.Contains(t, resp.Result.Message, fmt.Sprintf("at most %d per requester", maxPendingHoldsPerUser))
	assert.True(t, admitSTS(h, "team-b", "kafka", "").Allowed, "another requester is not refused")
}

// The race TestConcurrentHoldsAndGhosts found: a held block's StatefulSet reaches the cache after
// the next admission listed the ports in use and before it looked at the holds. The hold is
// forgotten then (the cache has it from now on), but must still count for that admission, whose
// list lacks it.
func TestHeldBlockShownBetweenListAndHoldsStillCounts(t *testing.T) {
	reader := fake.NewClientBuilder().WithScheme(Scheme()).Build()
	var hidden client.ObjectKey // listed by no List while set: the cache before its event
	cache := interceptor.NewClient(reader, interceptor.Funcs{
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			if err := c.List(ctx, list, opts...); err != nil {
				return err
			}
			if sets, ok := list.(*appsv1.StatefulSetList); ok {
				sets.Items = slices.DeleteFunc(sets.Items, func(s appsv1.StatefulSet) bool { return client.ObjectKeyFromObject(&s) == hidden })
			}
			return nil
		},
	})
	h := NewStatefulSetHandler(ReaderSnapshot{Reader: cache}, patches.DefaultOptions())
	h.recent.now = newFakeClock().Now

	first := admitSTS(h, "team-a", "kafka", "")
	require.True(t, first.Allowed, "%v", first.Result)
	require.Equal(t, "30000", portBase(first))
	// Stored, and seen by a Get of the cache but not by the List the next admission makes first.
	hidden = client.ObjectKey{Namespace: "team-a", Name: "kafka"}
	require.NoError(t, reader.Create(context.Background(), stored("team-a", "kafka", "30000", nil)))

	second := admitSTS(h, "team-b", "kafka", "")
	require.True(t, second.Allowed, "%v", second.Result)
	assert.Equal(t, "30008", portBase(second), "team-a's block is still taken")
}

// Concurrent opt-ins, informer events and requests that are never stored (run with -race): a
// stored StatefulSet's block is never given to another, and the blocks of requests never stored
// come back after the grace.
func TestConcurrentHoldsAndGhosts(t *testing.T) {
	reader := fake.NewClientBuilder().WithScheme(Scheme()).Build() // the cache and the API server
	h := NewStatefulSetHandler(ReaderSnapshot{Reader: reader}, patches.DefaultOptions())
	clock := newFakeClock()
	h.recent.now = clock.Now
	informer := h.EventHandler()
	ctx := context.Background()

	var mu sync.Mutex
	storedBases := map[string]string{}
	optIn := func(t *testing.T, name string, store bool) {
		resp := admitSTS(h, "kafka", name, "")
		if !assert.True(t, resp.Allowed, "%s: %v", name, resp.Result) {
			return
		}
		base := portBase(resp)
		if !store {
			return
		}
		sts := stored("kafka", name, base, nil)
		if !assert.NoError(t, reader.Create(ctx, sts)) {
			return
		}
		informer.OnAdd(sts, false)
		mu.Lock()
		storedBases[name] = base
		mu.Unlock()
	}
	run := func(names []string, store func(i int) bool) {
		var wg sync.WaitGroup
		for i, name := range names {
			wg.Go(func() { optIn(t, name, store(i)) })
		}
		// Informer events for StatefulSets no one holds a block for, meanwhile.
		wg.Go(func() {
			for i := range 20 {
				other := stored("elsewhere", fmt.Sprintf("x%d", i), "40000", nil)
				informer.OnAdd(other, false)
				informer.OnUpdate(other, other)
			}
		})
		wg.Wait()
	}

	// The default band holds 10 blocks of 8: 3 stored, 7 never stored.
	run([]string{"a0", "a1", "a2", "g0", "g1", "g2", "g3", "g4", "g5", "g6"}, func(i int) bool { return i < 3 })
	require.Len(t, storedBases, 3)
	clock.Advance(afterGrace)
	// The 7 blocks of the ghosts go to 7 new StatefulSets, all stored.
	run([]string{"b0", "b1", "b2", "b3", "b4", "b5", "b6"}, func(int) bool { return true })

	bases := make([]string, 0, len(storedBases))
	for _, b := range storedBases {
		bases = append(bases, b)
	}
	slices.Sort(bases)
	assert.Equal(t, []string{"30000", "30008", "30016", "30024", "30032", "30040", "30048", "30056", "30064", "30072"}, bases, "10 stored StatefulSets, 10 distinct blocks")
	resp := admitSTS(h, "kafka", "late", "")
	assert.False(t, resp.Allowed, "every block is held by a stored StatefulSet")

	var list appsv1.StatefulSetList
	require.NoError(t, reader.List(ctx, &list, client.InNamespace("kafka")))
	assert.Len(t, list.Items, 10)
}

// A Service that took free ports of the band (the Redpanda chart's default external Service,
// 30081 and 30082, which the band policy now admits) is skipped by the next blocks assigned.
func TestBlocksSkipPortsServicesHold(t *testing.T) {
	chart := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "redpanda", Name: "redpanda-external"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Ports: []corev1.ServicePort{
			{Name: "http-default", Port: 8083, NodePort: 30082}, {Name: "schema-default", Port: 8084, NodePort: 30081}}}}
	reader := fake.NewClientBuilder().WithScheme(Scheme()).WithObjects(chart).Build()
	opts := patches.DefaultOptions()
	opts.PortRange = patches.PortRange{First: 30078, Last: 30085}
	h := NewStatefulSetHandler(ReaderSnapshot{Reader: reader}, opts)
	h.recent.now = newFakeClock().Now

	first := admitSTS(h, "team-a", "kafka", `"brokerport.io/max-brokers":"3"`)
	require.True(t, first.Allowed, "%v", first.Result)
	assert.Equal(t, "30078", portBase(first), "30078-30080: below the chart's ports")
	second := admitSTS(h, "team-b", "kafka", `"brokerport.io/max-brokers":"3"`)
	require.True(t, second.Allowed, "%v", second.Result)
	assert.Equal(t, "30083", portBase(second), "30083-30085: past the chart's 30081 and 30082")
}
