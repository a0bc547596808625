package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The add-ons are the real MetalLB and cert-manager controllers, built by test/tools/build.sh
// from Go modules into the bin directory, next to the CRDs of the same module versions
// (metallb-crds.yaml: go.universe.tf/metallb's config/crd/bases; cert-manager-crds.yaml:
// github.com/cert-manager/cert-manager's deploy/crds). Neither runs its admission webhook: the
// API server validates their objects by the CRDs' schemas.
const (
	// MetalLBNamespace holds MetalLB's IPAddressPool and its controller's Pod object.
	MetalLBNamespace = "metallb-system"
	// MetalLBPool is the IPAddressPool StartMetalLB creates.
	MetalLBPool = "e2e"
	// CertManagerNamespace is cert-manager's cluster resource namespace: the Secrets that
	// ClusterIssuers refer to (a CA ClusterIssuer's key pair) live there.
	CertManagerNamespace = "cert-manager"
)

// addons are the add-on processes running per control plane, so that every scenario can ask
// for them and the first one starts them.
var addons = struct {
	sync.Mutex
	metallb     map[*ControlPlane]*metallbRun
	certManager map[*ControlPlane]*Process
}{metallb: map[*ControlPlane]*metallbRun{}, certManager: map[*ControlPlane]*Process{}}

type metallbRun struct {
	process *Process
	pool    []string
}

// running tells whether a process started by StartProcess has not exited (its waiting goroutine
// reaps it, after which the PID no longer exists).
func running(p *Process) bool {
	return p != nil && syscall.Kill(p.Pid(), 0) == nil
}

// StartMetalLB makes MetalLB's controller assign the LoadBalancer IPs of Services from pool
// (addresses or ranges as IPAddressPool's spec.addresses takes them, e.g. "127.0.2.1-127.0.2.30"):
// it installs MetalLB's CRDs, creates namespace metallb-system, the IPAddressPool "e2e" and the
// Pod object the controller reads as its owner, starts the controller with the admin kubeconfig
// and waits until it has validated its configuration and counted the pool. No speaker runs: the
// controller alone writes status.loadBalancer.ingress, as a cloud's controller would.
//
// It is idempotent per control plane: later calls return the running controller, and fail if
// they ask for another pool.
func (cp *ControlPlane) StartMetalLB(ctx context.Context, c client.Client, pool []string) (*Process, error) {
	addons.Lock()
	defer addons.Unlock()
	if run := addons.metallb[cp]; run != nil && running(run.process) {
		if !slices.Equal(run.pool, pool) {
			return nil, fmt.Errorf("MetalLB already runs with IPAddressPool %s/%s addresses %v, not %v", MetalLBNamespace, MetalLBPool, run.pool, pool)
		}
		return run.process, nil
	}
	if len(pool) == 0 {
		return nil, fmt.Errorf("IPAddressPool %s/%s: spec.addresses: no address given", MetalLBNamespace, MetalLBPool)
	}
	if err := cp.installCRDs(ctx, c, "metallb-crds.yaml"); err != nil {
		return nil, err
	}
	if err := createNamespace(ctx, c, MetalLBNamespace); err != nil {
		return nil, err
	}
	const podName = "metallb-controller"
	// The controller gets its own Pod at start-up, as the owner of its ConfigurationState.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: MetalLBNamespace, Name: podName, Labels: map[string]string{"app": "metallb", "component": "controller"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "controller", Image: "quay.io/metallb/controller:v0.16.2"}}},
	}
	if err := c.Create(ctx, pod); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("creating pod %s/%s: %w", MetalLBNamespace, podName, err)
	}
	ipPool := &unstructured.Unstructured{}
	ipPool.SetAPIVersion("metallb.io/v1beta1")
	ipPool.SetKind("IPAddressPool")
	ipPool.SetNamespace(MetalLBNamespace)
	ipPool.SetName(MetalLBPool)
	if err := unstructured.SetNestedStringSlice(ipPool.Object, pool, "spec", "addresses"); err != nil {
		return nil, err
	}
	if err := c.Create(ctx, ipPool); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("creating IPAddressPool %s/%s with spec.addresses %v: %w", MetalLBNamespace, MetalLBPool, pool, err)
	}

	probePort, err := FreePort()
	if err != nil {
		return nil, err
	}
	p, err := cp.StartProcess("metallb-controller", filepath.Join(cp.Bin, "metallb-controller"), []string{
		"--namespace=" + MetalLBNamespace,
		"--pod-name=" + podName,
		"--webhook-mode=disabled", "--disable-cert-rotation",
		"--port=0", // no metrics server
		fmt.Sprintf("--health-probe-port=%d", probePort),
	}, "KUBECONFIG="+cp.AdminKubeconfig)
	if err != nil {
		return nil, err
	}
	err = WaitFor(ctx, 60*time.Second, "MetalLB's controller ready with IPAddressPool "+MetalLBNamespace+"/"+MetalLBPool, func() error {
		if err := getOK(fmt.Sprintf("http://127.0.0.1:%d/readyz", probePort)); err != nil {
			return err
		}
		state := &unstructured.Unstructured{}
		state.SetAPIVersion("metallb.io/v1beta1")
		state.SetKind("ConfigurationState")
		if err := c.Get(ctx, client.ObjectKey{Namespace: MetalLBNamespace, Name: "controller"}, state); err != nil {
			return err
		}
		if result, _, _ := unstructured.NestedString(state.Object, "status", "result"); result != "Valid" {
			summary, _, _ := unstructured.NestedString(state.Object, "status", "errorSummary")
			return fmt.Errorf("ConfigurationState %s/controller: status.result %q: %.300s", MetalLBNamespace, result, summary)
		}
		if err := c.Get(ctx, client.ObjectKeyFromObject(ipPool), ipPool); err != nil {
			return err
		}
		available, _, _ := unstructured.NestedInt64(ipPool.Object, "status", "availableIPv4")
		available6, _, _ := unstructured.NestedInt64(ipPool.Object, "status", "availableIPv6")
		assigned, _, _ := unstructured.NestedInt64(ipPool.Object, "status", "assignedIPv4")
		assigned6, _, _ := unstructured.NestedInt64(ipPool.Object, "status", "assignedIPv6")
		if available+available6+assigned+assigned6 == 0 {
			return fmt.Errorf("IPAddressPool %s/%s: status counts no address yet", MetalLBNamespace, MetalLBPool)
		}
		return nil
	})
	if err != nil {
		p.Stop()
		return nil, fmt.Errorf("%w\n%s", err, logTail(p))
	}
	addons.metallb[cp] = &metallbRun{process: p, pool: slices.Clone(pool)}
	return p, nil
}

// StartCertManager runs cert-manager's controllers for Certificates issued by SelfSigned and CA
// Issuers and ClusterIssuers (test/tools/certmanager): it installs cert-manager's CRDs, creates
// namespace cert-manager (the cluster resource namespace), starts the controller with the admin
// kubeconfig and waits until its informers have synced.
//
// It is idempotent per control plane: later calls return the running controller.
func (cp *ControlPlane) StartCertManager(ctx context.Context, c client.Client) (*Process, error) {
	addons.Lock()
	defer addons.Unlock()
	if p := addons.certManager[cp]; running(p) {
		return p, nil
	}
	if err := cp.InstallCertManagerCRDs(ctx, c); err != nil {
		return nil, err
	}
	if err := createNamespace(ctx, c, CertManagerNamespace); err != nil {
		return nil, err
	}
	readyzPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	p, err := cp.StartProcess("cert-manager-controller", filepath.Join(cp.Bin, "cert-manager-controller"), []string{
		"--kubeconfig", cp.AdminKubeconfig,
		"--cluster-resource-namespace=" + CertManagerNamespace,
		fmt.Sprintf("--readyz-address=127.0.0.1:%d", readyzPort),
	})
	if err != nil {
		return nil, err
	}
	if err := WaitFor(ctx, 60*time.Second, "cert-manager's controller ready", func() error {
		return getOK(fmt.Sprintf("http://127.0.0.1:%d/readyz", readyzPort))
	}); err != nil {
		p.Stop()
		return nil, fmt.Errorf("%w\n%s", err, logTail(p))
	}
	addons.certManager[cp] = p
	return p, nil
}

// InstallCertManagerCRDs installs cert-manager's CRDs alone, for a client that needs the API
// (brokerport's manager watches Certificates) before StartCertManager runs the controllers.
func (cp *ControlPlane) InstallCertManagerCRDs(ctx context.Context, c client.Client) error {
	return cp.installCRDs(ctx, c, "cert-manager-crds.yaml")
}

// installCRDs creates the CustomResourceDefinitions of a YAML stream in the bin directory (ones
// already there are left as they are) and waits until each is Established.
func (cp *ControlPlane) installCRDs(ctx context.Context, c client.Client, file string) error {
	path := filepath.Join(cp.Bin, file)
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading the CRDs (built by test/tools/build.sh): %w", err)
	}
	decoder := yaml.NewYAMLOrJSONDecoder(strings.NewReader(string(data)), 4096)
	var names []string
	for {
		crd := &unstructured.Unstructured{}
		if err := decoder.Decode(&crd.Object); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return fmt.Errorf("decoding %s: %w", path, err)
		}
		if len(crd.Object) == 0 {
			continue
		}
		if crd.GetKind() != "CustomResourceDefinition" {
			return fmt.Errorf("%s: %s %s is not a CustomResourceDefinition", path, crd.GetKind(), crd.GetName())
		}
		if err := c.Create(ctx, crd); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating CustomResourceDefinition %s: %w", crd.GetName(), err)
		}
		names = append(names, crd.GetName())
	}
	if len(names) == 0 {
		return fmt.Errorf("%s holds no CustomResourceDefinition", path)
	}
	return WaitFor(ctx, 30*time.Second, fmt.Sprintf("the CRDs of %s Established", file), func() error {
		for _, name := range names {
			crd := &unstructured.Unstructured{}
			crd.SetAPIVersion("apiextensions.k8s.io/v1")
			crd.SetKind("CustomResourceDefinition")
			if err := c.Get(ctx, client.ObjectKey{Name: name}, crd); err != nil {
				return err
			}
			conditions, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
			established := false
			for _, cond := range conditions {
				m, _ := cond.(map[string]any)
				established = established || (m["type"] == "Established" && m["status"] == "True")
			}
			if !established {
				return fmt.Errorf("CustomResourceDefinition %s not Established", name)
			}
		}
		return nil
	})
}

func createNamespace(ctx context.Context, c client.Client, name string) error {
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", name, err)
	}
	return nil
}

func getOK(url string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// logTail is the end of a process's log, for an error saying why it never became ready.
func logTail(p *Process) string {
	data, _ := os.ReadFile(p.Log)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return fmt.Sprintf("last lines of %s:\n%s", p.Log, strings.Join(lines, "\n"))
}
