//go:build e2e

// Package e2e proves brokerport on a real control plane: kube-apiserver (Node,RBAC), etcd,
// kube-controller-manager, kube-scheduler and kwok's fake nodes, all built from Go modules; the
// real install manifests (standalone overlay, self-managed certificates), applied with one patch
// that points the webhooks at brokerport running as a host process with its ServiceAccount's
// token, so that the real RBAC is what is tested.
package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/brokerport/brokerport/manifests"
	"github.com/brokerport/brokerport/webhook"
)

// env is the running cluster, shared by the scenarios.
var env struct {
	cp         *controlPlane
	admin      client.WithWatch
	clientset  *kubernetes.Clientset
	brokerport *process
	dir        string
}

// Nodes: kwok nodes whose ExternalIPs are loopback addresses, so that later suites can listen
// where a broker advertises.
var nodeIPs = []string{"127.0.1.1", "127.0.1.2", "127.0.1.3", "127.0.1.4"}

func TestMain(m *testing.M) {
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e setup:", err)
		if env.cp != nil {
			fmt.Fprintln(os.Stderr, env.cp.logs())
		}
		code = 1
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()

	bin, err := controlPlaneBinaries()
	if err != nil {
		return 1, err
	}
	env.dir, err = os.MkdirTemp("", "brokerport-e2e-")
	if err != nil {
		return 1, err
	}
	brokerportBinary := filepath.Join(env.dir, "brokerport")
	step("building brokerport")
	build := exec.Command("go", "build", "-o", brokerportBinary, "../../cmd/brokerport")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return 1, fmt.Errorf("building brokerport: %w", err)
	}

	step("starting etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (logs in %s)", env.dir)
	start := time.Now()
	env.cp, err = startControlPlane(ctx, bin, env.dir)
	if err != nil {
		return 1, err
	}
	defer env.cp.stop()
	step("control plane ready in %s", time.Since(start).Round(100*time.Millisecond))

	restConfig, err := clientcmd.BuildConfigFromFlags("", env.cp.adminKube)
	if err != nil {
		return 1, err
	}
	restConfig.QPS, restConfig.Burst = 100, 200
	if env.admin, err = client.NewWithWatch(restConfig, client.Options{Scheme: webhook.Scheme()}); err != nil {
		return 1, err
	}
	if env.clientset, err = kubernetes.NewForConfig(restConfig); err != nil {
		return 1, err
	}
	if err := createNodes(ctx); err != nil {
		return 1, err
	}
	webhookPort, err := freePort()
	if err != nil {
		return 1, err
	}
	step("installing the standalone manifests")
	if err := install(ctx, webhookPort); err != nil {
		return 1, err
	}
	step("starting brokerport with the brokerport ServiceAccount's token")
	if err := startBrokerport(ctx, brokerportBinary, restConfig, webhookPort); err != nil {
		return 1, err
	}
	step("brokerport ready; running the scenarios")
	code := m.Run()
	if code != 0 {
		fmt.Fprintln(os.Stderr, env.cp.logs())
		step("logs kept in %s", env.dir)
	} else {
		env.cp.stop()
		os.RemoveAll(env.dir)
	}
	return code, nil
}

func step(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "e2e: %s: "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// controlPlaneBinaries builds (or finds in the cache) the control plane.
func controlPlaneBinaries() (string, error) {
	if bin := os.Getenv("BROKERPORT_E2E_BIN"); bin != "" {
		return bin, nil
	}
	cmd := exec.Command("../tools/build.sh")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("building the control plane: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// createNodes registers four kwok nodes, each with an ExternalIP on loopback.
func createNodes(ctx context.Context) error {
	for i, ip := range nodeIPs {
		name := fmt.Sprintf("kwok-node-%d", i)
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{
				Name:        name,
				Annotations: map[string]string{"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
				Labels: map[string]string{
					corev1.LabelHostname: name, corev1.LabelTopologyZone: fmt.Sprintf("zone-%c", 'a'+i%2),
					"type": "kwok", corev1.LabelOSStable: "linux", corev1.LabelArchStable: "amd64",
				},
			},
			Status: corev1.NodeStatus{
				Addresses: []corev1.NodeAddress{
					{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("10.1.0.%d", i+1)},
					{Type: corev1.NodeExternalIP, Address: ip},
				},
				Allocatable: corev1.ResourceList{corev1.ResourceCPU: mustQuantity("32"), corev1.ResourceMemory: mustQuantity("256Gi"), corev1.ResourcePods: mustQuantity("110")},
				Capacity:    corev1.ResourceList{corev1.ResourceCPU: mustQuantity("32"), corev1.ResourceMemory: mustQuantity("256Gi"), corev1.ResourcePods: mustQuantity("110")},
			},
		}
		if err := env.admin.Create(ctx, node); err != nil {
			return fmt.Errorf("creating node %s: %w", name, err)
		}
	}
	return waitFor(ctx, 60*time.Second, "kwok nodes Ready and untainted, the default ServiceAccount present", func() error {
		var nodes corev1.NodeList
		if err := env.admin.List(ctx, &nodes); err != nil {
			return err
		}
		for _, n := range nodes.Items {
			if len(n.Spec.Taints) > 0 || !nodeReady(&n) {
				return fmt.Errorf("node %s not ready (taints %v)", n.Name, n.Spec.Taints)
			}
		}
		return env.admin.Get(ctx, client.ObjectKey{Namespace: "default", Name: "default"}, &corev1.ServiceAccount{})
	})
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// install applies the standalone overlay with one patch: the webhooks call brokerport on
// loopback (no Service routes to a host process here).
func install(ctx context.Context, port int) error {
	patch := "- target: {kind: MutatingWebhookConfiguration, name: brokerport}\n  patch: |-\n"
	for i, path := range []string{webhook.PathStatefulSets, webhook.PathPods, webhook.PathServices, webhook.PathBindings} {
		patch += fmt.Sprintf("    - {op: replace, path: /webhooks/%d/clientConfig, value: {url: \"https://127.0.0.1:%d%s\"}}\n", i, port, path)
	}
	out, err := manifests.Build("standalone", patch)
	if err != nil {
		return err
	}
	decoder := yaml.NewYAMLOrJSONDecoder(strings.NewReader(string(out)), 4096)
	var objects []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		if err := decoder.Decode(&u.Object); err != nil {
			break
		}
		if len(u.Object) > 0 {
			objects = append(objects, u)
		}
	}
	// Namespaces first, as kubectl apply would need them.
	for _, first := range []bool{true, false} {
		for _, u := range objects {
			if (u.GetKind() == "Namespace") != first {
				continue
			}
			if err := env.admin.Create(ctx, u); err != nil {
				return fmt.Errorf("creating %s %s: %w", u.GetKind(), u.GetName(), err)
			}
		}
	}
	return nil
}

// startBrokerport runs `brokerport serve` on the host with a token of the brokerport
// ServiceAccount from the manifests, and waits until it is ready and its CA is in the webhook
// configuration.
func startBrokerport(ctx context.Context, binary string, admin *rest.Config, port int) error {
	token, err := env.clientset.CoreV1().ServiceAccounts("brokerport-system").CreateToken(ctx, "brokerport",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptrTo(int64(7200))}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("requesting a token for brokerport: %w", err)
	}
	kubeconfig := filepath.Join(env.dir, "brokerport.kubeconfig")
	if err := writeKubeconfig(kubeconfig, env.cp.apiServer, env.cp.caCert, "brokerport", "", "", token.Status.Token); err != nil {
		return err
	}
	probePort, _ := freePort()
	env.brokerport, err = env.cp.start("brokerport", binary, []string{
		"serve",
		fmt.Sprintf("--port=%d", port),
		"--cert-dir", filepath.Join(env.dir, "brokerport-certs"),
		"--self-managed-certs", "--cert-hosts=127.0.0.1",
		"--namespace=brokerport-system",
		"--metrics-bind-address=0",
		fmt.Sprintf("--health-probe-bind-address=127.0.0.1:%d", probePort),
		"--gate-image=brokerport:e2e",
	}, "KUBECONFIG="+kubeconfig)
	if err != nil {
		return err
	}
	return waitFor(ctx, 60*time.Second, "brokerport ready", func() error {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", probePort))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz: %s", resp.Status)
		}
		mwc := &unstructured.Unstructured{}
		mwc.SetAPIVersion("admissionregistration.k8s.io/v1")
		mwc.SetKind("MutatingWebhookConfiguration")
		if err := env.admin.Get(ctx, client.ObjectKey{Name: "brokerport"}, mwc); err != nil {
			return err
		}
		hooks, _, _ := unstructured.NestedSlice(mwc.Object, "webhooks")
		for _, h := range hooks {
			if bundle, _, _ := unstructured.NestedString(h.(map[string]any), "clientConfig", "caBundle"); bundle == "" {
				return fmt.Errorf("caBundle not set yet")
			}
		}
		return nil
	})
}

// waitFor polls check until it succeeds or the timeout passes, and says what it waited for.
func waitFor(ctx context.Context, timeout time.Duration, what string, check func() error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if last = check(); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("waiting for %s (%s): %w", what, timeout, last)
}

func ptrTo[T any](v T) *T { return &v }

func mustQuantity(s string) resource.Quantity { return resource.MustParse(s) }
