package controller

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/brokerport/brokerport/patches"
)

// allocateNodePorts is the API server allocating nodePorts to broker i's LoadBalancer Service
// (the fake does not), from first on.
func (f *fixture) allocateNodePorts(i int, first int32) {
	f.t.Helper()
	svc := &corev1.Service{}
	require.NoError(f.t, f.client.Get(context.Background(), client.ObjectKey{Namespace: "kafka", Name: fmt.Sprintf("redpanda-%d-external", i)}, svc))
	for p := range svc.Spec.Ports {
		svc.Spec.Ports[p].NodePort = first + int32(p)
	}
	require.NoError(f.t, f.client.Update(context.Background(), svc))
}

func (f *fixture) balancer(i int) *corev1.Service {
	f.t.Helper()
	svc := &corev1.Service{}
	require.NoError(f.t, f.client.Get(context.Background(), client.ObjectKey{Namespace: "kafka", Name: fmt.Sprintf("redpanda-%d-external", i)}, svc))
	return svc
}

// With brokerport.io/allocate-load-balancer-node-ports: "false" the broker Services ask for no
// nodePorts, and Services that hold some (made before) give them back: the API server keeps a
// nodePort a Service still names, allocateLoadBalancerNodePorts false or not.
func TestLoadBalancerServicesAskForNoNodePorts(t *testing.T) {
	f, _ := newLoadBalancerFixture(t)
	ctx := context.Background()
	f.reconcile()
	for i := range 3 {
		f.allocateNodePorts(i, int32(31000+10*i))
	}
	f.reconcile()
	require.Empty(t, f.writes, "allocated nodePorts are kept while the StatefulSet asks for them")

	f.sts.Annotations[patches.AnnotationAllocateLoadBalancerNodePorts] = "false"
	require.NoError(t, f.client.Update(ctx, f.sts))
	f.reconcile()
	assert.Equal(t, []string{"update *v1.Service redpanda-0-external", "update *v1.Service redpanda-1-external", "update *v1.Service redpanda-2-external"}, servicesWritten(f.writes))
	for i := range 3 {
		svc := f.balancer(i)
		assert.Equal(t, ptr.To(false), svc.Spec.AllocateLoadBalancerNodePorts)
		assert.Equal(t, []int32{0, 0}, []int32{svc.Spec.Ports[0].NodePort, svc.Spec.Ports[1].NodePort}, "given back")
		assert.Equal(t, "false", svc.Annotations[patches.AnnotationAllocateLoadBalancerNodePorts])
		assert.Equal(t, "nlb", svc.Annotations["lb.example.com/type"], "the passed annotations stay")
	}
	f.reconcile()
	assert.Empty(t, servicesWritten(f.writes), "a second reconcile writes nothing")

	// Back to the default: the Services ask for nodePorts again.
	delete(f.sts.Annotations, patches.AnnotationAllocateLoadBalancerNodePorts)
	require.NoError(t, f.client.Update(ctx, f.sts))
	f.reconcile()
	assert.Len(t, servicesWritten(f.writes), 3)
	svc := f.balancer(1)
	assert.Nil(t, svc.Spec.AllocateLoadBalancerNodePorts, "the API server's default (true) again")
	assert.NotContains(t, svc.Annotations, patches.AnnotationAllocateLoadBalancerNodePorts)
}

// A nodePort the API server allocated to a broker's LoadBalancer Service in brokerport's band
// (its range's upper part full) cannot be refused at admission, before allocation: it is said,
// naming the Service, the port and the fixes.
func TestLoadBalancerNodePortInTheBandIsReported(t *testing.T) {
	f, _ := newLoadBalancerFixture(t)
	f.reconcile()
	drainEvents(f.events)
	f.allocateNodePorts(0, 31000)
	f.allocateNodePorts(1, 30084)
	f.reconcile()
	assert.Empty(t, servicesWritten(f.writes), "kept: another allocation could land there too")
	events := strings.Join(drainEvents(f.events), "\n")
	assert.Contains(t, events, `Warning NodePortInBand Service redpanda-1-external holds nodePort 30084 (listener "kafka"), allocated by the API server in brokerport's port band 30000-30085`)
	assert.Contains(t, events, `Service redpanda-1-external holds nodePort 30085 (listener "http")`)
	assert.Contains(t, events, `set brokerport.io/allocate-load-balancer-node-ports: "false"`)
	assert.NotContains(t, events, "redpanda-0-external holds")
}

func servicesWritten(writes []string) []string {
	var out []string
	for _, w := range writes {
		if strings.Contains(w, "*v1.Service ") {
			out = append(out, w)
		}
	}
	return out
}
