// Command demo runs brokerport for real on this machine (`make demo`): a local control plane
// with four kwok nodes, brokerport installed from its manifests, and the example Redpanda
// StatefulSet labeled; it prints the brokers' advertised addresses from the live API server and
// leaves everything running for kubectl. `demo down` (make demo-down) stops it.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/brokerport/brokerport/patches"
	"github.com/brokerport/brokerport/test/cluster"
	"github.com/brokerport/brokerport/webhook/controller"
	"github.com/brokerport/brokerport/webhook/render"
)

var nodeIPs = []string{"127.0.1.1", "127.0.1.2", "127.0.1.3", "127.0.1.4"}

func main() {
	state := filepath.Join(cacheDir(), "brokerport-demo")
	var err error
	if len(os.Args) > 1 && os.Args[1] == "down" {
		err = down(state)
	} else {
		err = up(state)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func cacheDir() string {
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache")
}

func say(format string, args ...any) { fmt.Fprintf(os.Stderr, ">> "+format+"\n", args...) }

func up(state string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	kubeconfig := filepath.Join(state, "admin.kubeconfig")
	if running(state) {
		say("the demo cluster is already running")
		return show(ctx, kubeconfig)
	}
	_ = down(state)
	say("building (or finding cached) kube-apiserver, kube-controller-manager, kube-scheduler, etcd and kwok")
	bin, err := cluster.Binaries()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(state, 0o700); err != nil {
		return err
	}
	say("building brokerport")
	binary, err := cluster.BuildBrokerport(state)
	if err != nil {
		return err
	}
	say("starting the control plane (logs in %s)", state)
	cp, err := cluster.Start(ctx, bin, state, true)
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			cp.Stop()
		}
	}()
	c, clientset, err := cp.Clients()
	if err != nil {
		return err
	}
	say("registering 4 kwok nodes with ExternalIPs %s", strings.Join(nodeIPs, ", "))
	if err := cluster.CreateNodes(ctx, c, "kwok-node", nodeIPs); err != nil {
		return err
	}
	port, err := cluster.FreePort()
	if err != nil {
		return err
	}
	say("installing brokerport (manifests/standalone) and starting it")
	if err := cluster.InstallBrokerport(ctx, c, port); err != nil {
		return err
	}
	if _, err := cp.StartBrokerport(ctx, c, clientset, binary, port); err != nil {
		return err
	}
	if err := writePids(state, cp.Pids()); err != nil {
		return err
	}
	ok = true

	say("creating examples/redpanda.yaml's StatefulSet, then labeling it %s=%s", patches.LabelExpose, patches.ExposeValue)
	sts, err := createExample(ctx, c)
	if err != nil {
		return err
	}
	if err := c.Patch(ctx, sts, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"brokerport.io/expose":"true"}}}`))); err != nil {
		return err
	}
	say("waiting for the brokers to roll and the addresses to be published")
	err = cluster.WaitFor(ctx, 3*time.Minute, "3 published brokers", func() error {
		cm := &corev1.ConfigMap{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: sts.Namespace, Name: controller.ConfigMapName(sts.Name)}, cm); err != nil {
			return err
		}
		if n := len(strings.Split(cm.Data["bootstrap.servers"], ",")); cm.Data["bootstrap.servers"] == "" || n != 3 {
			return fmt.Errorf("%d brokers published", n)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return show(ctx, kubeconfig)
}

// createExample creates the example manifest's objects, its StatefulSet not yet labeled.
func createExample(ctx context.Context, c client.Client) (*appsv1.StatefulSet, error) {
	f, err := os.Open("examples/redpanda.yaml")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	objects, err := render.ReadObjects(f)
	if err != nil {
		return nil, err
	}
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "redpanda"}}); err != nil {
		return nil, err
	}
	var sts *appsv1.StatefulSet
	for _, raw := range objects {
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal(raw, &meta); err != nil {
			return nil, err
		}
		var obj client.Object
		switch meta.Kind {
		case "StatefulSet":
			sts = &appsv1.StatefulSet{}
			obj = sts
		case "Service":
			obj = &corev1.Service{}
		default:
			continue
		}
		if err := yaml.Unmarshal(raw, obj); err != nil {
			return nil, err
		}
		if sts != nil {
			delete(sts.Labels, patches.LabelExpose) // labeled afterwards, as a user would
		}
		if err := c.Create(ctx, obj); err != nil {
			return nil, fmt.Errorf("creating %s %s: %w", meta.Kind, obj.GetName(), err)
		}
	}
	if sts == nil {
		return nil, errors.New("examples/redpanda.yaml has no StatefulSet")
	}
	return sts, nil
}

// show prints the published addresses, read from the live API server.
func show(ctx context.Context, kubeconfig string) error {
	cp := &cluster.ControlPlane{AdminKubeconfig: kubeconfig}
	c, _, err := cp.Clients()
	if err != nil {
		return err
	}
	cm := &corev1.ConfigMap{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "redpanda", Name: controller.ConfigMapName("redpanda")}, cm); err != nil {
		return fmt.Errorf("reading the published addresses: %w", err)
	}
	fmt.Printf("\nConfigMap redpanda/%s, as published by brokerport:\n\n%s\n", cm.Name, controller.Describe(cm))
	fmt.Printf("kubectl users: export KUBECONFIG=%s\n", kubeconfig)
	fmt.Printf("  kubectl -n redpanda get pods -o wide; kubectl -n redpanda get svc; go run ./cmd/brokerport addresses redpanda -n redpanda\n")
	fmt.Printf("Stop it with: make demo-down\n")
	return nil
}

func writePids(state string, pids []int) error {
	var lines []string
	for _, p := range pids {
		lines = append(lines, strconv.Itoa(p))
	}
	return os.WriteFile(filepath.Join(state, "pids"), []byte(strings.Join(lines, "\n")+"\n"), 0o600)
}

func readPids(state string) []int {
	data, err := os.ReadFile(filepath.Join(state, "pids"))
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		if p, err := strconv.Atoi(f); err == nil {
			pids = append(pids, p)
		}
	}
	return pids
}

// running tells whether every recorded process is still alive.
func running(state string) bool {
	pids := readPids(state)
	if len(pids) == 0 {
		return false
	}
	for _, p := range pids {
		if !alive(p) {
			return false
		}
	}
	return true
}

func down(state string) error {
	pids := readPids(state)
	for i := len(pids) - 1; i >= 0; i-- {
		if alive(pids[i]) {
			cluster.StopPid(pids[i])
		}
	}
	if len(pids) > 0 {
		say("stopped the demo cluster")
	}
	return os.RemoveAll(state)
}
