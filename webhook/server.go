package webhook

import (
	"crypto/tls"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/brokerport/brokerport/patches"
)

// The paths the MutatingWebhookConfiguration calls.
const (
	PathStatefulSets = "/mutate-statefulsets"
	PathPods         = "/mutate-pods"
	PathServices     = "/mutate-services"
	PathScale        = "/validate-scale"
)

// CountedWebhook serves a handler, counting its answers by resource and result.
func CountedWebhook(resource string, h admission.Handler) *admission.Webhook {
	return &admission.Webhook{Handler: counted{resource, h}}
}

// Register serves brokerport's object handlers on server; recorder gets the StatefulSet
// handler's Events. The StatefulSet handler is returned for the StatefulSet informer's events
// (StatefulSetHandler.EventHandler).
func Register(server ctrlwebhook.Server, snapshot Snapshot, recorder events.EventRecorder, opts patches.Options) *StatefulSetHandler {
	statefulSets := NewStatefulSetHandler(snapshot, opts)
	statefulSets.Events = recorder
	server.Register(PathStatefulSets, CountedWebhook("statefulsets", statefulSets))
	server.Register(PathPods, CountedWebhook("pods", NewPodHandler(snapshot, opts)))
	server.Register(PathServices, CountedWebhook("services", NewServiceHandler(snapshot, opts)))
	server.Register(PathScale, CountedWebhook("statefulsets/scale", NewScaleHandler(snapshot, opts)))
	return statefulSets
}

// TLSOptions are the webhook listener's: TLS 1.2 at least, and HTTP/1.1 only, as
// controller-runtime advises since CVE-2023-44487 (HTTP/2 rapid reset).
func TLSOptions() []func(*tls.Config) {
	return []func(*tls.Config){func(c *tls.Config) {
		c.MinVersion = tls.VersionTLS12
		c.NextProtos = []string{"http/1.1"}
		// TLS 1.2 suites limited to forward-secret AEAD ones; TLS 1.3 suites are not configurable.
		c.CipherSuites = []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		}
	}}
}

// CachedTypes are the informers the handlers read; serve starts them before it is ready.
func CachedTypes() []client.Object {
	return []client.Object{&appsv1.StatefulSet{}, &corev1.Service{}, &corev1.Node{}, &corev1.Pod{}, &corev1.ConfigMap{}, &corev1.Namespace{}}
}

// CacheOptions keeps in memory only what brokerport reads: opted-in StatefulSets, every
// Service's nodePorts, every node's addresses and zone, broker pods' placement and hostPorts,
// brokerport's ConfigMaps and every namespace's Pod Security labels. Memory stays flat however large the objects are.
func CacheOptions() cache.Options {
	published, err := labels.NewRequirement(patches.LabelCluster, selection.Exists, nil)
	if err != nil {
		panic(err) // a constant requirement
	}
	managed, err := labels.NewRequirement(patches.LabelManagedBy, selection.Equals, []string{patches.ManagedByValue})
	if err != nil {
		panic(err) // a constant requirement
	}
	return cache.Options{
		// What brokerport made is labeled managed-by=brokerport: anything else of a kind not
		// listed below (cert-manager's Certificates) is left out of memory.
		DefaultLabelSelector: labels.NewSelector().Add(*managed),
		ByObject: map[client.Object]cache.ByObject{
			&appsv1.StatefulSet{}: {
				Label:     labels.SelectorFromSet(labels.Set{patches.LabelExpose: patches.ExposeValue}),
				Transform: keepStatefulSet,
			},
			// Every Service's nodePorts and every node's address: explicitly every object, or
			// DefaultLabelSelector would apply.
			&corev1.Service{}: {Label: labels.Everything(), Transform: keepServicePorts},
			&corev1.Node{}:    {Label: labels.Everything(), Transform: keepNodeAddress},
			&corev1.Pod{}: {
				Label:     labels.SelectorFromSet(labels.Set{patches.LabelExpose: patches.ExposeValue}),
				Transform: keepBrokerPod,
			},
			&corev1.ConfigMap{}: {Label: labels.NewSelector().Add(*published, *managed)},
			&corev1.Namespace{}: {Label: labels.Everything(), Transform: keepPodSecurity},
			// No cert-manager Certificate here: an entry makes the manager map its kind at
			// start, which fails where cert-manager is not installed. Once the controller
			// watches them (controller.CertManagerInstalled), brokerport's own are cached
			// (DefaultLabelSelector).
		},
		DefaultTransform: cache.TransformStripManagedFields(),
	}
}

func slimMeta(m metav1.ObjectMeta, keepLabels, keepAnnotations func(string) bool) metav1.ObjectMeta {
	out := metav1.ObjectMeta{Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion,
		CreationTimestamp: m.CreationTimestamp, DeletionTimestamp: m.DeletionTimestamp}
	out.Labels = keepKeys(m.Labels, keepLabels)
	out.Annotations = keepKeys(m.Annotations, keepAnnotations)
	return out
}

func none(string) bool { return false }

func keepStatefulSet(obj any) (any, error) {
	sts, ok := obj.(*appsv1.StatefulSet)
	if !ok {
		return obj, nil
	}
	out := &appsv1.StatefulSet{
		ObjectMeta: slimMeta(sts.ObjectMeta, patches.IsBrokerportKey, patches.IsBrokerportKey),
		// The governing Service names the brokers inside the cluster, in their certificates.
		Spec: appsv1.StatefulSetSpec{Replicas: sts.Spec.Replicas, Ordinals: sts.Spec.Ordinals, ServiceName: sts.Spec.ServiceName},
		// Which template revision is current, to tell a pod that predates a change from an
		// edited one.
		Status: appsv1.StatefulSetStatus{ObservedGeneration: sts.Status.ObservedGeneration, UpdateRevision: sts.Status.UpdateRevision},
	}
	out.Generation = sts.Generation
	return out, nil
}

func isBrokerportOrManagedBy(k string) bool {
	return patches.IsBrokerportKey(k) || k == patches.LabelManagedBy
}

func keepServicePorts(obj any) (any, error) {
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return obj, nil
	}
	ours := patches.IsExposed(svc.Labels)
	out := &corev1.Service{ObjectMeta: slimMeta(svc.ObjectMeta, isBrokerportOrManagedBy, none)}
	// A broker Service keeps all its ports, so that the controller sees a changed targetPort,
	// and what the loadbalancer strategy sets and reads (its type, traffic policy, the
	// annotations brokerport passed, the load balancer's address); any other Service only the
	// nodePorts it holds.
	if ours {
		out.Annotations = keepKeys(svc.Annotations, patches.IsBrokerportKey)
		out.Spec.Type = svc.Spec.Type
		out.Spec.ExternalTrafficPolicy = svc.Spec.ExternalTrafficPolicy
		out.Status.LoadBalancer = svc.Status.LoadBalancer
	}
	for _, p := range svc.Spec.Ports {
		switch {
		case ours:
			out.Spec.Ports = append(out.Spec.Ports, corev1.ServicePort{Name: p.Name, Port: p.Port, TargetPort: p.TargetPort, NodePort: p.NodePort})
		case p.NodePort != 0:
			out.Spec.Ports = append(out.Spec.Ports, corev1.ServicePort{Name: p.Name, NodePort: p.NodePort})
		}
	}
	return out, nil
}

func keepNodeAddress(obj any) (any, error) {
	node, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	return &corev1.Node{
		ObjectMeta: slimMeta(node.ObjectMeta, func(k string) bool { return k == patches.LabelZone || k == corev1.LabelTopologyRegion }, none),
		Status:     corev1.NodeStatus{Addresses: node.Status.Addresses},
	}, nil
}

func keepPodSecurity(obj any) (any, error) {
	ns, ok := obj.(*corev1.Namespace)
	if !ok {
		return obj, nil
	}
	return &corev1.Namespace{ObjectMeta: slimMeta(ns.ObjectMeta, patches.IsPodSecurityKey, patches.IsBrokerportKey)}, nil
}

func keepBrokerPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	out := &corev1.Pod{
		ObjectMeta: slimMeta(pod.ObjectMeta, func(k string) bool { return patches.IsBrokerportKey(k) || k == appsv1.ControllerRevisionHashLabelKey }, patches.IsBrokerportKey),
		Spec:       corev1.PodSpec{NodeName: pod.Spec.NodeName},
		Status:     corev1.PodStatus{Phase: pod.Status.Phase},
	}
	out.OwnerReferences = pod.OwnerReferences
	// The hostPorts the broker was admitted with: what it really listens on, whatever its
	// StatefulSet says now.
	for _, c := range pod.Spec.Containers {
		var ports []corev1.ContainerPort
		for _, p := range c.Ports {
			if p.HostPort != 0 {
				ports = append(ports, corev1.ContainerPort{ContainerPort: p.ContainerPort, HostPort: p.HostPort, Protocol: p.Protocol})
			}
		}
		if ports != nil {
			out.Spec.Containers = append(out.Spec.Containers, corev1.Container{Name: c.Name, Ports: ports})
		}
	}
	return out, nil
}

// keepKeys is the part of m whose keys keep accepts, nil when there is none.
func keepKeys(m map[string]string, keep func(string) bool) map[string]string {
	var out map[string]string
	for k, v := range m {
		if keep(k) {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}
