//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/brokerport/brokerport/patches"
	"github.com/brokerport/brokerport/webhook/controller"
)

// lbPassed is a real MetalLB setting passed through brokerport.io/service-annotations: the pool
// to allocate from.
const lbPassed = `{"metallb.io/address-pool":"e2e"}`

// TestLoadBalancer switches a running Apache Kafka StatefulSet from the nodeport strategy to the
// loadbalancer strategy, with MetalLB's real controller (built from its Go module) giving each
// broker's LoadBalancer Service an address from a pool of loopback addresses: the brokers roll off
// their node ports, each advertises its own Service's address, the port block is given back, and
// franz-go and kcat reach every broker at the published addresses (each fake broker listens where
// the load balancer would deliver: its Service's address and port).
func TestLoadBalancer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	_, err := env.cp.StartMetalLB(ctx, env.admin, lbPool)
	require.NoError(t, err)

	const ns = "loadbalancer"
	convergeNamespace(t, ctx, ns, nil)
	sts := kafkaStatefulSet()
	sts.Namespace = ns
	require.NoError(t, env.admin.Create(ctx, sts))
	require.NoError(t, waitFor(ctx, 2*time.Minute, "the brokers published on node ports", func() error { return published(ctx, ns, sts.Name, 3) }))

	// The StatefulSet controller writes its status meanwhile: retried on a conflict.
	require.NoError(t, retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := env.admin.Get(ctx, client.ObjectKeyFromObject(sts), sts); err != nil {
			return err
		}
		require.NotEmpty(t, sts.Annotations[patches.AnnotationPortBase])
		sts.Annotations[patches.AnnotationStrategy] = string(patches.StrategyLoadBalancer)
		sts.Annotations[patches.AnnotationServiceAnnotations] = lbPassed
		return env.admin.Update(ctx, sts)
	}))
	require.NotContains(t, sts.Annotations, patches.AnnotationPortBase, "the port block is given back at once")

	var ingress []string
	require.NoError(t, waitFor(ctx, 3*time.Minute, "every broker rolled and published at its load balancer", func() error {
		ingress = nil
		for i := range 3 {
			svc := &corev1.Service{}
			if err := env.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: patches.BrokerServiceName(sts.Name, i)}, svc); err != nil {
				return err
			}
			if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || patches.IngressHost(svc, "") == "" {
				return fmt.Errorf("Service %s: type %s, ingress %v", svc.Name, svc.Spec.Type, svc.Status.LoadBalancer.Ingress)
			}
			ingress = append(ingress, net.JoinHostPort(patches.IngressHost(svc, ""), "9094"))
		}
		cm := &corev1.ConfigMap{}
		if err := env.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: controller.ConfigMapName(sts.Name)}, cm); err != nil {
			return err
		}
		if want := strings.Join(ingress, ","); cm.Data["bootstrap.servers"] != want || strings.Contains(cm.Data["status"], "not exposed") {
			return fmt.Errorf("bootstrap.servers=%q (want %q), status=%q", cm.Data["bootstrap.servers"], want, cm.Data["status"])
		}
		return nil
	}))

	for i := range 3 {
		svc := &corev1.Service{}
		require.NoError(t, env.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: patches.BrokerServiceName(sts.Name, i)}, svc))
		assert.Equal(t, "e2e", svc.Annotations["metallb.io/address-pool"], "passed through")
		assert.Equal(t, corev1.ServiceExternalTrafficPolicyLocal, svc.Spec.ExternalTrafficPolicy)
		for _, p := range svc.Spec.Ports {
			assert.False(t, p.NodePort >= 30000 && p.NodePort <= 30085, "Service %s: nodePort %d is in brokerport's band", svc.Name, p.NodePort)
		}
		ip := netip.MustParseAddr(patches.IngressHost(svc, ""))
		assert.True(t, lbPoolFirst.Compare(ip) <= 0 && ip.Compare(lbPoolEnd) <= 0, "Service %s: %s from the pool", svc.Name, ip)

		pod := &corev1.Pod{}
		require.NoError(t, env.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: fmt.Sprintf("%s-%d", sts.Name, i)}, pod))
		assert.Equal(t, ip.String(), pod.Annotations[patches.AnnotationHost], "pod %s", pod.Name)
		assert.Zero(t, kafkaHostPort(pod), "pod %s: no hostPort", pod.Name)
		assert.Nil(t, pod.Spec.Affinity, "pod %s: no one-broker-per-node rule", pod.Name)
		resolved, err := resolveEnv(pod, "kafka")
		require.NoError(t, err)
		assert.Contains(t, strings.Split(resolved["KAFKA_ADVERTISED_LISTENERS"], ","), "EXTERNAL://"+ingress[i])
	}

	atLoadBalancer := func(ctx context.Context, pod *corev1.Pod) (string, error) {
		ordinal, _ := patches.OrdinalOf(pod.Name, sts.Name)
		svc := &corev1.Service{}
		if err := env.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: patches.BrokerServiceName(sts.Name, ordinal)}, svc); err != nil {
			return "", err
		}
		return net.JoinHostPort(patches.IngressHost(svc, ""), "9094"), nil
	}
	require.NoError(t, checkKafkaWith(ctx, ns, sts.Name, "kafka", 3, externalListener, nil, kafkaCheck{listenAt: atLoadBalancer}))

	// Back to node ports: a block is assigned again and the brokers roll onto it.
	require.NoError(t, retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := env.admin.Get(ctx, client.ObjectKeyFromObject(sts), sts); err != nil {
			return err
		}
		delete(sts.Annotations, patches.AnnotationStrategy)
		delete(sts.Annotations, patches.AnnotationServiceAnnotations)
		return env.admin.Update(ctx, sts)
	}))
	require.NoError(t, waitFor(ctx, 3*time.Minute, "every broker back on a node port", func() error {
		if err := rolledOut(ctx, ns, sts.Name, 3, true); err != nil {
			return err
		}
		return converged(ctx, ns, sts.Name, 3)
	}))
	require.NoError(t, checkKafka(ctx, ns, sts.Name, "kafka", 3, externalListener, nil))
}
