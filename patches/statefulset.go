package patches

import (
	"fmt"
	"maps"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// IsExposed tells whether an object's labels opt it in.
func IsExposed(labels map[string]string) bool { return labels[LabelExpose] == ExposeValue }

// MutateStatefulSet applies the opt-in to sts, changing it in place: it validates the
// configuration, assigns the port block once, and copies the opt-in, the cluster label and the
// configuration into the pod template. A StatefulSet that is not (or no longer) opted in has all
// of that taken out of its template again. inUse holds the ports reserved by everything except
// this StatefulSet.
func MutateStatefulSet(sts *appsv1.StatefulSet, inUse PortSet, opts Options) field.ErrorList {
	template := &sts.Spec.Template.ObjectMeta
	if !IsExposed(sts.Labels) {
		delete(template.Labels, LabelExpose)
		delete(template.Labels, LabelCluster)
		maps.DeleteFunc(template.Annotations, func(k, _ string) bool { return IsBrokerportKey(k) })
		return nil
	}

	annotationsPath := field.NewPath("metadata", "annotations")
	cfg, errs := ParseConfig(sts.Annotations, annotationsPath, opts)
	if err := checkHostNetwork(&sts.Spec.Template.Spec, field.NewPath("spec", "template", "spec")); err != nil {
		errs = append(errs, err)
	}
	if msgs := validation.IsValidLabelValue(sts.Name); len(msgs) > 0 {
		errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), sts.Name, "brokerport labels broker pods with the StatefulSet's name, so it must be a valid label value: "+strings.Join(msgs, "; ")))
	}
	if len(errs) > 0 {
		return errs
	}
	if cfg.LoadBalanced() {
		// No node ports: a block assigned under the nodeport strategy is given back, so that
		// switching strategy frees the band for others.
		delete(sts.Annotations, AnnotationPortBase)
		cfg.PortBase = 0
	} else if err := assignPortBlock(sts, &cfg, inUse, opts, annotationsPath.Key(AnnotationPortBase)); err != nil {
		return field.ErrorList{err}
	}
	if err := CheckReplicas(sts, cfg); err != nil {
		return field.ErrorList{err}
	}

	template.Labels = setKey(template.Labels, LabelExpose, ExposeValue)
	template.Labels = setKey(template.Labels, LabelCluster, sts.Name)
	maps.DeleteFunc(template.Annotations, func(k, _ string) bool { return IsBrokerportKey(k) })
	for _, key := range configAnnotations {
		if v, ok := sts.Annotations[key]; ok {
			template.Annotations = setKey(template.Annotations, key, v)
		}
	}
	return nil
}

// OriginPortRangeExhausted marks the error of a StatefulSet refused because no block is free, for
// which the webhook also records a Warning Event.
const OriginPortRangeExhausted = "brokerport/port-range-exhausted"

// assignPortBlock gives the StatefulSet the lowest free block, or checks the one it has: an
// explicit port base is validated, never moved.
func assignPortBlock(sts *appsv1.StatefulSet, cfg *Config, inUse PortSet, opts Options, path *field.Path) *field.Error {
	if cfg.PortBase == 0 {
		base, err := AllocateBlock(inUse, opts.PortRange, cfg.BlockSize())
		if err != nil {
			return field.Forbidden(path, err.Error()).WithOrigin(OriginPortRangeExhausted)
		}
		cfg.PortBase = base
		sts.Annotations = setKey(sts.Annotations, AnnotationPortBase, strconv.Itoa(int(base)))
		return nil
	}
	block := cfg.Block()
	value := sts.Annotations[AnnotationPortBase]
	if block.First < opts.PortRange.First || block.Last > opts.PortRange.Last {
		return field.Invalid(path, value, fmt.Sprintf("the block %s (%d ports) must lie within brokerport's port range %s; remove the annotation to have a free block assigned", block, block.Size(), opts.PortRange))
	}
	if res, taken := inUse.Conflict(block); taken {
		return field.Invalid(path, value, fmt.Sprintf("the block %s overlaps ports %s held by %s; remove the annotation to have a free block assigned", block, res.PortRange, res.Owner))
	}
	return nil
}

// CheckReplicas refuses more brokers than the StatefulSet's block holds, and, under the
// loadbalancer strategy (no block), more load-balancer ports than MaxLoadBalancerPorts.
func CheckReplicas(sts *appsv1.StatefulSet, cfg Config) *field.Error {
	last := lastOrdinal(sts)
	if last >= maxBrokersLimit {
		return field.Forbidden(field.NewPath("spec", "replicas"), fmt.Sprintf(
			"broker ordinal %d (spec.ordinals.start + spec.replicas - 1) is past the %d brokers any port block can hold (%s); lower spec.ordinals.start or spec.replicas",
			last, maxBrokersLimit, AnnotationMaxBrokers))
	}
	if cfg.LoadBalanced() {
		replicas := int64(1)
		if sts.Spec.Replicas != nil {
			replicas = int64(*sts.Spec.Replicas)
		}
		if ports := replicas * int64(len(cfg.Listeners)); ports > MaxLoadBalancerPorts {
			return field.Forbidden(field.NewPath("spec", "replicas"), fmt.Sprintf(
				"%d brokers × %d listeners (%s) ask for %d load-balancer ports; %s=%s allows at most %d per StatefulSet (each is a LoadBalancer Service port, and a nodePort of the cluster's NodePort range unless %s is \"false\"): lower spec.replicas or the number of listeners",
				replicas, len(cfg.Listeners), AnnotationListeners, ports, AnnotationStrategy, StrategyLoadBalancer, MaxLoadBalancerPorts, AnnotationAllocateLoadBalancerNodePorts))
		}
		return nil
	}
	if last >= int64(cfg.MaxBrokers) {
		return field.Forbidden(field.NewPath("spec", "replicas"), fmt.Sprintf(
			"broker ordinal %d would be past the %d brokers the port block %s holds; raise %s and remove %s so that a larger block is assigned (the brokers roll onto new ports)",
			last, cfg.MaxBrokers, cfg.Block(), AnnotationMaxBrokers, AnnotationPortBase))
	}
	return nil
}

// maxBrokersLimit is the largest brokerport.io/max-brokers (ParseConfig's bound).
const maxBrokersLimit = 1000

// lastOrdinal is the highest broker ordinal the StatefulSet asks for, in int64: ordinals.start
// and replicas are each up to MaxInt32, and their sum wrapped around in int32 would pass the
// max-brokers check.
func lastOrdinal(sts *appsv1.StatefulSet) int64 {
	replicas, start := int64(1), int64(0)
	if sts.Spec.Replicas != nil {
		replicas = int64(*sts.Spec.Replicas)
	}
	if sts.Spec.Ordinals != nil {
		start = int64(sts.Spec.Ordinals.Start)
	}
	return start + replicas - 1
}

// StripPod takes brokerport's labels and annotations out of a pod, as a StatefulSet's opt-out
// takes them out of its template.
func StripPod(pod *corev1.Pod) {
	maps.DeleteFunc(pod.Labels, func(k, _ string) bool { return IsBrokerportKey(k) })
	maps.DeleteFunc(pod.Annotations, func(k, _ string) bool { return IsBrokerportKey(k) })
}

// IsBrokerportKey tells whether a label or annotation key is one of brokerport's.
func IsBrokerportKey(k string) bool { return strings.HasPrefix(k, "brokerport.io/") }

// setKey sets m[k] = v, creating the map when needed.
func setKey(m map[string]string, k, v string) map[string]string {
	if m == nil {
		m = map[string]string{}
	}
	m[k] = v
	return m
}
