package main

import (
	"encoding/json"
	"fmt"
	"runtime"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/brokerport/brokerport/patches"
	"github.com/brokerport/brokerport/webhook"
)

// memory compares what brokerport's informers keep (webhook.CacheOptions: label selectors and
// transforms) with caching full objects, for nodes nodes and pods pods of which brokers are
// brokers. Objects are decoded from JSON one by one, as an informer decodes them from the wire.
func memory(nodes, pods, brokers int) error {
	opts := webhook.CacheOptions()
	var nodeTransform, podTransform toolscache.TransformFunc
	var podSelector labels.Selector
	for obj, by := range opts.ByObject {
		switch obj.(type) {
		case *corev1.Node:
			nodeTransform = by.Transform
		case *corev1.Pod:
			podTransform, podSelector = by.Transform, by.Label
		}
	}
	full := func(obj any) (any, error) { return obj, nil }

	fullBytes, err := heapOf(nodes, pods, brokers, full, full, labels.Everything())
	if err != nil {
		return err
	}
	oursBytes, err := heapOf(nodes, pods, brokers, nodeTransform, podTransform, podSelector)
	if err != nil {
		return err
	}
	fmt.Printf("| informer caches, %d nodes + %d pods (%d brokers) | full objects | brokerport | ratio |\n|---|---|---|---|\n", nodes, pods, brokers)
	fmt.Printf("| heap | %.1f MiB | %.1f MiB | 1/%.0f |\n", mib(fullBytes), mib(oursBytes), float64(fullBytes)/float64(oursBytes))
	return nil
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// heapOf fills two informer stores and returns the heap they hold.
func heapOf(nodes, pods, brokers int, nodeTransform, podTransform toolscache.TransformFunc, podSelector labels.Selector) (uint64, error) {
	before := heap()
	nodeStore := toolscache.NewStore(toolscache.MetaNamespaceKeyFunc)
	podStore := toolscache.NewStore(toolscache.MetaNamespaceKeyFunc)
	for i := range nodes {
		node := &corev1.Node{}
		if err := json.Unmarshal(nodeJSON(i), node); err != nil {
			return 0, err
		}
		obj, err := nodeTransform(node)
		if err != nil {
			return 0, err
		}
		_ = nodeStore.Add(obj)
	}
	for i := range pods {
		pod := &corev1.Pod{}
		if err := json.Unmarshal(podJSON(i, i < brokers), pod); err != nil {
			return 0, err
		}
		if !podSelector.Matches(labels.Set(pod.Labels)) {
			continue // the API server does not even send it
		}
		obj, err := podTransform(pod)
		if err != nil {
			return 0, err
		}
		_ = podStore.Add(obj)
	}
	after := heap()
	runtime.KeepAlive(nodeStore)
	runtime.KeepAlive(podStore)
	return after - before, nil
}

func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// nodeJSON is a node as a kubelet reports it: labels, conditions, addresses, a list of images,
// node info and managed fields.
func nodeJSON(i int) []byte {
	var images []string
	for j := range 30 {
		images = append(images, fmt.Sprintf(`{"names":["registry.example.com/team/app-%d@sha256:%064d","registry.example.com/team/app-%d:v1.%d.%d"],"sizeBytes":%d}`, j, j, j, j, i%7, 100000000+j))
	}
	return []byte(fmt.Sprintf(`{"apiVersion":"v1","kind":"Node","metadata":{"name":"node-%d","uid":"%08d-0000-4000-8000-000000000000","resourceVersion":"%d",
"labels":{"kubernetes.io/hostname":"node-%d","kubernetes.io/os":"linux","kubernetes.io/arch":"amd64","node.kubernetes.io/instance-type":"m6i.2xlarge","topology.kubernetes.io/region":"eu-west-1","topology.kubernetes.io/zone":"eu-west-1%c","beta.kubernetes.io/arch":"amd64","beta.kubernetes.io/os":"linux","node-role.kubernetes.io/worker":"","pool":"general"},
"annotations":{"node.alpha.kubernetes.io/ttl":"0","volumes.kubernetes.io/controller-managed-attach-detach":"true","csi.volume.kubernetes.io/nodeid":"{\"ebs.csi.aws.com\":\"i-0%015d\"}"},
"managedFields":[{"manager":"kubelet","operation":"Update","apiVersion":"v1","time":"2026-11-21T10:00:00Z","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:labels":{"f:kubernetes.io/hostname":{},"f:kubernetes.io/os":{}}},"f:status":{"f:conditions":{"k:{\"type\":\"Ready\"}":{"f:lastHeartbeatTime":{},"f:status":{}}},"f:images":{}}}}]},
"spec":{"providerID":"aws:///eu-west-1a/i-0%015d","podCIDR":"10.%d.%d.0/24"},
"status":{"capacity":{"cpu":"8","memory":"32Gi","pods":"110","ephemeral-storage":"100Gi"},"allocatable":{"cpu":"7910m","memory":"31Gi","pods":"110","ephemeral-storage":"95Gi"},
"conditions":[{"type":"MemoryPressure","status":"False","lastHeartbeatTime":"2026-11-21T10:00:00Z","lastTransitionTime":"2026-11-01T10:00:00Z","reason":"KubeletHasSufficientMemory","message":"kubelet has sufficient memory available"},{"type":"DiskPressure","status":"False","lastHeartbeatTime":"2026-11-21T10:00:00Z","lastTransitionTime":"2026-11-01T10:00:00Z","reason":"KubeletHasNoDiskPressure","message":"kubelet has no disk pressure"},{"type":"PIDPressure","status":"False","lastHeartbeatTime":"2026-11-21T10:00:00Z","lastTransitionTime":"2026-11-01T10:00:00Z","reason":"KubeletHasSufficientPID","message":"kubelet has sufficient PID available"},{"type":"Ready","status":"True","lastHeartbeatTime":"2026-11-21T10:00:00Z","lastTransitionTime":"2026-11-01T10:00:00Z","reason":"KubeletReady","message":"kubelet is posting ready status"}],
"addresses":[{"type":"InternalIP","address":"10.0.%d.%d"},{"type":"ExternalIP","address":"203.0.%d.%d"},{"type":"InternalDNS","address":"ip-10-0-%d-%d.eu-west-1.compute.internal"},{"type":"Hostname","address":"node-%d"}],
"daemonEndpoints":{"kubeletEndpoint":{"Port":10250}},"nodeInfo":{"machineID":"%032d","systemUUID":"ec2%029d","bootID":"%032d","kernelVersion":"6.1.0","osImage":"Amazon Linux 2023","containerRuntimeVersion":"containerd://1.7.20","kubeletVersion":"v1.34.4","kubeProxyVersion":"v1.34.4","operatingSystem":"linux","architecture":"amd64"},
"images":[%s]}}`,
		i, i, i, i, 'a'+i%3, i, i, i/256%256, i%256, i/256, i%256, i/256, i%256, i/256, i%256, i, i, i, i, strings.Join(images, ",")))
}

// podJSON is a running pod of a Deployment, or a broker pod (labeled) of a StatefulSet.
func podJSON(i int, broker bool) []byte {
	labels := fmt.Sprintf(`"app":"web-%d","pod-template-hash":"7d9f8c6b5"`, i%50)
	annotations := ``
	name := fmt.Sprintf("web-%d-7d9f8c6b5-%05d", i%50, i)
	if broker {
		labels = fmt.Sprintf(`"app":"redpanda","%s":"true","%s":"redpanda-%d","statefulset.kubernetes.io/pod-name":"redpanda-%d-%d"`, patches.LabelExpose, patches.LabelCluster, i/3, i/3, i%3)
		annotations = fmt.Sprintf(`,"annotations":{"%s":"kafka=9094,http=8083","%s":"30000","%s":"203.0.113.%d","%s":"zone-a","%s":"node-%d"}`,
			patches.AnnotationListeners, patches.AnnotationPortBase, patches.AnnotationHost, i%250, patches.AnnotationZone, patches.AnnotationNode, i)
		name = fmt.Sprintf("redpanda-%d-%d", i/3, i%3)
	}
	var env []string
	for j := range 15 {
		env = append(env, fmt.Sprintf(`{"name":"SETTING_%d","value":"value-%d-of-some-length"}`, j, j))
	}
	return []byte(fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"%s","namespace":"team-%d","uid":"%08d-0000-4000-8000-000000000001","resourceVersion":"%d","labels":{%s}%s,
"ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"web-7d9f8c6b5","uid":"00000000-0000-4000-8000-000000000002","controller":true,"blockOwnerDeletion":true}],
"managedFields":[{"manager":"kube-controller-manager","operation":"Update","apiVersion":"v1","time":"2026-11-21T10:00:00Z","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:labels":{}},"f:spec":{"f:containers":{"k:{\"name\":\"app\"}":{"f:env":{},"f:image":{}}}}}},{"manager":"kubelet","operation":"Update","apiVersion":"v1","time":"2026-11-21T10:00:00Z","fieldsType":"FieldsV1","fieldsV1":{"f:status":{"f:conditions":{},"f:containerStatuses":{},"f:podIP":{}}},"subresource":"status"}]},
"spec":{"nodeName":"node-%d","serviceAccountName":"default","containers":[{"name":"app","image":"registry.example.com/team/web:v1.2.3","ports":[{"containerPort":8080,"name":"http"}],"env":[%s],
"resources":{"requests":{"cpu":"100m","memory":"128Mi"},"limits":{"memory":"256Mi"}},"readinessProbe":{"httpGet":{"path":"/healthz","port":8080}},"volumeMounts":[{"name":"kube-api-access","mountPath":"/var/run/secrets/kubernetes.io/serviceaccount","readOnly":true}]}],
"volumes":[{"name":"kube-api-access","projected":{"sources":[{"serviceAccountToken":{"expirationSeconds":3607,"path":"token"}},{"configMap":{"name":"kube-root-ca.crt","items":[{"key":"ca.crt","path":"ca.crt"}]}}]}}],
"tolerations":[{"key":"node.kubernetes.io/not-ready","operator":"Exists","effect":"NoExecute","tolerationSeconds":300},{"key":"node.kubernetes.io/unreachable","operator":"Exists","effect":"NoExecute","tolerationSeconds":300}]},
"status":{"phase":"Running","podIP":"10.%d.%d.%d","hostIP":"10.0.0.1","startTime":"2026-11-21T10:00:00Z","qosClass":"Burstable",
"conditions":[{"type":"Initialized","status":"True","lastTransitionTime":"2026-11-21T10:00:00Z"},{"type":"Ready","status":"True","lastTransitionTime":"2026-11-21T10:00:00Z"},{"type":"ContainersReady","status":"True","lastTransitionTime":"2026-11-21T10:00:00Z"},{"type":"PodScheduled","status":"True","lastTransitionTime":"2026-11-21T10:00:00Z"}],
"containerStatuses":[{"name":"app","ready":true,"restartCount":0,"image":"registry.example.com/team/web:v1.2.3","imageID":"registry.example.com/team/web@sha256:%064d","containerID":"containerd://%064d","started":true,"state":{"running":{"startedAt":"2026-11-21T10:00:00Z"}}}]}}`,
		name, i%40, i, i, labels, annotations, i%5000, strings.Join(env, ","), i/65536%256, i/256%256, i%256, i, i))
}
