package render

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"

	"github.com/brokerport/brokerport/patches"
)

func renderFile(t *testing.T, path string) (*Result, error) {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	objects, err := ReadObjects(f)
	require.NoError(t, err)
	return Render(context.Background(), objects, DefaultNodes(MostReplicas(objects)), patches.DefaultOptions())
}

func TestRenderRedpandaExample(t *testing.T) {
	res, err := renderFile(t, "../../examples/redpanda.yaml")
	require.NoError(t, err)
	require.Len(t, res.StatefulSets, 1)
	require.Len(t, res.Pods, 3)
	require.Len(t, res.Services, 3)
	assert.Equal(t, "30000", res.StatefulSets[0].Annotations[patches.AnnotationPortBase])
	assert.Contains(t, res.Notes, "ignored Service redpanda: brokerport mutates StatefulSets (its nodePorts count as taken)")

	pod := res.Pods[1]
	assert.Equal(t, "node-1", pod.Spec.NodeName)
	assert.Equal(t, "203.0.113.2", pod.Annotations[patches.AnnotationHost])
	assert.Equal(t, "zone-b", pod.Annotations[patches.AnnotationZone])
	hostPorts := map[string]int32{}
	for _, p := range pod.Spec.Containers[0].Ports {
		if p.HostPort != 0 {
			hostPorts[p.Name] = p.HostPort
		}
	}
	assert.Equal(t, map[string]int32{"kafka-default": 30004, "http-default": 30005, "schema-default": 30006, "admin-default": 30007}, hostPorts)
	terms := pod.Spec.Affinity.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution
	require.Len(t, terms, 1)
	assert.Equal(t, "redpanda", terms[0].LabelSelector.MatchLabels[patches.LabelCluster])
	assert.Len(t, pod.Spec.Affinity.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution, 1, "the chart's own affinity is kept")
	assert.Equal(t, "BROKERPORT_NODE_NAME", pod.Spec.InitContainers[0].Env[0].Name)

	svc := res.Services[2]
	assert.Equal(t, "redpanda-2-external", svc.Name)
	assert.Equal(t, corev1.ServiceTypeNodePort, svc.Spec.Type)
	assert.Equal(t, corev1.ServiceExternalTrafficPolicyLocal, svc.Spec.ExternalTrafficPolicy)
	assert.Equal(t, []int32{30008, 30009, 30010, 30011}, []int32{svc.Spec.Ports[0].NodePort, svc.Spec.Ports[1].NodePort, svc.Spec.Ports[2].NodePort, svc.Spec.Ports[3].NodePort})

	var out bytes.Buffer
	require.NoError(t, res.Write(&out))
	text := out.String()
	assert.Contains(t, text, "# redpanda-1  node-1  203.0.113.2:30004  203.0.113.2:30005  203.0.113.2:30006  203.0.113.2:30007\n")
	assert.Contains(t, text, "# bootstrap.servers=203.0.113.1:30000,203.0.113.2:30004,203.0.113.3:30008\n")
	assert.Equal(t, 7, strings.Count(text, "---\n"), "one StatefulSet, three pods, three Services")
	assert.NotContains(t, text, "creationTimestamp")
}

func TestRenderTwoStatefulSetsGetDistinctBlocks(t *testing.T) {
	objects, err := ReadObjects(strings.NewReader(`
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: a}
spec: {replicas: 2, template: {spec: {containers: [{name: k, image: k}]}}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: b}
spec: {replicas: 2, template: {spec: {containers: [{name: k, image: k}]}}}
`))
	require.NoError(t, err)
	res, err := Render(context.Background(), objects, DefaultNodes(1), patches.DefaultOptions())
	require.NoError(t, err)
	assert.Equal(t, "30000", res.StatefulSets[0].Annotations[patches.AnnotationPortBase])
	assert.Equal(t, "30008", res.StatefulSets[1].Annotations[patches.AnnotationPortBase])
	assert.Contains(t, res.Notes, "rendered StatefulSet a as if labeled brokerport.io/expose=true")
	assert.Contains(t, res.Notes, "pod a-1 would stay Pending: 1 nodes for 2 brokers, and brokerport places one broker per node")
}

func TestRenderRefusesInvalidAnnotation(t *testing.T) {
	objects, err := ReadObjects(strings.NewReader(`
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: a, annotations: {brokerport.io/listeners: "kafka:9094"}}
spec: {replicas: 1, template: {spec: {containers: [{name: k, image: k}]}}}
`))
	require.NoError(t, err)
	_, err = Render(context.Background(), objects, DefaultNodes(1), patches.DefaultOptions())
	require.Error(t, err)
	assert.Contains(t, err.Error(), `brokerport would refuse StatefulSet a: StatefulSet.apps "a" is invalid: metadata.annotations[brokerport.io/listeners]: Invalid value: "kafka:9094"`)
}

// The loadbalancer strategy offline: LoadBalancer Services, no hostPorts, and addresses shown as
// the Services whose load balancer gives them; refused without the gate, which it needs.
func TestRenderLoadBalancer(t *testing.T) {
	f, err := os.ReadFile("../../examples/kafka.yaml")
	require.NoError(t, err)
	manifest := strings.Replace(string(f), "\n    brokerport.io/flavor: kafka", "\n    brokerport.io/flavor: kafka\n    brokerport.io/strategy: loadbalancer", 1)
	require.NotEqual(t, string(f), manifest)
	objects, err := ReadObjects(strings.NewReader(manifest))
	require.NoError(t, err)
	nodes := DefaultNodes(MostReplicas(objects))

	_, err = Render(context.Background(), objects, nodes, patches.DefaultOptions())
	require.ErrorContains(t, err, "needs brokerport's gate")

	opts := patches.DefaultOptions()
	opts.GateImage = "brokerport:dev"
	res, err := Render(context.Background(), objects, nodes, opts)
	require.NoError(t, err)
	assert.NotContains(t, res.StatefulSets[0].Annotations, patches.AnnotationPortBase)
	assert.Equal(t, corev1.ServiceTypeLoadBalancer, res.Services[1].Spec.Type)
	for _, p := range res.Pods[1].Spec.Containers[0].Ports {
		assert.Zero(t, p.HostPort)
	}
	var out bytes.Buffer
	require.NoError(t, res.WriteTable(&out, ""))
	assert.Contains(t, out.String(), "(LoadBalancer Services)")
	assert.Contains(t, out.String(), "kafka-1  node-1  <kafka-1-external>:9094")
}
