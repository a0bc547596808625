package controller

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/brokerport/brokerport/patches"
)

// repair writes the address annotations of bound brokers that lack them, or whose annotations no
// longer say what the StatefulSet's configuration gives for their node (the node's address
// changed, or someone edited the pod). The address comes from the StatefulSet and the node only.
// One broker's failed repair does not stop the others'.
//
// For the loadbalancer strategy the address is the broker's Service's load-balancer address
// (balancers, by ordinal): written once the load balancer gives it, which lets the broker start.
func (r *Reconciler) repair(ctx context.Context, sts *appsv1.StatefulSet, cfg patches.Config, brokers map[int]*corev1.Pod, nodes map[string]*corev1.Node, balancers map[int]patches.LoadBalancerFacts) error {
	var errs []error
	for _, pod := range slices.SortedFunc(maps.Values(brokers), func(a, b *corev1.Pod) int { return strings.Compare(a.Name, b.Name) }) {
		node := nodes[pod.Spec.NodeName]
		if node == nil || pod.DeletionTimestamp != nil {
			continue // not bound, going away, or its node is
		}
		var addr patches.NodeAddress
		where := fmt.Sprintf("node %s's address", node.Name) // what the address is, for RestartRequired
		if cfg.LoadBalanced() {
			ordinal, _ := patches.OrdinalOf(pod.Name, sts.Name)
			ingress := balancers[ordinal].Ingress
			if ingress == "" || hasHostPorts(pod) {
				continue // no address yet (the gate waits), or a pod of the nodeport strategy
			}
			addr = patches.LoadBalancerAddress(ingress, node)
			where = fmt.Sprintf("Service %s's load-balancer address", balancers[ordinal].Service)
		} else {
			if !hasHostPorts(pod) {
				continue // a pod of the loadbalancer strategy, until it rolls
			}
			var err error
			if addr, err = patches.SelectAddress(node, cfg); err != nil {
				r.Events.Eventf(sts, pod, corev1.EventTypeWarning, "NoNodeAddress", "Repair", "broker %s: %v", pod.Name, err)
				continue
			}
		}
		before := pod.Annotations[patches.AnnotationHost]
		// brokerport.io/host-uri follows brokerport.io/host (SetAddress writes both); a broker
		// bound by an earlier brokerport has no host-uri and no variable that reads it.
		if before == addr.Host && pod.Annotations[patches.AnnotationZone] == addr.Zone && pod.Annotations[patches.AnnotationNode] == addr.Node {
			continue
		}
		patch := client.MergeFrom(pod.DeepCopy())
		patches.SetAddress(&pod.ObjectMeta, addr)
		if err := r.Client.Patch(ctx, pod, patch); err != nil {
			errs = append(errs, fmt.Errorf("repairing the address of pod %s: %w", pod.Name, err))
			continue
		}
		if addr.Fallback != "" {
			r.Events.Eventf(pod, sts, corev1.EventTypeWarning, "HostTemplateFallback", "Repair", "broker %s: %s; fix the node's labels or %s on StatefulSet %s", pod.Name, addr.Fallback, patches.AnnotationHostTemplate, sts.Name)
		}
		if before == "" {
			repairs.WithLabelValues("missing").Inc()
			r.Events.Eventf(pod, sts, corev1.EventTypeNormal, "AddressRepaired", "Repair", "set %s=%s (node %s): the broker can start", patches.AnnotationHost, addr.Host, addr.Node)
			continue
		}
		repairs.WithLabelValues("stale").Inc()
		r.Events.Eventf(pod, sts, corev1.EventTypeWarning, "RestartRequired", "Repair",
			"the address annotations said %s, but %s is %s; the broker may still advertise %s: restart it (kubectl delete pod %s) to re-advertise", before, where, addr.Host, before, pod.Name)
	}
	return errors.Join(errs...)
}

// hasHostPorts tells a broker pod admitted for the nodeport strategy.
func hasHostPorts(pod *corev1.Pod) bool {
	for _, c := range pod.Spec.Containers {
		if slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.HostPort != 0 }) {
			return true
		}
	}
	return false
}
