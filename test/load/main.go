// Command load measures brokerport's admission latency the way the API server sees it: one
// controller-runtime webhook server over TLS serves brokerport's handlers and a no-op handler
// side by side; a keep-alive HTTP/1.1 client (as the API server's) sends AdmissionReviews at
// fixed rates, alternating each handler's requests with the no-op's, so that the ratio of the two
// is measured in the same run, under the same load, on the same machine.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	"sigs.k8s.io/yaml"

	"github.com/brokerport/brokerport/certs"
	"github.com/brokerport/brokerport/patches"
	"github.com/brokerport/brokerport/test/cachedreader"
	"github.com/brokerport/brokerport/test/cluster"
	"github.com/brokerport/brokerport/webhook"
)

type target struct {
	name, path string
	body       []byte
}

func main() {
	rates := flag.String("rates", "500,1000,2000", "requests per second to send to each pair")
	duration := flag.Duration("duration", 4*time.Second, "how long each rate runs")
	mem := flag.Bool("memory", false, "measure the informer caches' memory instead (5,000 nodes, 20,000 pods of which 300 brokers)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run (client and server) to this file")
	only := flag.String("only", "", "run only the handlers whose name contains this")
	flag.Parse()
	if *cpuProfile != "" {
		stop, err := startCPUProfile(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "load:", err)
			os.Exit(1)
		}
		defer stop()
	}
	var err error
	if *mem {
		err = memory(5000, 20000, 300)
	} else {
		err = run(parseRates(*rates), *duration, *only)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

func parseRates(s string) []int {
	var out []int
	for _, f := range bytes.Split([]byte(s), []byte(",")) {
		var n int
		fmt.Sscan(string(f), &n)
		if n > 0 {
			out = append(out, n)
		}
	}
	return out
}

func run(rates []int, duration time.Duration, only string) error {
	// brokerport's own logger, at its default level, to stderr: what the server pays to log.
	log.SetLogger(zap.New(zap.WriteTo(os.Stderr)))
	dir, err := os.MkdirTemp("", "brokerport-load-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ca, err := selfSigned(dir)
	if err != nil {
		return err
	}
	server, port, err := serve(dir)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = server.Start(ctx) }()

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	httpClient := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", NextProtos: []string{"http/1.1"}},
		MaxIdleConnsPerHost: 256,
		ForceAttemptHTTP2:   false,
	}}
	base := fmt.Sprintf("https://127.0.0.1:%d", port)
	targets, err := targets()
	if err != nil {
		return err
	}
	if err := waitUp(httpClient, base+"/noop", targets[0].body); err != nil {
		return err
	}

	fmt.Printf("| handler | rate/s | p50 | p90 | p99 | no-op p50 | no-op p99 | p50 ratio | p99 ratio |\n|---|---|---|---|---|---|---|---|---|\n")
	var verdicts []verdict
	for _, t := range targets {
		if !strings.Contains(t.name, only) {
			continue
		}
		// The no-op is sent the same request: the ratio is what the handler adds to it.
		noop := target{name: "no-op", path: "/noop", body: t.body}
		v := verdict{handler: t.name, p50: true, p99: true}
		for _, rate := range rates {
			// Warm up connections and caches, then measure.
			measure(httpClient, base, t, noop, rate, duration/4)
			got, floor := measure(httpClient, base, t, noop, rate, duration)
			p50 := float64(quantile(got, 50)) / float64(quantile(floor, 50))
			p99 := float64(quantile(got, 99)) / float64(quantile(floor, 99))
			fmt.Printf("| %s | %d | %s | %s | %s | %s | %s | %.2f× | %.2f× |\n", t.name, rate,
				pct(got, 50), pct(got, 90), pct(got, 99), pct(floor, 50), pct(floor, 99), p50, p99)
			v.p50 = v.p50 && p50 <= targetP50
			v.p99 = v.p99 && p99 <= targetP99
		}
		verdicts = append(verdicts, v)
	}
	fmt.Printf("\n%s\n", verdictLine(verdicts))
	return nil
}

// Issue 15's targets: a handler's p50 and p99 over the no-op's, in the same run.
const targetP50, targetP99 = 1.5, 1.2

// verdict is whether a handler met each target at every rate.
type verdict struct {
	handler  string
	p50, p99 bool
}

func verdictLine(vs []verdict) string {
	var p50, not50, p99, not99 []string
	for _, v := range vs {
		if v.p50 {
			p50 = append(p50, v.handler)
		} else {
			not50 = append(not50, v.handler)
		}
		if v.p99 {
			p99 = append(p99, v.handler)
		} else {
			not99 = append(not99, v.handler)
		}
	}
	list := func(names []string) string {
		if len(names) == 0 {
			return "none"
		}
		return strings.Join(names, "; ")
	}
	return fmt.Sprintf("At every rate of this run, p50 ≤ %.1f× the no-op's: %s (not: %s). p99 ≤ %.1f×: %s (not: %s).",
		targetP50, list(p50), list(not50), targetP99, list(p99), list(not99))
}

// measure sends rate requests a second for d, alternating target and no-op (rate/2 each), in an
// open loop: a slow answer does not slow the sender, as with the API server.
func measure(c *http.Client, base string, t, noop target, rate int, d time.Duration) (got, floor []time.Duration) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	interval := time.Second / time.Duration(rate)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	end := time.Now().Add(d)
	for i := 0; time.Now().Before(end); i++ {
		<-tick.C
		which, into := t, &got
		if i%2 == 1 {
			which, into = noop, &floor
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			if err := post(c, base+which.path, which.body); err != nil {
				fmt.Fprintln(os.Stderr, "load:", which.name, err)
				return
			}
			elapsed := time.Since(start)
			mu.Lock()
			*into = append(*into, elapsed)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return got, floor
}

func post(c *http.Client, url string, body []byte) error {
	resp, err := c.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var review admissionv1.AdmissionReview
	if err := json.NewDecoder(resp.Body).Decode(&review); err != nil {
		return err
	}
	if review.Response == nil || !review.Response.Allowed {
		return fmt.Errorf("not allowed: %+v", review.Response)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return nil
}

func waitUp(c *http.Client, url string, body []byte) error {
	var err error
	for range 100 {
		if err = post(c, url, body); err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("webhook server not up: %w", err)
}

func quantile(ds []time.Duration, q int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*q/100)]
}

func pct(ds []time.Duration, q int) string {
	return fmt.Sprintf("%.2f ms", float64(quantile(ds, q))/float64(time.Millisecond))
}

// serve starts the webhook server with brokerport's handlers over a fixed cluster: a labeled
// Redpanda StatefulSet, its broker pod and its node, in caches kept as brokerport keeps them.
func serve(dir string) (ctrlwebhook.Server, int, error) {
	scheme := webhook.Scheme()
	pod, err := benchPod()
	if err != nil {
		return nil, 0, err
	}
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "redpanda", Namespace: "redpanda", UID: pod.OwnerReferences[0].UID,
		Labels: map[string]string{patches.LabelExpose: patches.ExposeValue}, Annotations: pod.Annotations}}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeExternalIP, Address: "203.0.113.2"}}}}
	// The handlers read the informer caches as the manager configures them; a broker's binding
	// reads the API server only for a pod the cache has not seen, which this one has.
	reader, err := cachedreader.New(scheme, webhook.CacheOptions(), sts, pod, node)
	if err != nil {
		return nil, 0, err
	}
	api := fake.NewClientBuilder().WithScheme(scheme).WithObjects(sts, pod, node).Build()
	opts := patches.DefaultOptions()
	opts.GateImage = "ghcr.io/brokerport/brokerport:v0.1.0" // as the manifests run it
	snapshot := webhook.ReaderSnapshot{Reader: reader, Options: opts}
	clusters := webhook.NewClusters()
	clusters.EventHandler().OnAdd(sts, false)

	port, err := cluster.FreePort()
	if err != nil {
		return nil, 0, err
	}
	server := ctrlwebhook.NewServer(ctrlwebhook.Options{Host: "127.0.0.1", Port: port, CertDir: dir, TLSOpts: webhook.TLSOptions()})
	webhook.Register(server, snapshot, &events.FakeRecorder{}, opts) // drops Events: a full channel would block the handler
	// As cmd/brokerport serves it: counted, its patch encoded once.
	server.Register(webhook.PathBindings, webhook.CountedWebhook("bindings", webhook.NewBindingHandler(clusters, reader, api, snapshot, events.NewFakeRecorder(1), opts)))
	server.Register("/noop", &admission.Webhook{Handler: admission.HandlerFunc(func(context.Context, admission.Request) admission.Response {
		return admission.Allowed("")
	})})
	return server, port, nil
}

func benchPod() (*corev1.Pod, error) {
	data, err := os.ReadFile("webhook/testdata/bench/pod-redpanda.yaml")
	if err != nil {
		return nil, err
	}
	pod := &corev1.Pod{}
	return pod, yaml.Unmarshal(data, pod)
}

// targets are AdmissionReviews as the API server sends them.
func targets() ([]target, error) {
	pod, err := benchPod()
	if err != nil {
		return nil, err
	}
	stsAnnotations := map[string]string{patches.AnnotationListeners: pod.Annotations[patches.AnnotationListeners]}
	sts := &appsv1.StatefulSet{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "StatefulSet"},
		ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: "redpanda", Labels: map[string]string{patches.LabelExpose: patches.ExposeValue}, Annotations: stsAnnotations},
		Spec: appsv1.StatefulSetSpec{Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "other"}}, Spec: pod.Spec,
		}},
	}
	cfg, _ := patches.ParseConfig(pod.Annotations, nil, patches.DefaultOptions())
	redpanda := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "redpanda", Namespace: "redpanda"}}
	svc := patches.BrokerService(redpanda, cfg, 1)
	binding := func(name string) *corev1.Binding {
		return &corev1.Binding{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Binding"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "redpanda"}, Target: corev1.ObjectReference{Kind: "Node", Name: "node-1"}}
	}
	pod.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}
	list := []struct {
		name, path string
		op         admissionv1.Operation
		obj        runtime.Object
		objName    string
	}{
		{"pod (Redpanda chart)", webhook.PathPods, admissionv1.Create, pod, pod.Name},
		{"statefulset (opt-in)", webhook.PathStatefulSets, admissionv1.Create, sts, sts.Name},
		{"service (broker)", webhook.PathServices, admissionv1.Create, svc, svc.Name},
		{"binding (not a broker)", webhook.PathBindings, admissionv1.Create, binding("web-7d9f8c6b5-x2k4q"), "web-7d9f8c6b5-x2k4q"},
		{"binding (broker)", webhook.PathBindings, admissionv1.Create, binding("redpanda-1"), "redpanda-1"},
	}
	var out []target
	for _, l := range list {
		raw, err := json.Marshal(l.obj)
		if err != nil {
			return nil, err
		}
		review := admissionv1.AdmissionReview{
			TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
			Request: &admissionv1.AdmissionRequest{UID: "load", Operation: l.op, Namespace: "redpanda", Name: l.objName,
				Object: runtime.RawExtension{Raw: raw}},
		}
		body, err := json.Marshal(review)
		if err != nil {
			return nil, err
		}
		out = append(out, target{name: l.name, path: l.path, body: body})
	}
	return out, nil
}

// selfSigned writes a serving certificate for 127.0.0.1 into dir, with brokerport's own issuer.
func selfSigned(dir string) ([]byte, error) {
	return certs.WriteSelfSigned(dir, []string{"127.0.0.1"}, time.Hour)
}
