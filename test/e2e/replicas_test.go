//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/brokerport/brokerport/patches"
	"github.com/brokerport/brokerport/test/cluster"
)

// The controller's Lease (brokerport serve's LeaderElectionID, in --namespace), and what
// client-go's leader election logs when a replica takes it.
const (
	leaseNamespace, leaseName = "brokerport-system", "brokerport-controller"
	acquiredLease             = "Successfully acquired lease"
)

// TestReplicas runs brokerport as installed (issue 12, item 6): two replicas behind one webhook
// address (a TCP proxy standing in for the brokerport-webhook Service), the companion controller
// in the elected one. Two Redpanda-like StatefulSets, each in a namespace of its own, are labeled
// at the same moment, and the leader is killed (SIGKILL: no graceful hand-over of the Lease) right
// after, while their brokers roll. Both labels are admitted; the survivor takes the Lease and
// answers every admission from then on; the two blocks end disjoint (a PortBlockConflict settled
// by the controller is allowed on the way); every broker of both ends exposed on the nodePorts
// its block gives it, each held by one Service.
func TestReplicas(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	const replicas = 3
	namespaces := []string{"replicas-one", "replicas-two"}
	for _, namespace := range namespaces {
		convergeNamespace(t, ctx, namespace, nil)
		sts := redpandaStatefulSet()
		sts.Namespace = namespace
		sts.Annotations[patches.AnnotationMaxBrokers] = "4" // two blocks of 16 ports: room to move in the band
		require.NoError(t, env.admin.Create(ctx, sts))
	}
	for _, namespace := range namespaces {
		require.NoError(t, waitFor(ctx, 2*time.Minute, namespace+": 3 pods rolled out without brokerport", func() error {
			return rolledOut(ctx, namespace, stsName, replicas, false)
		}))
	}

	pair := startReplicas(t, ctx)
	var leader, survivor *cluster.Process
	require.NoError(t, waitFor(ctx, 30*time.Second, "one replica elected", func() error {
		var elected []*cluster.Process
		for _, p := range pair {
			if logContains(p, acquiredLease) {
				elected = append(elected, p)
			}
		}
		if len(elected) != 1 {
			return fmt.Errorf("%d replicas logged %q", len(elected), acquiredLease)
		}
		leader = elected[0]
		return nil
	}))
	survivor = pair[0]
	if survivor == leader {
		survivor = pair[1]
	}
	holder, err := leaseHolder(ctx)
	require.NoError(t, err)
	require.NotEmpty(t, holder, "the Lease has no holder")
	t.Logf("%s leads (Lease holder %s); %s follows", leader.Name, holder, survivor.Name)

	failed, err := webhookFailures(ctx)
	require.NoError(t, err)

	// Both labels at the same moment, each through whichever replica the proxy picks.
	var wg sync.WaitGroup
	start := make(chan struct{})
	admitted := make([]*appsv1.StatefulSet, len(namespaces))
	errs := make([]error, len(namespaces))
	for i, namespace := range namespaces {
		wg.Add(1)
		go func() {
			defer wg.Done()
			admitted[i] = &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: stsName}}
			<-start
			errs[i] = env.admin.Patch(ctx, admitted[i], client.RawPatch(types.MergePatchType,
				[]byte(fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, patches.LabelExpose, patches.ExposeValue))))
		}()
	}
	labeled := time.Now()
	close(start)
	wg.Wait()

	// The leader dies while the brokers roll, its Lease left to expire.
	require.NoError(t, syscall.Kill(-leader.Pid(), syscall.SIGKILL))
	killed := time.Now()
	for i, err := range errs {
		require.NoError(t, err, "labeling %s/%s", namespaces[i], stsName)
	}
	var blocks []patches.Reservation
	for _, sts := range admitted {
		cfg, errs := patches.ParseConfig(sts.Annotations, nil, patches.DefaultOptions())
		require.Empty(t, errs, "%s/%s as admitted", sts.Namespace, sts.Name)
		require.NotZero(t, cfg.PortBase, "%s/%s admitted without a block", sts.Namespace, sts.Name)
		blocks = append(blocks, patches.Reservation{PortRange: cfg.Block(), Owner: sts.Namespace + "/" + sts.Name})
	}
	_, overlapping := patches.NewPortSet(blocks[0]).Conflict(blocks[1].PortRange)
	t.Logf("admitted blocks: %s %s, %s %s (overlapping: %v)", blocks[0].Owner, blocks[0].PortRange, blocks[1].Owner, blocks[1].PortRange, overlapping)

	// A call in flight to the leader when it died fails (its connection is reset) and is
	// retried by its client; once the proxy's connections to the dead replica are gone, every
	// call reaches the survivor.
	time.Sleep(time.Second)
	failedAtKill, err := webhookFailures(ctx)
	require.NoError(t, err)
	t.Logf("webhook calls failed at the kill: %v", failedAtKill-failed)

	var elected time.Duration
	require.NoError(t, waitFor(ctx, time.Minute, survivor.Name+" holding the Lease", func() error {
		now, err := leaseHolder(ctx)
		if err != nil {
			return err
		}
		if now == "" || now == holder {
			return fmt.Errorf("Lease held by %q", now)
		}
		if !logContains(survivor, acquiredLease) {
			return fmt.Errorf("Lease held by %q, but %s has not logged %q", now, survivor.Name, acquiredLease)
		}
		elected = time.Since(killed)
		return nil
	}))
	t.Logf("leader killed → %s elected: %s", survivor.Name, elected.Round(10*time.Millisecond))

	// Brokers are admitted by either replica; Services, ConfigMaps and a block given up need the
	// elected one.
	for _, namespace := range namespaces {
		require.NoError(t, waitFor(ctx, 4*time.Minute, namespace+": 3 brokers rolled out, exposed", func() error {
			return rolledOut(ctx, namespace, stsName, replicas, true)
		}))
	}
	t.Logf("labeled → every broker of both StatefulSets rolled out: %s", time.Since(labeled).Round(10*time.Millisecond))
	for _, namespace := range namespaces {
		require.NoError(t, waitFor(ctx, 2*time.Minute, namespace+": Services and ConfigMap converged", func() error {
			return converged(ctx, namespace, stsName, replicas)
		}))
	}
	t.Logf("labeled → every broker of both StatefulSets exposed: %s", time.Since(labeled).Round(10*time.Millisecond))

	// The blocks as settled: disjoint, and every nodePort held by one Service.
	blocks = blocks[:0]
	for _, namespace := range namespaces {
		cfg, err := stsConfig(ctx, namespace, stsName)
		require.NoError(t, err)
		block := patches.Reservation{PortRange: cfg.Block(), Owner: namespace + "/" + stsName}
		if res, overlap := patches.NewPortSet(blocks...).Conflict(block.PortRange); overlap {
			t.Errorf("%s's block %s overlaps %s's %s", block.Owner, block.PortRange, res.Owner, res.PortRange)
		}
		blocks = append(blocks, block)
		if eventSince(ctx, namespace, stsName, "PortBlockConflict", "", labeled) == nil {
			t.Logf("%s gave its first block up (PortBlockConflict)", block.Owner)
		}
	}
	t.Logf("settled blocks: %s %s, %s %s", blocks[0].Owner, blocks[0].PortRange, blocks[1].Owner, blocks[1].PortRange)
	holders := map[int32]string{}
	for _, namespace := range namespaces {
		var services corev1.ServiceList
		require.NoError(t, env.admin.List(ctx, &services, client.InNamespace(namespace), client.HasLabels{patches.LabelCluster}))
		assert.Len(t, services.Items, replicas, "broker Services in %s", namespace)
		for _, svc := range services.Items {
			for _, p := range svc.Spec.Ports {
				owner := svc.Namespace + "/" + svc.Name
				if other, dup := holders[p.NodePort]; dup {
					t.Errorf("nodePort %d held by both %s and %s", p.NodePort, other, owner)
				}
				holders[p.NodePort] = owner
			}
		}
	}

	failedAfter, err := webhookFailures(ctx)
	require.NoError(t, err)
	assert.Equal(t, failedAtKill, failedAfter, "webhook calls failed after the kill, with %s up", survivor.Name)
	for _, p := range pair {
		data, err := os.ReadFile(p.Log)
		require.NoError(t, err)
		assert.NotContains(t, string(data), "provided port is already allocated", "%s asked the API server for a nodePort another Service held", p.Name)
	}
}

// startReplicas stops env.brokerport (handing its Lease over) and runs two replicas in its place,
// behind a proxy on env.port, where the webhook configuration points. When the test ends, the
// replicas and the proxy stop and env.brokerport is started again as before, for the tests after.
func startReplicas(t *testing.T, ctx context.Context) []*cluster.Process {
	env.brokerport.Stop()
	var pair []*cluster.Process
	var proxy *cluster.Proxy
	t.Cleanup(func() {
		for _, p := range pair {
			p.Stop()
		}
		if proxy != nil {
			assert.NoError(t, proxy.Close())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		var err error
		env.brokerport, err = env.cp.StartBrokerport(ctx, env.admin, env.clientset, env.binary, env.port, "--binding-match-conditions=false")
		assert.NoError(t, err, "restarting brokerport for the tests after this one")
	})
	var backends []string
	for _, name := range []string{"brokerport-a", "brokerport-b"} {
		port, err := cluster.FreePort()
		require.NoError(t, err)
		backends = append(backends, fmt.Sprintf("127.0.0.1:%d", port))
		// Started one after the other: StartBrokerportNamed returns once the webhook of a replica
		// serves, and the proxy is not there yet, so only its own readiness is awaited.
		p, err := env.cp.StartBrokerportNamed(ctx, env.admin, env.clientset, env.binary, name, port, "--binding-match-conditions=false")
		if p != nil {
			pair = append(pair, p)
		}
		require.NoError(t, err)
	}
	var err error
	proxy, err = cluster.StartProxy(env.port, backends...)
	require.NoError(t, err)
	return pair
}

func logContains(p *cluster.Process, s string) bool {
	data, err := os.ReadFile(p.Log)
	return err == nil && strings.Contains(string(data), s)
}

func leaseHolder(ctx context.Context) (string, error) {
	lease, err := env.clientset.CoordinationV1().Leases(leaseNamespace).Get(ctx, leaseName, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	if lease.Spec.HolderIdentity == nil {
		return "", nil
	}
	return *lease.Spec.HolderIdentity, nil
}

// webhookFailures is the API server's count of calls to brokerport's webhooks that got no answer:
// refused for it (failurePolicy Fail) or let through without it (Ignore).
func webhookFailures(ctx context.Context) (float64, error) {
	raw, err := env.clientset.RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return 0, err
	}
	total := 0.0
	for _, line := range strings.Split(string(raw), "\n") {
		failed := strings.HasPrefix(line, "apiserver_admission_webhook_fail_open_count{") ||
			strings.HasPrefix(line, "apiserver_admission_webhook_rejection_count{") && strings.Contains(line, `error_type="calling_webhook_error"`)
		if !failed || !strings.Contains(line, `.brokerport.io"`) {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err != nil {
			return 0, fmt.Errorf("%s: %w", line, err)
		}
		total += v
	}
	return total, nil
}
