//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	admissionregistrationv1ac "k8s.io/client-go/applyconfigurations/admissionregistration/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/brokerport/brokerport/patches"
	"github.com/brokerport/brokerport/webhook/controller"
	"github.com/brokerport/brokerport/webhook/matchconditions"
)

// TestBrokerportDownOthersUnaffected is issue 15's "brokerport scaled to 0": with the binding
// webhook's matchConditions in place and brokerport stopped (nothing answers on its port), a
// Deployment of pods that are not brokers binds with no call to any brokerport webhook, none
// failed or timed out, and not slower than the same Deployment with brokerport up; a broker
// bound meanwhile is bound without its host (the binding webhook's call failed open, at once),
// so its gate would hold it. The same again with brokerport hung rather than gone (connections
// accepted, never answered): other pods still never call, and a broker's binding waits for the
// webhook's 2 s timeout, then fails open. Once brokerport is back the companion controller
// writes the brokers' addresses and publishes them. The API server's own metrics are the proof.
//
// A broker cannot be created while brokerport is down: the pod webhook fails closed (see
// TestBrokerport's brokerportDown). What can happen is a broker admitted while brokerport was up
// and bound while it is down, which is what this test does: the broker StatefulSet's brokers may
// only go to nodes labeled scaledZeroNodeLabel, one per node, and the second and third nodes get
// the label only while brokerport is unavailable.
func TestBrokerportDownOthersUnaffected(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	const brokers, up, down, hung, sts = "scaledzero-brokers", "scaledzero-up", "scaledzero-down", "scaledzero-hung", "kafka"
	const pods = 100
	for _, namespace := range []string{brokers, up, down, hung} {
		convergeNamespace(t, ctx, namespace, nil)
	}

	stopController := startMatchConditions(t, ctx)
	t.Cleanup(func() {
		// As TestMatchConditions leaves it: no matchConditions once no controller keeps them.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		stopController()
		apply := admissionregistrationv1ac.MutatingWebhookConfiguration("brokerport").
			WithWebhooks(admissionregistrationv1ac.MutatingWebhook().WithName(bindingsWebhook))
		assert.NoError(t, env.admin.Apply(ctx, apply, client.FieldOwner(matchconditions.FieldManager), client.ForceOwnership))
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for i := range nodeIPs {
			assert.NoError(t, setNodeLabel(ctx, fmt.Sprintf("kwok-node-%d", i), scaledZeroNodeLabel, false))
		}
	})
	// Registered last, so it runs first: the shared brokerport is back before the namespaces go
	// (their cleanup waits for the controller's Services and ConfigMaps to go), and for the tests
	// after this one, even if this one fails while brokerport is down.
	stopped := false
	restart := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		p, err := env.cp.StartBrokerport(ctx, env.admin, env.clientset, env.binary, env.port, brokerportArgs...)
		if p != nil {
			env.brokerport = p
			stopped = false
		}
		return err
	}
	t.Cleanup(func() {
		if stopped {
			assert.NoError(t, restart(), "restarting the shared brokerport for the tests after this one")
		}
	})

	// The opted-in StatefulSet that makes the conditions non-trivial: opted in with no replica,
	// and scaled once the conditions name it, so that no binding races them. kafka-0 goes to the
	// one node labeled; kafka-1 and kafka-2 wait for theirs.
	require.NoError(t, setNodeLabel(ctx, "kwok-node-0", scaledZeroNodeLabel, true))
	set := brokerSet(brokers, sts, 0, true)
	set.Spec.PodManagementPolicy = appsv1.ParallelPodManagement
	set.Spec.Template.Spec.NodeSelector = map[string]string{scaledZeroNodeLabel: "true"}
	require.NoError(t, env.admin.Create(ctx, set))
	require.NoError(t, waitFor(ctx, 30*time.Second, "the conditions name "+brokers+"/"+sts, func() error {
		return conditionsName(ctx, brokers+"/"+sts+"-")
	}))
	before := scrapeWebhooks(t, ctx)
	scaleTo(t, ctx, brokers, sts, 3)
	require.NoError(t, waitFor(ctx, time.Minute, "kafka-0 bound with its host, kafka-1 and kafka-2 waiting for a node", func() error {
		if err := brokersWithHost(ctx, brokers, sts, 1); err != nil {
			return err
		}
		for _, name := range []string{sts + "-1", sts + "-2"} {
			pod := &corev1.Pod{}
			if err := env.admin.Get(ctx, client.ObjectKey{Namespace: brokers, Name: name}, pod); err != nil {
				return err
			}
			if pod.Spec.NodeName != "" || !unschedulable(pod) {
				return fmt.Errorf("pod %s on %q, not (yet) unschedulable", pod.Name, pod.Spec.NodeName)
			}
		}
		return nil
	}))
	d := scrapeWebhooks(t, ctx).minus(before)
	require.Equal(t, 1.0, d.bindingCalls, "calls to %s for kafka-0's binding", bindingsWebhook)
	require.Zero(t, d.failOpen+d.rejected, "failed calls to brokerport with brokerport up")

	// Brokerport up: the same Deployment as below, for its time.
	upTime, upTraffic := timeBound(t, ctx, up, pods)
	t.Logf("brokerport up: %d pods %s; %s", pods, upTime, upTraffic)
	assert.Zero(t, upTraffic.podCalls(), "calls to brokerport's pod and binding webhooks for pods that are not brokers")
	assert.GreaterOrEqual(t, upTraffic.exclusions, float64(pods), "bindings the matchConditions excluded")

	// Scaled to 0: every replica of brokerport gone, its matchConditions controller with it (the
	// conditions it wrote stay in the API server), and nothing answering where the webhooks point.
	stopController()
	env.brokerport.Stop()
	stopped = true
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", env.port), time.Second)
	if err == nil {
		conn.Close()
	}
	require.Error(t, err, "something still answers on brokerport's webhook port %d", env.port)

	downTime, downTraffic := timeBound(t, ctx, down, pods)
	t.Logf("brokerport down: %d pods %s; %s", pods, downTime, downTraffic)
	othersUnaffected(t, downTraffic, pods, downTime, upTime, "brokerport down")

	// A broker bound while brokerport is down: the API server calls brokerport (the conditions
	// name the broker), is refused at connect and fails open at once (failurePolicy Ignore).
	late, lateTraffic := bindWaitingBroker(t, ctx, brokers, sts, "kwok-node-1")
	t.Logf("broker bound with brokerport down: %s", lateTraffic)
	assert.Less(t, lateTraffic.bindingSeconds, 0.5, "seconds the refused call to %s took", bindingsWebhook)

	// Hung instead of down: something accepts connections on brokerport's port and never
	// answers. Pods that are not brokers still never call; a broker's binding waits for the
	// webhook's timeoutSeconds (2 s), then fails open.
	stopHang := hang(t, env.port)
	hungTime, hungTraffic := timeBound(t, ctx, hung, pods)
	t.Logf("brokerport hung: %d pods %s; %s", pods, hungTime, hungTraffic)
	othersUnaffected(t, hungTraffic, pods, hungTime, upTime, "brokerport hung")
	hungBroker, hungBrokerTraffic := bindWaitingBroker(t, ctx, brokers, sts, "kwok-node-2")
	t.Logf("broker bound with brokerport hung: %s", hungBrokerTraffic)
	assert.InDelta(t, 2.0, hungBrokerTraffic.bindingSeconds, 0.5, "seconds the hung call to %s took: its timeoutSeconds", bindingsWebhook)
	stopHang()
	writeDownReport(t, pods, []downRun{{"up", upTime, upTraffic}, {"down", downTime, downTraffic}, {"hung", hungTime, hungTraffic}},
		lateTraffic, hungBrokerTraffic)

	// Brokerport back, as TestMain started it: the companion controller writes both brokers'
	// addresses and publishes them; their gates would then let them start.
	restarted := time.Now()
	require.NoError(t, restart(), "restarting the shared brokerport")
	require.NoError(t, waitFor(ctx, time.Minute, "kafka-1 and kafka-2 repaired with their host", func() error { return brokersWithHost(ctx, brokers, sts, 3) }))
	for _, pod := range []*corev1.Pod{late, hungBroker} {
		require.NoError(t, env.admin.Get(ctx, client.ObjectKeyFromObject(pod), pod))
		node := &corev1.Node{}
		require.NoError(t, env.admin.Get(ctx, client.ObjectKey{Name: pod.Spec.NodeName}, node))
		ip := externalIP(node)
		assert.Equal(t, ip, pod.Annotations[patches.AnnotationHost], "pod %s's host: %s's ExternalIP", pod.Name, node.Name)
		assert.NoError(t, waitFor(ctx, 30*time.Second, "an AddressRepaired Event for "+pod.Name, func() error {
			return eventSince(ctx, brokers, pod.Name, "AddressRepaired", ip, restarted)
		}))
	}
	require.NoError(t, waitFor(ctx, time.Minute, "the 3 brokers published", func() error { return converged(ctx, brokers, sts, 3) }))
	cm := &corev1.ConfigMap{}
	require.NoError(t, env.admin.Get(ctx, client.ObjectKey{Namespace: brokers, Name: controller.ConfigMapName(sts)}, cm))
	t.Logf("bootstrap.servers once brokerport is back: %s", cm.Data["bootstrap.servers"])
}

// othersUnaffected checks what the API server did for a Deployment of n pods that are not
// brokers, created with brokerport unavailable (how: the label), against the same Deployment
// with brokerport up.
func othersUnaffected(t *testing.T, d webhookTraffic, n int, took, upTook bindTimes, how string) {
	t.Helper()
	// The proof: the API server never called brokerport for these pods, so none of them waited
	// for it; the exclusions say the matchConditions decided so, in the API server.
	assert.Zero(t, d.allCalls(), "calls to brokerport's webhooks for pods that are not brokers, %s", how)
	assert.Zero(t, d.failOpen+d.rejected, "failed or timed-out calls to brokerport's webhooks, %s", how)
	assert.Zero(t, d.evalErrors, "matchConditions that failed to evaluate, %s", how)
	assert.GreaterOrEqual(t, d.exclusions, float64(n), "bindings the matchConditions excluded, %s", how)
	// A sanity check, not a benchmark: the runs schedule the same Deployment on the same nodes
	// one after the other, on a 2-core machine shared with other work, where the same run varies
	// by tens of percent and by a second or so of controller-manager and scheduler batching:
	// half again plus 2 s for the whole Deployment, plus 1 s for the median pod, absorb that.
	// The median pod is what a webhook wait would show: without the matchConditions a hung
	// brokerport holds every binding for its 2 s timeout, but the scheduler binds in parallel,
	// so the whole Deployment is only about 2 s later. A refused call costs next to nothing: for
	// "down", the 0 calls above are the proof.
	assert.LessOrEqual(t, took.all, upTook.all*3/2+2*time.Second, "pods that are not brokers all bound later, %s (up: %s)", how, upTook)
	assert.LessOrEqual(t, took.p50, upTook.p50*3/2+time.Second, "the median pod that is not a broker bound later, %s (up: %s)", how, upTook)
}

// bindWaitingBroker labels node for scaledZeroNodeLabel, where one of StatefulSet sts's
// waiting brokers then goes (which one is the scheduler's choice), with brokerport unavailable:
// the binding webhook was called once and failed open, so the broker is bound without its host
// and its gate holds it. It returns the pod as bound and what the API server's metrics saw
// meanwhile.
func bindWaitingBroker(t *testing.T, ctx context.Context, namespace, sts, node string) (*corev1.Pod, webhookTraffic) {
	t.Helper()
	before := scrapeWebhooks(t, ctx)
	require.NoError(t, setNodeLabel(ctx, node, scaledZeroNodeLabel, true))
	var pod *corev1.Pod
	require.NoError(t, waitFor(ctx, time.Minute, "a broker of "+sts+" bound to "+node, func() error {
		var pods corev1.PodList
		if err := env.admin.List(ctx, &pods, client.InNamespace(namespace), client.MatchingLabels{"app": sts}); err != nil {
			return err
		}
		for i, p := range pods.Items {
			if p.Spec.NodeName == node {
				pod = &pods.Items[i]
				return nil
			}
		}
		return fmt.Errorf("none of the %d pods on %s yet", len(pods.Items), node)
	}))
	d := scrapeWebhooks(t, ctx).minus(before)
	assert.Equal(t, node, pod.Spec.NodeName)
	assert.Empty(t, pod.Annotations[patches.AnnotationHost], "pod %s bound with a host while brokerport was unavailable", pod.Name)
	assert.True(t, slices.ContainsFunc(pod.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == patches.GateContainer }),
		"pod %s has no gate (%s) to hold it until its host is written", pod.Name, patches.GateContainer)
	assert.Equal(t, 1.0, d.bindingCalls, "calls to %s for %s's binding", bindingsWebhook, pod.Name)
	assert.Equal(t, 1.0, d.failOpen, "calls to %s that failed open", bindingsWebhook)
	return pod, d
}

// hang accepts connections on port and never answers, as a brokerport stuck before its TLS
// handshake would, until the returned function is called.
func hang(t *testing.T, port int) func() {
	t.Helper()
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	require.NoError(t, err)
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			l.Close()
			mu.Lock()
			defer mu.Unlock()
			for _, c := range conns {
				c.Close()
			}
		})
	}
	t.Cleanup(stop) // before the restart, which needs the port
	return stop
}

// scaledZeroNodeLabel marks the nodes TestBrokerportDownOthersUnaffected's brokers may go to.
const scaledZeroNodeLabel = "e2e-scaledzero"

// setNodeLabel puts label=true on a node, or takes it off.
func setNodeLabel(ctx context.Context, name, label string, on bool) error {
	value := `"true"`
	if !on {
		value = "null"
	}
	return env.admin.Patch(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}},
		client.RawPatch(types.MergePatchType, []byte(fmt.Sprintf(`{"metadata":{"labels":{%q:%s}}}`, label, value))))
}

// bindTimes is how long the pods of a Deployment took to be bound: all of them, from the
// Deployment's create, and each, from its own create (median and slowest), as this process saw
// them through a watch.
type bindTimes struct{ all, p50, max time.Duration }

func (b bindTimes) String() string {
	ms := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	return fmt.Sprintf("all bound %s after the Deployment's create, each pod %s (median) to %s (slowest) after its own", ms(b.all), ms(b.p50), ms(b.max))
}

// timeBound creates a Deployment of n pods that are not brokers in namespace and returns how
// long they took to be bound, through a watch started before the create, and what the API
// server's metrics saw meanwhile. It then deletes the Deployment and waits for its pods to go,
// so that each run finds the nodes as the one before.
func timeBound(t *testing.T, ctx context.Context, namespace string, n int) (bindTimes, webhookTraffic) {
	t.Helper()
	w, err := env.admin.Watch(ctx, &corev1.PodList{}, client.InNamespace(namespace))
	require.NoError(t, err)
	defer w.Stop()
	labels := map[string]string{"app": "web"}
	before := scrapeWebhooks(t, ctx)
	start := time.Now()
	require.NoError(t, env.admin.Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptrTo(int32(n)), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web"}}}},
		},
	}))
	created := map[types.UID]time.Time{} // first seen, unbound
	var each []time.Duration
	timeout := time.After(3 * time.Minute)
	for len(each) < n {
		select {
		case ev, ok := <-w.ResultChan():
			require.True(t, ok, "the pod watch of %s ended", namespace)
			pod, isPod := ev.Object.(*corev1.Pod)
			if !isPod || ev.Type == watch.Deleted {
				continue
			}
			first, seen := created[pod.UID]
			switch {
			case !seen:
				created[pod.UID] = time.Now()
				require.Empty(t, pod.Spec.NodeName, "pod %s seen first bound: the watch missed its create", pod.Name)
			case pod.Spec.NodeName != "" && !first.IsZero():
				each = append(each, time.Since(first))
				created[pod.UID] = time.Time{} // counted
			}
		case <-timeout:
			t.Fatalf("%d of the %d pods of Deployment %s/web bound after 3 minutes", len(each), n, namespace)
		}
	}
	slices.Sort(each)
	took := bindTimes{all: time.Since(start), p50: each[len(each)/2], max: each[len(each)-1]}
	d := scrapeWebhooks(t, ctx).minus(before)
	require.NoError(t, bound(ctx, namespace, n), "every pod of Deployment %s/web bound", namespace)

	require.NoError(t, env.admin.Delete(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "web"}},
		client.PropagationPolicy(metav1.DeletePropagationForeground)))
	require.NoError(t, waitFor(ctx, 2*time.Minute, "the pods of "+namespace+" gone", func() error {
		var pods corev1.PodList
		if err := env.admin.List(ctx, &pods, client.InNamespace(namespace)); err != nil {
			return err
		}
		if len(pods.Items) > 0 {
			return fmt.Errorf("%d pods left", len(pods.Items))
		}
		return nil
	}))
	return took, d
}

// webhookTraffic is what the API server's metrics say about brokerport's webhooks, summed over
// their label sets; minus gives what happened between two scrapes.
type webhookTraffic struct {
	calls          map[string]float64 // calls to each brokerport webhook, by name (apiserver_admission_webhook_request_total)
	bindingCalls   float64            // calls to bindings.brokerport.io (admission_duration_seconds_count, as bindingCalls reads)
	bindingSeconds float64            // the time those calls took (admission_duration_seconds_sum)
	failOpen       float64            // calls to a brokerport webhook that failed and were ignored (failurePolicy Ignore)
	rejected       float64            // calls to a brokerport webhook that failed or refused (failurePolicy Fail)
	exclusions     float64            // bindings the binding webhook's matchConditions kept from brokerport
	evalErrors     float64            // bindings whose matchConditions failed to evaluate
}

func (a webhookTraffic) minus(b webhookTraffic) webhookTraffic {
	calls := map[string]float64{}
	for name, n := range a.calls {
		if n != b.calls[name] {
			calls[name] = n - b.calls[name]
		}
	}
	return webhookTraffic{calls, a.bindingCalls - b.bindingCalls, a.bindingSeconds - b.bindingSeconds,
		a.failOpen - b.failOpen, a.rejected - b.rejected, a.exclusions - b.exclusions, a.evalErrors - b.evalErrors}
}

func (a webhookTraffic) allCalls() float64 {
	total := 0.0
	for _, n := range a.calls {
		total += n
	}
	return total
}

// podCalls are the calls a pod can cause: its create (pods.brokerport.io) and its binding. The
// StatefulSet and Service webhooks are called for the companion controller's own writes, which
// go on while brokerport is up.
func (a webhookTraffic) podCalls() float64 {
	return a.calls["pods.brokerport.io"] + a.calls[bindingsWebhook]
}

func (a webhookTraffic) String() string {
	return fmt.Sprintf("calls to brokerport %v (to %s %g, %.3f s in all), failed open %g, rejected %g, excluded by matchConditions %g, evaluation errors %g",
		a.calls, bindingsWebhook, a.bindingCalls, a.bindingSeconds, a.failOpen, a.rejected, a.exclusions, a.evalErrors)
}

func scrapeWebhooks(t *testing.T, ctx context.Context) webhookTraffic {
	t.Helper()
	raw, err := env.clientset.RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	require.NoError(t, err)
	w := webhookTraffic{calls: map[string]float64{}}
	for _, line := range strings.Split(string(raw), "\n") {
		metric, labels, found := strings.Cut(line, "{")
		_, name, _ := strings.Cut(labels, `name="`)
		name, _, _ = strings.Cut(name, `"`)
		if !found || !strings.HasSuffix(name, ".brokerport.io") {
			continue
		}
		var v float64
		_, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v)
		require.NoError(t, err, line)
		switch metric {
		case "apiserver_admission_webhook_request_total":
			w.calls[name] += v
		case "apiserver_admission_webhook_fail_open_count":
			w.failOpen += v
		case "apiserver_admission_webhook_rejection_count":
			w.rejected += v
		}
		if name != bindingsWebhook {
			continue
		}
		switch metric {
		case "apiserver_admission_webhook_admission_duration_seconds_count":
			w.bindingCalls += v
		case "apiserver_admission_webhook_admission_duration_seconds_sum":
			w.bindingSeconds += v
		case "apiserver_admission_match_condition_exclusions_total":
			w.exclusions += v
		case "apiserver_admission_match_condition_evaluation_errors_total":
			w.evalErrors += v
		}
	}
	return w
}

// downRun is one Deployment of TestBrokerportDownOthersUnaffected: brokerport's state, how long
// its pods took to bind and what the API server saw meanwhile.
type downRun struct {
	brokerport string
	times      bindTimes
	traffic    webhookTraffic
}

// writeDownReport logs the runs as BENCHMARKS.md's table, and writes it to
// $BROKERPORT_DOWN_OUT when set (make bench).
func writeDownReport(t *testing.T, pods int, runs []downRun, brokerDown, brokerHung webhookTraffic) {
	t.Helper()
	ms := func(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }
	var b strings.Builder
	b.WriteString("| brokerport | calls to any brokerport webhook | failed open | all " + fmt.Sprint(pods) + " bound | ratio to up | median pod create → bound | slowest pod |\n|---|---|---|---|---|---|---|\n")
	for _, r := range runs {
		fmt.Fprintf(&b, "| %s | %g | %g | %.2f s | %.2f | %s | %s |\n", r.brokerport, r.traffic.allCalls(), r.traffic.failOpen,
			r.times.all.Seconds(), r.times.all.Seconds()/runs[0].times.all.Seconds(), ms(r.times.p50), ms(r.times.max))
	}
	fmt.Fprintf(&b, "\nA broker bound while brokerport was down: %g binding call, %g failed open, in %.3f s; while it was hung: %g call, %g failed open, in %.3f s.\n",
		brokerDown.bindingCalls, brokerDown.failOpen, brokerDown.bindingSeconds, brokerHung.bindingCalls, brokerHung.failOpen, brokerHung.bindingSeconds)
	t.Log("\n" + b.String())
	if out := os.Getenv("BROKERPORT_DOWN_OUT"); out != "" {
		require.NoError(t, os.WriteFile(out, []byte(b.String()), 0o644))
	}
}
