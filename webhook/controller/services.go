package controller

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/brokerport/brokerport/patches"
)

// services takes the StatefulSet's broker Services to one per wanted broker on that broker's
// ports, in the order patches.PlanServices gives (free before claim), and removes the others
// once their pod is gone. It returns, per ordinal, why a broker's Service could not be made
// right; one broker's failure does not stop the writes for the others.
//
// For the loadbalancer strategy it also returns, per ordinal, what is known of the broker's load
// balancer (its address, or how long it has been waited for).
func (r *Reconciler) services(ctx context.Context, sts *appsv1.StatefulSet, cfg patches.Config, first, last int, brokers map[int]*corev1.Pod) (map[int]string, map[int]patches.LoadBalancerFacts, error) {
	var all corev1.ServiceList
	if err := r.Client.List(ctx, &all); err != nil {
		return nil, nil, fmt.Errorf("listing Services: %w", err)
	}
	in := patches.ServicePlanInput{Current: map[string][]int32{}, Target: map[string][]int32{}, Stale: map[string]bool{}, Foreign: map[int32]string{}}
	wanted := map[string]*corev1.Service{}
	ordinalOf := map[string]int{}
	for ordinal := first; ordinal <= last; ordinal++ {
		svc := patches.BrokerService(sts, cfg, ordinal)
		wanted[svc.Name] = svc
		ordinalOf[svc.Name] = ordinal
		in.Target[svc.Name] = nodePorts(svc)
	}
	problems := map[int]string{}
	existing := map[string]*corev1.Service{}
	for i := range all.Items {
		svc := &all.Items[i]
		ours := svc.Namespace == sts.Namespace && isOurs(svc.Labels, sts.Name) && patches.IsExposed(svc.Labels)
		ordinal, goingAway := patches.BrokerServiceOrdinal(svc.Name, sts.Name)
		goingAway = goingAway && brokers[ordinal] != nil && wanted[svc.Name] == nil
		switch {
		case ours && !goingAway:
			existing[svc.Name] = svc
			in.Current[svc.Name] = nodePorts(svc)
			want := wanted[svc.Name]
			if want != nil && want.Spec.Type == corev1.ServiceTypeLoadBalancer && svc.Spec.Type == corev1.ServiceTypeLoadBalancer && !patches.AsksNoNodePorts(want) {
				// The nodePorts the API server allocated are the ones to keep: asking for
				// none would be a change on every reconcile.
				in.Target[svc.Name] = in.Current[svc.Name]
				r.reportBandNodePorts(sts, svc)
			}
			if want != nil && !sameService(svc, want) {
				in.Stale[svc.Name] = true
			}
		case svc.Namespace == sts.Namespace && wanted[svc.Name] != nil:
			// A Service of that name that is not brokerport's: left alone, and said.
			problems[ordinalOf[svc.Name]] = fmt.Sprintf("Service %s exists and is not brokerport's (no %s=%s and %s=%s labels): rename or delete it", svc.Name, patches.LabelCluster, sts.Name, patches.LabelManagedBy, patches.ManagedByValue)
			delete(in.Target, svc.Name)
			fallthrough
		default:
			holder := fmt.Sprintf("Service %s/%s", svc.Namespace, svc.Name)
			if goingAway {
				holder += " (its broker is still going away)"
			}
			for _, p := range svc.Spec.Ports {
				if p.NodePort != 0 {
					in.Foreign[p.NodePort] = holder
				}
			}
		}
	}

	plan := patches.PlanServices(in)
	for name, b := range plan.Blocked {
		problems[ordinalOf[name]] = fmt.Sprintf("port %d is held by %s", b.Port, b.Holder)
	}
	for _, step := range plan.Steps {
		var err error
		switch step.Op {
		case patches.OpDelete:
			err = client.IgnoreNotFound(r.Client.Delete(ctx, existing[step.Name]))
		case patches.OpCreate:
			err = r.Client.Create(ctx, wanted[step.Name].DeepCopy())
		case patches.OpUpdate:
			err = r.updateService(ctx, existing[step.Name], wanted[step.Name])
		}
		if err == nil {
			continue
		}
		// The API server refused (a port the cache did not show as taken, a conflict): say it
		// for this broker and go on; a later step that needed its ports fails the same way.
		if ordinal, ok := ordinalOf[step.Name]; ok {
			problems[ordinal] = fmt.Sprintf("%s Service %s: %v", step.Op, step.Name, err)
		} else {
			logf.FromContext(ctx).Error(err, "removing a surplus broker Service", "service", step.Name)
		}
	}
	if !cfg.LoadBalanced() {
		return problems, nil, nil
	}
	balancers := map[int]patches.LoadBalancerFacts{}
	for ordinal := first; ordinal <= last; ordinal++ {
		name := patches.BrokerServiceName(sts.Name, ordinal)
		facts := patches.LoadBalancerFacts{Service: name}
		// A Service just created or changed by the plan is not in the cache yet: its address
		// comes with the watch event that follows.
		if svc := existing[name]; svc != nil && svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
			facts.Ingress = patches.IngressHost(svc, cfg.IPFamily)
			facts.Overdue = facts.Ingress == "" && r.now().Sub(svc.CreationTimestamp.Time) > loadBalancerPatience
		}
		balancers[ordinal] = facts
	}
	return problems, balancers, nil
}

// reportBandNodePorts says, on the StatefulSet, which nodePorts of one of its LoadBalancer
// Services the API server allocated in brokerport's band. The Service webhook cannot prevent it:
// a Service is created with no nodePorts, and the API server allocates them after admission, from
// the static band only when the rest of its range is full. The ports stay taken from the band
// (no block is assigned over them) until the Service goes.
func (r *Reconciler) reportBandNodePorts(sts *appsv1.StatefulSet, svc *corev1.Service) {
	for _, p := range patches.BandNodePorts(svc, r.Options.PortRange) {
		r.Events.Eventf(sts, svc, corev1.EventTypeWarning, "NodePortInBand", "Expose",
			"Service %s holds nodePort %d (listener %q), allocated by the API server in brokerport's port band %s: the rest of the NodePort range is full. If the load balancer routes to the pods themselves (MetalLB, the AWS Load Balancer Controller in ip mode), set %s: \"false\" on the StatefulSet and its Services give their nodePorts back; else widen the API server's --service-node-port-range",
			svc.Name, p.NodePort, p.Name, r.Options.PortRange, patches.AnnotationAllocateLoadBalancerNodePorts)
	}
}

// loadBalancerPatience is how long a LoadBalancer Service may wait for an address before its
// broker is said not exposed (a Warning Event) rather than still coming: cloud load balancers
// take from seconds to a few minutes.
const loadBalancerPatience = 5 * time.Minute

// nodePorts are the nodePorts a Service holds or asks for, in the order of its ports (a
// LoadBalancer Service asks for none: the API server allocates them outside brokerport's band).
func nodePorts(svc *corev1.Service) []int32 {
	ports := make([]int32, 0, len(svc.Spec.Ports))
	for _, p := range svc.Spec.Ports {
		if p.NodePort != 0 {
			ports = append(ports, p.NodePort)
		}
	}
	return ports
}

// sameService tells whether a broker Service is the wanted one: its ports (names, ports,
// targetPorts, and nodePorts where brokerport chooses them, or none where it asks for none),
// type, traffic policy and the annotations brokerport passes or records.
func sameService(svc, want *corev1.Service) bool {
	noNodePorts := patches.AsksNoNodePorts(want)
	return svc.Spec.Type == want.Spec.Type &&
		svc.Spec.ExternalTrafficPolicy == want.Spec.ExternalTrafficPolicy &&
		svc.Annotations[patches.AnnotationServiceAnnotations] == want.Annotations[patches.AnnotationServiceAnnotations] &&
		patches.AsksNoNodePorts(svc) == noNodePorts &&
		slices.EqualFunc(svc.Spec.Ports, want.Spec.Ports, func(a, b corev1.ServicePort) bool {
			return a.Name == b.Name && a.Port == b.Port && apiequality.Semantic.DeepEqual(a.TargetPort, b.TargetPort) &&
				(a.NodePort == b.NodePort || (b.NodePort == 0 && !noNodePorts))
		})
}

// updateService gives an existing broker Service the wanted ports, selector, labels, type,
// traffic policy and passed annotations. A change of type (the strategy switched) is a delete and
// a create: the fields of one type (a load balancer's allocations) mean nothing to the other.
func (r *Reconciler) updateService(ctx context.Context, current, want *corev1.Service) error {
	if current.Spec.Type != want.Spec.Type {
		if err := client.IgnoreNotFound(r.Client.Delete(ctx, current)); err != nil {
			return err
		}
		return r.Client.Create(ctx, want.DeepCopy())
	}
	svc := &corev1.Service{}
	if err := r.API.Get(ctx, client.ObjectKeyFromObject(want), svc); err != nil {
		return fmt.Errorf("getting Service %s: %w", want.Name, err)
	}
	ports := slices.Clone(want.Spec.Ports)
	for i := range ports {
		// A nodePort the API server allocated stays: asking for none would allocate another.
		// Where brokerport asks for no nodePorts, they go: the API server keeps any a Service
		// still names, allocateLoadBalancerNodePorts false or not.
		if j := slices.IndexFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ports[i].Name }); ports[i].NodePort == 0 && j >= 0 && !patches.AsksNoNodePorts(want) {
			ports[i].NodePort = svc.Spec.Ports[j].NodePort
		}
	}
	svc.Spec.Ports = ports
	svc.Spec.Selector = want.Spec.Selector
	svc.Spec.Type = want.Spec.Type
	svc.Spec.ExternalTrafficPolicy = want.Spec.ExternalTrafficPolicy
	// nil where brokerport asks for nodePorts: the API server defaults it to true again.
	svc.Spec.AllocateLoadBalancerNodePorts = want.Spec.AllocateLoadBalancerNodePorts
	svc.Labels = want.Labels
	for _, k := range patches.PassedAnnotations(svc) {
		delete(svc.Annotations, k)
	}
	delete(svc.Annotations, patches.AnnotationServiceAnnotations)
	delete(svc.Annotations, patches.AnnotationAllocateLoadBalancerNodePorts)
	if svc.Annotations == nil && len(want.Annotations) > 0 {
		svc.Annotations = map[string]string{}
	}
	maps.Copy(svc.Annotations, want.Annotations)
	return r.Client.Update(ctx, svc)
}

// isOurs tells whether an object's labels say brokerport made it for StatefulSet sts: the API
// server lets brokerport write only such objects.
func isOurs(labels map[string]string, sts string) bool {
	return labels[patches.LabelCluster] == sts && labels[patches.LabelManagedBy] == patches.ManagedByValue
}
