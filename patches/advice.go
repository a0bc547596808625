package patches

import (
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// imageAdvice maps a broker image to what makes it advertise brokerport's address, first match
// wins.
var imageAdvice = []struct {
	contains []string
	fix      string
}{
	{[]string{"redpandadata/redpanda", "docker.redpanda.com/", "vectorized/redpanda"}, `it looks like Redpanda: with the Redpanda chart or operator, annotate the StatefulSet brokerport.io/flavor=redpanda and set the chart's external.service.enabled=false (README, "Redpanda chart")`},
	{[]string{"bitnami/kafka"}, `it looks like Bitnami Kafka: annotate the StatefulSet brokerport.io/flavor=bitnami if it is configured by KAFKA_CFG_* variables; the Bitnami chart writes server.properties instead (README, "Bitnami chart")`},
	{[]string{"apache/kafka", "confluentinc/cp-kafka", "confluentinc/cp-server"}, `it looks like Apache Kafka: annotate the StatefulSet brokerport.io/flavor=kafka`},
}

// AdviseStatefulSet says why an opted-in StatefulSet would be exposed without being reachable:
// brokerport gives each broker a node port, but unless the broker advertises
// <node address>:<that port> a client that bootstraps is sent to addresses it cannot reach.
// Nothing to say ("") when a flavor or advertise-env is set or when the broker container or one
// of its init containers refers to a BROKERPORT_* variable (a script or a listener setting of
// the user's).
//
// Before that, its first broker is mutated as the pod webhook will mutate it: what would refuse
// the brokers (a port name taken, a flavor's variable missing) is said now, while the user is
// looking, rather than in the StatefulSet's events once the rollout is stuck.
func AdviseStatefulSet(sts *appsv1.StatefulSet, cfg Config, opts Options) string {
	if !IsExposed(sts.Labels) || !cfg.Configured() {
		return ""
	}
	broker0 := &corev1.Pod{ObjectMeta: *sts.Spec.Template.ObjectMeta.DeepCopy(), Spec: *sts.Spec.Template.Spec.DeepCopy()}
	broker0.Name = sts.Name + "-0"
	broker0.Spec.NodeName = ""
	if !cfg.LoadBalanced() {
		opts.GateImage = "" // the gate is no part of what is advised on, except where it is required
	} else if opts.GateImage == "" {
		opts.GateImage = "gate"
	}
	if errs := MutatePod(broker0, nil, opts); len(errs) > 0 {
		return fmt.Sprintf("StatefulSet %s: brokerport will refuse its brokers as they are created: %v", sts.Name, errs.ToAggregate())
	}
	if cfg.Flavor != FlavorNone || cfg.AdvertiseEnv != "" {
		return ""
	}
	pod := &corev1.Pod{Spec: sts.Spec.Template.Spec}
	ci, err := brokerContainer(pod, cfg)
	if err != nil {
		return ""
	}
	broker := pod.Spec.Containers[ci]
	for _, c := range append([]corev1.Container{broker}, pod.Spec.InitContainers...) {
		if refersToBrokerport(c) {
			return ""
		}
	}
	fix := fmt.Sprintf("make the broker advertise $(%s) on the listener of containerPort %d (see %s, %s)", addressVar(cfg.Listeners[0]), cfg.Listeners[0].ContainerPort, AnnotationFlavor, AnnotationAdvertiseEnv)
	advice := imageAdvice
	if advertised := scriptSetsAdvertised(broker); advertised != "" {
		// A flavor appends to the env variable, which the script overrides: the way out is the
		// script, whatever the image.
		fix, advice = "the "+scriptRecipe(cfg, advertised), nil
	}
	for _, a := range advice {
		for _, s := range a.contains {
			if strings.Contains(broker.Image, s) {
				fix = a.fix
			}
		}
		if fix == a.fix {
			break
		}
	}
	how := "on node ports"
	if cfg.LoadBalanced() {
		how = "through load balancers"
	}
	return fmt.Sprintf("StatefulSet %s: brokerport exposes container %q %s, but nothing in it or its init containers refers to a BROKERPORT_* variable, so its brokers advertise addresses clients outside the cluster cannot reach; %s",
		sts.Name, broker.Name, how, fix)
}

// refersToBrokerport tells whether a container's command, args or env values use one of
// brokerport's variables. brokerport's own variables (valueFrom or BROKERPORT_*-named) do not
// count.
func refersToBrokerport(c corev1.Container) bool {
	for _, s := range append(append([]string{}, c.Command...), c.Args...) {
		if strings.Contains(s, EnvPrefix) {
			return true
		}
	}
	for _, e := range c.Env {
		if !strings.HasPrefix(e.Name, EnvPrefix) && strings.Contains(e.Value, EnvPrefix) {
			return true
		}
	}
	return false
}
