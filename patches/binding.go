package patches

import (
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// BrokerCandidate tells whether a pod name can be a broker of an opted-in StatefulSet: it is
// "<sts>-<ordinal>" and isCluster(<sts>) holds. It allocates nothing, because the binding
// webhook asks it for every pod the scheduler binds in the cluster.
func BrokerCandidate(podName string, isCluster func(sts string) bool) (sts string, ok bool) {
	dash := -1
	for i := len(podName) - 1; i >= 0; i-- {
		c := podName[i]
		if c == '-' {
			dash = i
			break
		}
		if c < '0' || c > '9' {
			return "", false
		}
	}
	if dash <= 0 || dash == len(podName)-1 {
		return "", false
	}
	if sts := podName[:dash]; isCluster(sts) {
		return sts, true
	}
	return "", false
}

// ErrNoIngressYet: a broker of the loadbalancer strategy is bound before its load balancer has
// an address. Not a fault: the gate holds the broker until the controller writes the address.
var ErrNoIngressYet = errors.New("its load balancer has no address yet")

// MutateBinding adds the broker's address annotations to its Binding; the API server copies them
// onto the pod in the same write that sets spec.nodeName. pod is the broker (its configuration
// annotations are what it was created with), node the Binding's target, and service the broker's
// Service (nil when there is none), whose ingress is the address of the loadbalancer strategy.
// An error means there is no address to give: the Binding is left as it is.
func MutateBinding(binding *corev1.Binding, pod *corev1.Pod, node *corev1.Node, service *corev1.Service, opts Options) (NodeAddress, error) {
	cfg, errs := ParseConfig(pod.Annotations, field.NewPath("metadata", "annotations"), opts)
	if len(errs) > 0 {
		return NodeAddress{}, fmt.Errorf("pod %s: %w", pod.Name, errs.ToAggregate())
	}
	var addr NodeAddress
	if cfg.LoadBalanced() {
		ingress := ""
		if IsLoadBalancerOf(service) && service.Labels[LabelCluster] == pod.Labels[LabelCluster] {
			ingress = IngressHost(service, cfg.IPFamily)
		}
		if ingress == "" {
			return addr, ErrNoIngressYet
		}
		addr = LoadBalancerAddress(ingress, node)
	} else {
		var err error
		if addr, err = SelectAddress(node, cfg); err != nil {
			return addr, err
		}
	}
	SetAddress(&binding.ObjectMeta, addr)
	return addr, nil
}
