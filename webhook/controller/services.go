package controller

import (
	"context"
	"fmt"
	"slices"

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
func (r *Reconciler) services(ctx context.Context, sts *appsv1.StatefulSet, cfg patches.Config, first, last int, brokers map[int]*corev1.Pod) (map[int]string, error) {
	var all corev1.ServiceList
	if err := r.Client.List(ctx, &all); err != nil {
		return nil, fmt.Errorf("listing Services: %w", err)
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
			if want := wanted[svc.Name]; want != nil && !samePorts(svc, want) {
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
			err = r.updateService(ctx, wanted[step.Name])
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
	return problems, nil
}

// nodePorts are a Service's nodePorts in the order of its ports.
func nodePorts(svc *corev1.Service) []int32 {
	ports := make([]int32, 0, len(svc.Spec.Ports))
	for _, p := range svc.Spec.Ports {
		ports = append(ports, p.NodePort)
	}
	return ports
}

// samePorts tells whether a Service's ports are the wanted ones: names, ports, targetPorts.
func samePorts(svc, want *corev1.Service) bool {
	return slices.EqualFunc(svc.Spec.Ports, want.Spec.Ports, func(a, b corev1.ServicePort) bool {
		return a.Name == b.Name && a.Port == b.Port && apiequality.Semantic.DeepEqual(a.TargetPort, b.TargetPort) && a.NodePort == b.NodePort
	})
}

// updateService gives an existing broker Service the wanted ports, selector and labels.
func (r *Reconciler) updateService(ctx context.Context, want *corev1.Service) error {
	svc := &corev1.Service{}
	if err := r.API.Get(ctx, client.ObjectKeyFromObject(want), svc); err != nil {
		return fmt.Errorf("getting Service %s: %w", want.Name, err)
	}
	svc.Spec.Ports = want.Spec.Ports
	svc.Spec.Selector = want.Spec.Selector
	svc.Spec.Type = want.Spec.Type
	svc.Labels = want.Labels
	return r.Client.Update(ctx, svc)
}

// isOurs tells whether an object's labels say brokerport made it for StatefulSet sts: the API
// server lets brokerport write only such objects.
func isOurs(labels map[string]string, sts string) bool {
	return labels[patches.LabelCluster] == sts && labels[patches.LabelManagedBy] == patches.ManagedByValue
}
