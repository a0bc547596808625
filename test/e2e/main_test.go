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
	"os"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/brokerport/brokerport/test/cluster"
)

// env is the running cluster, shared by the scenarios.
var env struct {
	cp         *cluster.ControlPlane
	admin      client.WithWatch
	clientset  *kubernetes.Clientset
	brokerport *cluster.Process
	dir        string
	binary     string // brokerport's, for a restart
	port       int    // the webhook port the manifests point at
}

// brokerportArgs are the shared brokerport process's flags: the binding webhook's matchConditions
// are TestMatchConditions' to write and to stop, and the probe is TestProbe's to run, on its own
// brokers (the shared process would otherwise dial every other test's brokers too).
var brokerportArgs = []string{"--binding-match-conditions=false", "--probe-period=0"}

// Nodes: kwok nodes whose ExternalIPs are loopback addresses, so that later suites can listen
// where a broker advertises.
var nodeIPs = []string{"127.0.1.1", "127.0.1.2", "127.0.1.3", "127.0.1.4"}

func TestMain(m *testing.M) {
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e setup:", err)
		if env.cp != nil {
			fmt.Fprintln(os.Stderr, env.cp.Logs())
		}
		code = 1
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	// The clients of the suite log through controller-runtime (API warnings, for one).
	ctrllog.SetLogger(zap.New(zap.WriteTo(os.Stderr)))
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()

	bin, err := cluster.Binaries()
	if err != nil {
		return 1, err
	}
	env.dir, err = os.MkdirTemp("", "brokerport-e2e-")
	if err != nil {
		return 1, err
	}
	step("building brokerport")
	env.binary, err = cluster.BuildBrokerport(env.dir)
	if err != nil {
		return 1, err
	}
	step("starting etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (logs in %s)", env.dir)
	start := time.Now()
	if env.cp, err = cluster.Start(ctx, bin, env.dir, false); err != nil {
		return 1, err
	}
	defer env.cp.Stop()
	step("control plane ready in %s", time.Since(start).Round(100*time.Millisecond))
	if env.admin, env.clientset, err = env.cp.Clients(); err != nil {
		return 1, err
	}
	if err := cluster.CreateNodes(ctx, env.admin, "kwok-node", nodeIPs); err != nil {
		return 1, err
	}
	if env.port, err = cluster.FreePort(); err != nil {
		return 1, err
	}
	step("installing the standalone manifests")
	if err := cluster.InstallBrokerport(ctx, env.admin, env.port); err != nil {
		return 1, err
	}
	step("starting brokerport with the brokerport ServiceAccount's token")
	if env.brokerport, err = env.cp.StartBrokerport(ctx, env.admin, env.clientset, env.binary, env.port, brokerportArgs...); err != nil {
		return 1, err
	}
	step("brokerport ready; running the scenarios")
	code := m.Run()
	if code != 0 {
		fmt.Fprintln(os.Stderr, env.cp.Logs())
		step("logs kept in %s", env.dir)
	} else {
		env.cp.Stop()
		os.RemoveAll(env.dir)
	}
	return code, nil
}

func step(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "e2e: %s: "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func waitFor(ctx context.Context, timeout time.Duration, what string, check func() error) error {
	return cluster.WaitFor(ctx, timeout, what, check)
}

func ptrTo[T any](v T) *T { return &v }
