//go:build e2e && scale

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	admissionregistrationv1ac "k8s.io/client-go/applyconfigurations/admissionregistration/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/brokerport/brokerport/test/cluster"
	"github.com/brokerport/brokerport/webhook"
	"github.com/brokerport/brokerport/webhook/matchconditions"
)

// throughputGate holds the Deployment's pods until all of them exist: kube-controller-manager
// creates pods at its client's 20 requests/s, so without it "creation to bound" would measure the
// ReplicaSet controller, not the scheduler and the binding webhook.
const throughputGate = "brokerport.io/throughput"

// TestThroughput (make bench: -tags e2e,scale) measures the scheduler's throughput on 1,000 more
// kwok nodes, side by side in one run, for 3,000 pods of a Deployment in a fresh namespace each:
// (a) without brokerport's binding webhook entry, (b) with it and no matchConditions (every
// binding calls brokerport), (c) with the matchConditions the controller writes for one opted-in
// StatefulSet (the bindings of these pods are not sent). The pods are created with a scheduling
// gate; once all exist the gates are removed, and the rate is the pods over the time from the
// first removal to the last binding (spec.nodeName seen by a watch). The API server's call count
// of bindings.brokerport.io proves each phase is what it claims.
//
// BROKERPORT_THROUGHPUT_PODS and BROKERPORT_THROUGHPUT_NODES scale it down for a smaller machine.
func TestThroughput(t *testing.T) {
	pods, nodes := envInt(t, "BROKERPORT_THROUGHPUT_PODS", 3000), envInt(t, "BROKERPORT_THROUGHPUT_NODES", 1000)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Minute)
	defer cancel()
	fast, clientset := fastClients(t)
	schedulerQPS := ""
	var sched *scheduler
	if qps := envInt(t, "BROKERPORT_THROUGHPUT_SCHEDULER_QPS", 0); qps > 0 {
		schedulerQPS = fmt.Sprintf(", kube-scheduler restarted with --kube-api-qps=%d --kube-api-burst=%d and stopped while the gates are removed: the time is from its start", qps, 2*qps)
		sched = restartScheduler(t, qps)
	}
	addNodes(t, ctx, fast, "tp-node", nodes)

	var results []phaseResult

	// (a) The entry deleted, put back at its place after.
	entry := removeBindingsWebhook(t, ctx)
	restored := false
	restore := func() {
		if !restored {
			restored = true
			restoreBindingsWebhook(t, entry)
		}
	}
	t.Cleanup(restore)
	require.NoError(t, waitFor(ctx, 30*time.Second, "the API server without "+bindingsWebhook, apiServerSeesWebhook(t, ctx, false)))
	results = append(results, runPhase(t, ctx, fast, clientset, sched, "tp-none", "no binding webhook", pods))
	assert.Zero(t, results[0].calls, "calls to %s with the entry deleted", bindingsWebhook)
	restore()
	require.NoError(t, waitFor(ctx, 30*time.Second, "the API server with "+bindingsWebhook, apiServerSeesWebhook(t, ctx, true)))

	// (b) Every binding sent to brokerport.
	require.Empty(t, bindingConditions(ctx), "the shared brokerport runs with --binding-match-conditions=false")
	results = append(results, runPhase(t, ctx, fast, clientset, sched, "tp-all", "binding webhook, no matchConditions", pods))
	assert.GreaterOrEqual(t, results[1].calls, float64(pods), "calls to %s without matchConditions", bindingsWebhook)

	// (c) The controller's matchConditions, naming one opted-in StatefulSet.
	stopController := startMatchConditions(t, ctx)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		stopController()
		apply := admissionregistrationv1ac.MutatingWebhookConfiguration("brokerport").
			WithWebhooks(admissionregistrationv1ac.MutatingWebhook().WithName(bindingsWebhook))
		assert.NoError(t, env.admin.Apply(ctx, apply, client.FieldOwner(matchconditions.FieldManager), client.ForceOwnership))
		assert.Empty(t, bindingConditions(ctx))
	})
	convergeNamespace(t, ctx, "tp-brokers", nil)
	require.NoError(t, env.admin.Create(ctx, brokerStatefulSet("tp-brokers", "kafka", 0)))
	require.NoError(t, waitFor(ctx, 30*time.Second, "the conditions name tp-brokers/kafka", func() error {
		return conditionsName(ctx, "tp-brokers/kafka-")
	}))
	results = append(results, runPhase(t, ctx, fast, clientset, sched, "tp-conditions", "binding webhook with matchConditions", pods))
	assert.Zero(t, results[2].calls, "calls to %s for pods that are not brokers", bindingsWebhook)

	none := results[0].rate
	var rows []string
	for _, r := range results {
		rows = append(rows, fmt.Sprintf("| %s | %d | %.0f | %.1f s | %.1f s | %.1f | %.2f | %s | %s |",
			r.name, r.pods, r.calls, r.release.Seconds(), r.elapsed.Seconds(), r.rate, r.rate/none,
			r.p50.Round(time.Millisecond), r.p99.Round(time.Millisecond)))
	}
	report := fmt.Sprintf("%d pods per phase on %d more kwok nodes (%d in all%s), phases in this order in one run. "+
		"(c)/(a) = %.3f (goal ≥ 0.99), (b)/(a) = %.3f.\n\n"+
		"| phase | pods | calls to %s | gates removed in | first gate removed → last bound | pods/s | ratio to no webhook | p50 gate removed → bound | p99 |\n"+
		"|---|---|---|---|---|---|---|---|---|\n%s\n",
		pods, nodes, nodes+len(nodeIPs), schedulerQPS, results[2].rate/none, results[1].rate/none, bindingsWebhook, strings.Join(rows, "\n"))
	t.Log("\n" + report)
	if out := os.Getenv("BROKERPORT_THROUGHPUT_OUT"); out != "" {
		require.NoError(t, os.WriteFile(out, []byte(report), 0o644))
	}
}

// TestFootprint (make bench: -tags e2e,scale) reads the brokerport process's resident memory and
// CPU time from /proc with 5,000 kwok nodes in its caches, once they are settled and over a
// minute of idleness (nothing changes in the cluster). BROKERPORT_FOOTPRINT_NODES scales it down.
func TestFootprint(t *testing.T) {
	total := envInt(t, "BROKERPORT_FOOTPRINT_NODES", 5000)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	fast, _ := fastClients(t)
	pid := env.brokerport.Pid()
	before, err := readFootprint(pid)
	require.NoError(t, err)
	var existing corev1.NodeList
	require.NoError(t, fast.List(ctx, &existing))
	addNodes(t, ctx, fast, "fp-node", total-len(existing.Items))
	added, err := readFootprint(pid)
	require.NoError(t, err)
	// The informers have the nodes once they were Ready (addNodes waited); a little longer for
	// the garbage collector to return what the initial burst allocated.
	time.Sleep(30 * time.Second)
	settled, err := readFootprint(pid)
	require.NoError(t, err)
	const idle = time.Minute
	time.Sleep(idle)
	after, err := readFootprint(pid)
	require.NoError(t, err)

	report := fmt.Sprintf("brokerport (PID %d) with %d kwok nodes, from /proc/<pid>/status (VmRSS, VmHWM) and /proc/<pid>/stat (utime+stime).\n\n"+
		"| moment | nodes | RSS | peak RSS | CPU seconds since start | CPU seconds in the step |\n|---|---|---|---|---|---|\n"+
		"| before the nodes | %d | %s | %s | %.2f | – |\n"+
		"| %d nodes created and Ready | %d | %s | %s | %.2f | %.2f |\n"+
		"| 30 s later | %d | %s | %s | %.2f | %.2f |\n"+
		"| after %s idle | %d | %s | %s | %.2f | %.2f |\n",
		pid, total,
		len(existing.Items), mib(before.rss), mib(before.hwm), before.cpu,
		total-len(existing.Items), total, mib(added.rss), mib(added.hwm), added.cpu, added.cpu-before.cpu,
		total, mib(settled.rss), mib(settled.hwm), settled.cpu, settled.cpu-added.cpu,
		idle, total, mib(after.rss), mib(after.hwm), after.cpu, after.cpu-settled.cpu)
	t.Log("\n" + report)
	if out := os.Getenv("BROKERPORT_FOOTPRINT_OUT"); out != "" {
		require.NoError(t, os.WriteFile(out, []byte(report), 0o644))
	}
}

type phaseResult struct {
	name             string
	pods             int
	calls            float64
	release, elapsed time.Duration // gates removed; first removal to last binding
	rate             float64       // pods per second over elapsed
	p50, p99         time.Duration // per pod, gate removed to bound
}

// runPhase creates a Deployment of n gated pods in a fresh namespace, waits until all exist,
// removes their gates and watches them bind; then deletes the namespace and waits until it is
// gone, so that the next phase starts on the same cluster.
//
// With sched, the scheduler is stopped while the gates are removed and started once all are: the
// time is then from its start, every pod waiting for it, and the test's own requests are not in it.
func runPhase(t *testing.T, ctx context.Context, fast client.WithWatch, clientset *kubernetes.Clientset, sched *scheduler, namespace, name string, n int) phaseResult {
	t.Helper()
	step("throughput: %s: creating %d gated pods in %s", name, n, namespace)
	require.NoError(t, fast.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}))
	t.Cleanup(func() { deleteNamespace(t, fast, namespace) })
	labels := map[string]string{"app": "throughput"}
	require.NoError(t, fast.Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptrTo(int32(n)), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					SchedulingGates: []corev1.PodSchedulingGate{{Name: throughputGate}},
					Containers:      []corev1.Container{{Name: "web", Image: "web"}},
				}},
		},
	}))
	var list corev1.PodList
	require.NoError(t, waitFor(ctx, 10*time.Minute, fmt.Sprintf("%d pods created", n), func() error {
		if err := fast.List(ctx, &list, client.InNamespace(namespace)); err != nil {
			return err
		}
		if len(list.Items) < n {
			return fmt.Errorf("%d created", len(list.Items))
		}
		return nil
	}))
	// The scheduler had nothing to do with them yet.
	for _, p := range list.Items {
		require.Empty(t, p.Spec.NodeName, "pod %s/%s bound before its gate was removed", namespace, p.Name)
	}
	time.Sleep(3 * time.Second) // let kube-controller-manager's Deployment status writes settle

	boundAt := map[string]time.Time{}
	allBound := make(chan struct{})
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watching := make(chan error, 1)
	go func() {
		watching <- watchBindings(watchCtx, clientset, namespace, list.ResourceVersion, n, boundAt, allBound)
	}()

	calls := bindingCalls(t, ctx)
	step("throughput: %s: removing the gates", name)
	released := make(map[string]time.Time, n)
	var mu sync.Mutex
	names := make(chan string)
	var workers sync.WaitGroup
	if sched != nil {
		sched.stop()
	}
	start := time.Now()
	for range 16 {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for pod := range names {
				mu.Lock()
				released[pod] = time.Now()
				mu.Unlock()
				_, err := clientset.CoreV1().Pods(namespace).Patch(ctx, pod, types.JSONPatchType,
					[]byte(`[{"op":"remove","path":"/spec/schedulingGates"}]`), metav1.PatchOptions{})
				assert.NoError(t, err, "removing the scheduling gate of pod %s/%s", namespace, pod)
			}
		}()
	}
	for _, p := range list.Items {
		names <- p.Name
	}
	close(names)
	workers.Wait()
	release := time.Since(start)
	if sched != nil {
		start = time.Now()
		sched.start(t)
	}

	select {
	case <-allBound:
	case err := <-watching:
		require.NoError(t, err, "watching the pods of %s", namespace)
		require.Fail(t, "the watch of "+namespace+" ended before every pod was bound")
	case <-time.After(10 * time.Minute):
		stopWatch()
		<-watching
		require.Fail(t, fmt.Sprintf("%d of %d pods of %s bound after 10 minutes", len(boundAt), n, namespace))
	}
	stopWatch()
	<-watching
	// The API server's histogram is updated after the webhook returns; the last binding's call is
	// counted within moments.
	time.Sleep(time.Second)
	calls = bindingCalls(t, ctx) - calls

	var last time.Time
	var latencies []time.Duration
	for pod, at := range boundAt {
		if at.After(last) {
			last = at
		}
		if r, ok := released[pod]; ok {
			latencies = append(latencies, at.Sub(later(r, start)))
		}
	}
	slices.Sort(latencies)
	elapsed := last.Sub(start)
	r := phaseResult{name: name, pods: n, calls: calls, release: release, elapsed: elapsed, rate: float64(n) / elapsed.Seconds(),
		p50: latencies[len(latencies)/2], p99: latencies[len(latencies)*99/100]}
	step("throughput: %s: %d pods bound in %s (%.1f pods/s), %.0f calls to %s", name, n, elapsed.Round(time.Millisecond), r.rate, calls, bindingsWebhook)
	deleteNamespace(t, fast, namespace)
	return r
}

// watchBindings records when each pod of the namespace is first seen with spec.nodeName, from
// resourceVersion on, and closes allBound when n pods are. A watch the API server ends is
// resumed from the last resourceVersion seen.
func watchBindings(ctx context.Context, clientset *kubernetes.Clientset, namespace, resourceVersion string, n int, boundAt map[string]time.Time, allBound chan struct{}) error {
	for {
		w, err := clientset.CoreV1().Pods(namespace).Watch(ctx, metav1.ListOptions{ResourceVersion: resourceVersion, AllowWatchBookmarks: true})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		for ev := range w.ResultChan() {
			if ev.Type == watch.Error {
				w.Stop()
				return apierrors.FromObject(ev.Object)
			}
			pod, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			resourceVersion = pod.ResourceVersion
			if _, seen := boundAt[pod.Name]; seen || pod.Spec.NodeName == "" || ev.Type == watch.Bookmark {
				continue
			}
			boundAt[pod.Name] = time.Now()
			if len(boundAt) == n {
				close(allBound)
				w.Stop()
				<-ctx.Done()
				return nil
			}
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// deleteNamespace deletes a namespace and its pods at once (kwok would otherwise finish each
// graceful deletion in turn) and waits until it is gone; again on a second call, harmlessly.
func deleteNamespace(t *testing.T, c client.Client, namespace string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	err := c.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}})
	if apierrors.IsNotFound(err) {
		return
	}
	assert.NoError(t, err, "deleting namespace %s", namespace)
	// A shortcut only: thousands of pods outlast the API server's request timeout (or etcd's, on a
	// loaded machine) while it goes on deleting them, and the namespace controller deletes them
	// anyway. What counts is the namespace gone, below.
	if err := c.DeleteAllOf(ctx, &corev1.Pod{}, client.InNamespace(namespace), client.GracePeriodSeconds(0)); err != nil {
		t.Logf("deleting the pods of %s at once: %v", namespace, err)
	}
	assert.NoError(t, waitFor(ctx, 5*time.Minute, "namespace "+namespace+" gone", func() error {
		err := c.Get(ctx, client.ObjectKey{Name: namespace}, &corev1.Namespace{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there (%v)", err)
	}))
}

// removeBindingsWebhook deletes the binding webhook's entry from brokerport's
// MutatingWebhookConfiguration and returns it with its index, to be put back.
func removeBindingsWebhook(t *testing.T, ctx context.Context) removedWebhook {
	var out removedWebhook
	require.NoError(t, retry.RetryOnConflict(retry.DefaultRetry, func() error {
		mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := env.admin.Get(ctx, client.ObjectKey{Name: "brokerport"}, mwc); err != nil {
			return err
		}
		i := slices.IndexFunc(mwc.Webhooks, func(w admissionregistrationv1.MutatingWebhook) bool { return w.Name == bindingsWebhook })
		if i < 0 {
			return fmt.Errorf("MutatingWebhookConfiguration brokerport has no webhook %s", bindingsWebhook)
		}
		out = removedWebhook{index: i, entry: mwc.Webhooks[i]}
		mwc.Webhooks = slices.Delete(mwc.Webhooks, i, i+1)
		return env.admin.Update(ctx, mwc)
	}))
	return out
}

type removedWebhook struct {
	index int
	entry admissionregistrationv1.MutatingWebhook
}

func restoreBindingsWebhook(t *testing.T, removed removedWebhook) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	assert.NoError(t, retry.RetryOnConflict(retry.DefaultRetry, func() error {
		mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := env.admin.Get(ctx, client.ObjectKey{Name: "brokerport"}, mwc); err != nil {
			return err
		}
		if slices.ContainsFunc(mwc.Webhooks, func(w admissionregistrationv1.MutatingWebhook) bool { return w.Name == bindingsWebhook }) {
			return nil
		}
		entry := removed.entry
		// The bundle brokerport keeps now, should it have changed meanwhile.
		if len(mwc.Webhooks) > 0 {
			entry.ClientConfig.CABundle = mwc.Webhooks[0].ClientConfig.CABundle
		}
		mwc.Webhooks = slices.Insert(mwc.Webhooks, min(removed.index, len(mwc.Webhooks)), entry)
		return env.admin.Update(ctx, mwc)
	}), "restoring webhook %s of MutatingWebhookConfiguration brokerport", bindingsWebhook)
}

// apiServerSeesWebhook checks, with a binding of a pod that does not exist (admission comes
// before the API server finds no pod to bind), whether the API server calls the binding webhook:
// the configuration reaches its admission chain through an informer, moments after the update.
func apiServerSeesWebhook(t *testing.T, ctx context.Context, want bool) func() error {
	return func() error {
		before := bindingCalls(t, ctx)
		binding := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "no-such-pod"},
			Target: corev1.ObjectReference{Kind: "Node", Name: "kwok-node-0"}}
		_ = env.clientset.CoreV1().Pods("default").Bind(ctx, binding, metav1.CreateOptions{})
		if called := bindingCalls(t, ctx) > before; called != want {
			return fmt.Errorf("the API server called %s: %v", bindingsWebhook, called)
		}
		return nil
	}
}

// scheduler is the kube-scheduler this test runs in place of the control plane's.
type scheduler struct {
	binary string
	args   []string
	proc   *cluster.Process
}

func (s *scheduler) stop() {
	if s.proc != nil {
		s.proc.Stop()
		s.proc = nil
	}
}

func (s *scheduler) start(t *testing.T) {
	var err error
	s.proc, err = env.cp.StartProcess("kube-scheduler-throughput", s.binary, s.args)
	require.NoError(t, err)
}

// restartScheduler replaces the control plane's kube-scheduler with one whose client may send qps
// requests per second (its default is 50, burst 100: one binding each, so the rate of bindings
// would otherwise be that limit, whatever a binding costs), and puts the original back, with its
// own arguments, when the test ends.
func restartScheduler(t *testing.T, qps int) *scheduler {
	var pid int
	var args []string
	for _, p := range env.cp.Pids() {
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
		if err != nil {
			continue
		}
		argv := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		if filepath.Base(argv[0]) == "kube-scheduler" {
			pid, args = p, argv[1:]
		}
	}
	require.NotZero(t, pid, "no kube-scheduler among the control plane's processes")
	binary := filepath.Join(env.cp.Bin, "kube-scheduler")
	cluster.StopPid(pid)
	step("kube-scheduler restarted with --kube-api-qps=%d", qps)
	s := &scheduler{binary: binary, args: append(slices.Clone(args), fmt.Sprintf("--kube-api-qps=%d", qps), fmt.Sprintf("--kube-api-burst=%d", 2*qps))}
	s.start(t)
	t.Cleanup(func() {
		s.stop()
		_, err := env.cp.StartProcess("kube-scheduler", binary, args)
		assert.NoError(t, err, "restarting kube-scheduler as it was")
	})
	return s
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// fastClients are admin clients without client-side throttling worth the name, so that the
// test's own requests (nodes, gate removals) are not what is measured.
func fastClients(t *testing.T) (client.WithWatch, *kubernetes.Clientset) {
	restConfig, err := clientcmd.BuildConfigFromFlags("", env.cp.AdminKubeconfig)
	require.NoError(t, err)
	restConfig.QPS, restConfig.Burst = 2000, 4000
	c, err := client.NewWithWatch(restConfig, client.Options{Scheme: webhook.Scheme()})
	require.NoError(t, err)
	clientset, err := kubernetes.NewForConfig(restConfig)
	require.NoError(t, err)
	return c, clientset
}

// addNodes creates n kwok nodes <prefix>-<i>, as cluster.CreateNodes makes them, waits until they
// are Ready and untainted, and deletes them when the test ends. kube-controller-manager's node
// lifecycle controller taints each new node not-ready and untaints it once kwok has made it Ready,
// at its client's 20 requests/s: minutes for thousands of nodes, churning every node informer
// meanwhile. The test removes the taint of a Ready node itself; the controller, which reads the
// node when it gets to it, then finds nothing to do.
func addNodes(t *testing.T, ctx context.Context, c client.Client, prefix string, n int) {
	if n <= 0 {
		return
	}
	step("creating %d kwok nodes %s-*", n, prefix)
	start := time.Now()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		parallel(n, func(i int) {
			err := c.Delete(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", prefix, i)}})
			if err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("deleting node %s-%d: %v", prefix, i, err)
			}
		})
	})
	parallel(n, func(i int) {
		assert.NoError(t, c.Create(ctx, kwokNode(fmt.Sprintf("%s-%d", prefix, i), i)))
	})
	require.False(t, t.Failed(), "creating the nodes")
	settled := func() error {
		var nodes corev1.NodeList
		if err := c.List(ctx, &nodes, client.MatchingLabels{"brokerport.io/e2e-nodes": prefix}); err != nil {
			return err
		}
		waiting := 0
		for _, node := range nodes.Items {
			tainted := slices.ContainsFunc(node.Spec.Taints, func(t corev1.Taint) bool { return t.Key == corev1.TaintNodeNotReady })
			if !nodeReady(&node) {
				waiting++
			} else if tainted {
				waiting++
				node.Spec.Taints = slices.DeleteFunc(node.Spec.Taints, func(t corev1.Taint) bool { return t.Key == corev1.TaintNodeNotReady })
				_ = c.Update(ctx, &node) // a conflict is retried on the next pass
			}
		}
		if len(nodes.Items) != n || waiting > 0 {
			return fmt.Errorf("%d of %d nodes not Ready or still tainted", waiting+n-len(nodes.Items), n)
		}
		return nil
	}
	require.NoError(t, waitFor(ctx, 10*time.Minute, fmt.Sprintf("%d nodes Ready and untainted", n), settled))
	// Once more after a pause: the controller may have tainted a node from an older view.
	time.Sleep(5 * time.Second)
	require.NoError(t, waitFor(ctx, 5*time.Minute, fmt.Sprintf("%d nodes Ready and untainted", n), settled))
	step("%d kwok nodes Ready and untainted in %s", n, time.Since(start).Round(100*time.Millisecond))
}

// kwokNode is a node as cluster.CreateNodes makes it, labeled for addNodes.
func kwokNode(name string, i int) *corev1.Node {
	capacity := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("32"), corev1.ResourceMemory: resource.MustParse("256Gi"), corev1.ResourcePods: resource.MustParse("110")}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Annotations: map[string]string{"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
			Labels: map[string]string{
				corev1.LabelHostname: name, corev1.LabelTopologyZone: fmt.Sprintf("zone-%c", 'a'+i%2),
				"type": "kwok", corev1.LabelOSStable: "linux", corev1.LabelArchStable: "amd64",
				"brokerport.io/e2e-nodes": strings.TrimSuffix(name, fmt.Sprintf("-%d", i)),
			},
		},
		Status: corev1.NodeStatus{
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("10.100.%d.%d", i/250, i%250+1)},
				{Type: corev1.NodeExternalIP, Address: fmt.Sprintf("10.200.%d.%d", i/250, i%250+1)},
			},
			Allocatable: capacity, Capacity: capacity,
		},
	}
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// parallel runs do(0..n-1) on 16 goroutines.
func parallel(n int, do func(i int)) {
	next := make(chan int)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				do(i)
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

// footprint is a process's resident memory (now and peak, bytes) and CPU time (user+system, s).
type footprint struct {
	rss, hwm int64
	cpu      float64
}

// readFootprint reads /proc/<pid>/status and /proc/<pid>/stat; clock ticks are Linux's
// USER_HZ, 100 per second.
func readFootprint(pid int) (footprint, error) {
	var f footprint
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return f, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		key, value, ok := strings.Cut(line, ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			return f, fmt.Errorf("/proc/%d/status %s: %w", pid, key, err)
		}
		if key == "VmRSS" {
			f.rss = kib * 1024
		} else {
			f.hwm = kib * 1024
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return f, err
	}
	// Fields after the command name, which is in parentheses and may hold spaces: state is
	// field 3, utime 14 and stime 15.
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	if len(fields) < 13 {
		return f, fmt.Errorf("/proc/%d/stat: %d fields after the name", pid, len(fields))
	}
	for _, s := range fields[11:13] {
		ticks, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return f, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		f.cpu += float64(ticks) / 100
	}
	return f, nil
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	require.NoError(t, err, "%s=%q", name, v)
	return n
}
