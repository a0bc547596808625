package cluster

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/brokerport/brokerport/manifests"
	"github.com/brokerport/brokerport/webhook"
)

// repoRoot is the brokerport checkout this file is in.
func repoRoot() string {
	_, file, _, _ := goruntime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Binaries builds (or finds in the cache) the control plane, unless BROKERPORT_E2E_BIN names
// it, and returns its bin directory.
func Binaries() (string, error) {
	if bin := os.Getenv("BROKERPORT_E2E_BIN"); bin != "" {
		return bin, nil
	}
	cmd := exec.Command(filepath.Join(repoRoot(), "test", "tools", "build.sh"))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("building the control plane: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// BuildBrokerport builds the brokerport binary into dir.
func BuildBrokerport(dir string) (string, error) {
	binary := filepath.Join(dir, "brokerport")
	build := exec.Command("go", "build", "-o", binary, "./cmd/brokerport")
	build.Dir = repoRoot()
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return "", fmt.Errorf("building brokerport: %w", err)
	}
	return binary, nil
}

// Clients are the admin's clients of the control plane.
func (cp *ControlPlane) Clients() (client.WithWatch, *kubernetes.Clientset, error) {
	restConfig, err := clientcmd.BuildConfigFromFlags("", cp.AdminKubeconfig)
	if err != nil {
		return nil, nil, err
	}
	restConfig.QPS, restConfig.Burst = 100, 200
	c, err := client.NewWithWatch(restConfig, client.Options{Scheme: webhook.Scheme()})
	if err != nil {
		return nil, nil, err
	}
	clientset, err := kubernetes.NewForConfig(restConfig)
	return c, clientset, err
}

// CreateNodes registers one kwok node per IP, <prefix>-<i>, with that ExternalIP, and waits
// until every node is Ready and untainted and kube-controller-manager has made the default
// ServiceAccount.
func CreateNodes(ctx context.Context, c client.Client, prefix string, nodeIPs []string) error {
	for i, ip := range nodeIPs {
		name := fmt.Sprintf("%s-%d", prefix, i)
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
				Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("32"), corev1.ResourceMemory: resource.MustParse("256Gi"), corev1.ResourcePods: resource.MustParse("110")},
				Capacity:    corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("32"), corev1.ResourceMemory: resource.MustParse("256Gi"), corev1.ResourcePods: resource.MustParse("110")},
			},
		}
		if err := c.Create(ctx, node); err != nil {
			return fmt.Errorf("creating node %s: %w", name, err)
		}
	}
	return WaitFor(ctx, 60*time.Second, "kwok nodes Ready and untainted, the default ServiceAccount present", func() error {
		var nodes corev1.NodeList
		if err := c.List(ctx, &nodes); err != nil {
			return err
		}
		for _, n := range nodes.Items {
			if len(n.Spec.Taints) > 0 || !nodeReady(&n) {
				return fmt.Errorf("node %s not ready (taints %v)", n.Name, n.Spec.Taints)
			}
		}
		return c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "default"}, &corev1.ServiceAccount{})
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

// InstallBrokerport applies the standalone overlay with one patch: the webhooks call brokerport
// on loopback at port (no Service routes to a host process here).
func InstallBrokerport(ctx context.Context, c client.Client, port int) error {
	patch := "- target: {kind: MutatingWebhookConfiguration, name: brokerport}\n  patch: |-\n"
	for i, path := range []string{webhook.PathStatefulSets, webhook.PathPods, webhook.PathServices, webhook.PathBindings, webhook.PathScale} {
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
			if err := c.Create(ctx, u); err != nil {
				return fmt.Errorf("creating %s %s: %w", u.GetKind(), u.GetName(), err)
			}
		}
	}
	return nil
}

// StartBrokerport runs `brokerport serve` on the host with a token of the brokerport
// ServiceAccount from the manifests (so that its real RBAC applies), and waits until it is ready
// and its CA is in the webhook configuration.
func (cp *ControlPlane) StartBrokerport(ctx context.Context, c client.Client, clientset *kubernetes.Clientset, binary string, port int, extraArgs ...string) (*Process, error) {
	return cp.StartBrokerportNamed(ctx, c, clientset, binary, "brokerport", port, extraArgs...)
}

// StartBrokerportNamed is StartBrokerport for one of several replicas: the process, its log
// (<name>.log), kubeconfig and certificate directory are named after it; the replicas share the
// self-managed certificate Secret, as the installed Deployment's pods do.
func (cp *ControlPlane) StartBrokerportNamed(ctx context.Context, c client.Client, clientset *kubernetes.Clientset, binary, name string, port int, extraArgs ...string) (*Process, error) {
	token, err := clientset.CoreV1().ServiceAccounts("brokerport-system").CreateToken(ctx, "brokerport",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(7200))}}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("requesting a token for brokerport: %w", err)
	}
	kubeconfig := filepath.Join(cp.Dir, name+".kubeconfig")
	if err := WriteKubeconfig(kubeconfig, cp.APIServer, cp.CACert, "brokerport", "", "", token.Status.Token); err != nil {
		return nil, err
	}
	probePort, _ := FreePort()
	// Metrics as installed: HTTPS, authenticated and authorized by the API server.
	metricsPort, _ := FreePort()
	if err := os.WriteFile(filepath.Join(cp.Dir, metricsURLFile), []byte(fmt.Sprintf("https://127.0.0.1:%d/metrics", metricsPort)), 0o600); err != nil {
		return nil, err
	}
	p, err := cp.StartProcess(name, binary, append([]string{
		"serve",
		fmt.Sprintf("--port=%d", port),
		"--cert-dir", filepath.Join(cp.Dir, name+"-certs"),
		"--self-managed-certs", "--cert-hosts=127.0.0.1",
		"--namespace=brokerport-system",
		fmt.Sprintf("--metrics-bind-address=127.0.0.1:%d", metricsPort),
		fmt.Sprintf("--health-probe-bind-address=127.0.0.1:%d", probePort),
		"--gate-image=brokerport:e2e",
	}, extraArgs...), "KUBECONFIG="+kubeconfig)
	if err != nil {
		return nil, err
	}
	return p, WaitFor(ctx, 60*time.Second, name+" ready", func() error {
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
		if err := c.Get(ctx, client.ObjectKey{Name: "brokerport"}, mwc); err != nil {
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

// metricsURLFile, in the control plane's directory, holds the metrics URL of the brokerport
// StartBrokerport started last.
const metricsURLFile = "brokerport-metrics-url"

// BrokerportMetricsURL is the HTTPS metrics endpoint of the brokerport StartBrokerport started
// last (a self-signed certificate; a bearer token authorized for get /metrics is required).
func (cp *ControlPlane) BrokerportMetricsURL() (string, error) {
	data, err := os.ReadFile(filepath.Join(cp.Dir, metricsURLFile))
	return string(data), err
}

// WaitFor polls check until it succeeds or the timeout passes, and says what it waited for.
func WaitFor(ctx context.Context, timeout time.Duration, what string, check func() error) error {
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
