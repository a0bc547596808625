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
func (r *Reconciler) repair(ctx context.Context, sts *appsv1.StatefulSet, cfg patches.Config, brokers map[int]*corev1.Pod, nodes map[string]*corev1.Node) error {
	var errs []error
	for _, pod := range slices.SortedFunc(maps.Values(brokers), func(a, b *corev1.Pod) int { return strings.Compare(a.Name, b.Name) }) {
		node := nodes[pod.Spec.NodeName]
		if node == nil || pod.DeletionTimestamp != nil {
			continue // not bound, going away, or its node is
		}
		addr, err := patches.SelectAddress(node, cfg)
		if err != nil {
			r.Events.Eventf(sts, pod, corev1.EventTypeWarning, "NoNodeAddress", "Repair", "broker %s: %v", pod.Name, err)
			continue
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
			"the address annotations said %s, but node %s's address is %s; the broker may still advertise %s: restart it (kubectl delete pod %s) to re-advertise", before, addr.Node, addr.Host, before, pod.Name)
	}
	return errors.Join(errs...)
}
