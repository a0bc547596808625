package patches

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// BrokerServiceName is the name of broker ordinal's NodePort Service: "<sts>-<i>-external", or,
// when that is longer than a Service name may be (63), the StatefulSet's name cut short and a
// hash of the full name in its place, so that two long names never meet.
func BrokerServiceName(cluster string, ordinal int) string {
	name := fmt.Sprintf("%s-%d-external", cluster, ordinal)
	if len(name) <= validation.DNS1035LabelMaxLength {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	suffix := fmt.Sprintf("-%s-%d-external", hex.EncodeToString(sum[:4]), ordinal)
	return cluster[:validation.DNS1035LabelMaxLength-len(suffix)] + suffix
}

// BrokerServiceOrdinal reads the ordinal back from a name BrokerServiceName made.
func BrokerServiceOrdinal(name, cluster string) (int, bool) {
	rest, ok := strings.CutSuffix(name, "-external")
	if !ok {
		return 0, false
	}
	digits := rest[strings.LastIndexByte(rest, '-')+1:]
	ordinal, ok := OrdinalOf("x-"+digits, "x")
	return ordinal, ok && BrokerServiceName(cluster, ordinal) == name
}

// BrokerService is the Service that reserves broker ordinal's external ports cluster-wide and
// routes node:port to it, as MutateService would make it; for the loadbalancer strategy, the
// broker's LoadBalancer Service.
func BrokerService(sts *appsv1.StatefulSet, cfg Config, ordinal int) *corev1.Service {
	svc := &corev1.Service{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      BrokerServiceName(sts.Name, ordinal),
			Namespace: sts.Namespace,
			Labels:    map[string]string{LabelExpose: ExposeValue, LabelCluster: sts.Name, LabelManagedBy: ManagedByValue},
			OwnerReferences: []metav1.OwnerReference{
				*metav1.NewControllerRef(sts, appsv1.SchemeGroupVersion.WithKind("StatefulSet")),
			},
		},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{labelPodName: fmt.Sprintf("%s-%d", sts.Name, ordinal)},
			// The broker advertises itself before it is ready (Kafka clients need the address to
			// form the cluster), so its Service must route to it before it is ready too.
			PublishNotReadyAddresses: true,
			Type:                     corev1.ServiceTypeNodePort,
			ExternalTrafficPolicy:    corev1.ServiceExternalTrafficPolicyLocal,
		},
	}
	for l, listener := range cfg.Listeners {
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{
			Name:       listener.Name,
			Protocol:   corev1.ProtocolTCP,
			Port:       cfg.Port(ordinal, l),
			TargetPort: intstr.FromInt32(listener.ContainerPort),
			NodePort:   cfg.Port(ordinal, l),
		})
	}
	if cfg.LoadBalanced() {
		loadBalancerSpec(svc, cfg)
	}
	return svc
}

// ServiceBroker tells which StatefulSet and ordinal an opted-in Service exposes: its cluster label
// names the StatefulSet and its selector the broker pod. ok is false for a Service that is not
// opted in.
func ServiceBroker(svc *corev1.Service) (cluster string, ordinal int, ok bool, err *field.Error) {
	if !IsExposed(svc.Labels) {
		return "", 0, false, nil
	}
	cluster = svc.Labels[LabelCluster]
	if cluster == "" {
		return "", 0, true, field.Required(field.NewPath("metadata", "labels").Key(LabelCluster), "an exposed Service names its StatefulSet in this label")
	}
	podName := svc.Spec.Selector[labelPodName]
	ordinal, valid := OrdinalOf(podName, cluster)
	if !valid {
		return "", 0, true, field.Invalid(field.NewPath("spec", "selector").Key(labelPodName), podName, fmt.Sprintf("an exposed Service selects one broker of StatefulSet %q: %s-<ordinal>", cluster, cluster))
	}
	return cluster, ordinal, true, nil
}

// MutateService makes an opted-in Service a NodePort Service on its broker's external ports:
// each port, named after a listener, gets that listener's port as its nodePort. sts is the
// StatefulSet the Service exposes (already opted in, with its port block).
func MutateService(svc *corev1.Service, sts *appsv1.StatefulSet, opts Options) field.ErrorList {
	_, ordinal, ok, ferr := ServiceBroker(svc)
	if !ok {
		return nil
	}
	if ferr != nil {
		return field.ErrorList{ferr}
	}
	stsAnnotations := field.NewPath("metadata", "annotations")
	cfg, errs := ParseConfig(sts.Annotations, stsAnnotations, opts)
	if len(errs) > 0 {
		return field.ErrorList{field.Invalid(field.NewPath("metadata", "labels").Key(LabelCluster), sts.Name, "the StatefulSet's configuration is invalid: "+errs.ToAggregate().Error())}
	}
	if cfg.LoadBalanced() {
		return mutateLoadBalancerService(svc, cfg)
	}
	if cfg.PortBase == 0 {
		return field.ErrorList{field.Invalid(field.NewPath("metadata", "labels").Key(LabelCluster), sts.Name, "the StatefulSet has no port block yet; label the StatefulSet first")}
	}
	if ordinal >= int(cfg.MaxBrokers) {
		return field.ErrorList{field.Forbidden(field.NewPath("spec", "selector").Key(labelPodName), fmt.Sprintf("broker ordinal %d is past the %d brokers of StatefulSet %q's port block", ordinal, cfg.MaxBrokers, sts.Name))}
	}

	ports := field.NewPath("spec", "ports")
	for i := range svc.Spec.Ports {
		p := &svc.Spec.Ports[i]
		l := slices.IndexFunc(cfg.Listeners, func(l Listener) bool { return l.Name == p.Name })
		if l < 0 {
			return field.ErrorList{field.NotSupported(ports.Index(i).Child("name"), p.Name, listenerNames(cfg))}
		}
		want := cfg.Port(ordinal, l)
		if p.NodePort != 0 && p.NodePort != want {
			return field.ErrorList{field.Invalid(ports.Index(i).Child("nodePort"), p.NodePort, fmt.Sprintf("broker %d's external port for listener %q is %d; remove the explicit nodePort", ordinal, p.Name, want))}
		}
		p.NodePort = want
	}
	svc.Spec.Type = corev1.ServiceTypeNodePort
	svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	return nil
}

func listenerNames(cfg Config) []string {
	names := make([]string, len(cfg.Listeners))
	for i, l := range cfg.Listeners {
		names[i] = l.Name
	}
	return names
}

// CheckNewBandPorts refuses a broker Service that takes a nodePort of brokerport's band it did
// not hold (old is nil on create), where there is no block to check it against: its StatefulSet
// is no longer opted in, or uses the loadbalancer strategy (whose Services take none). The API
// server's band policy lets broker Services through for the Service webhook to check. why says
// which.
func CheckNewBandPorts(old, svc *corev1.Service, band PortRange, why string) field.ErrorList {
	held := map[int32]bool{}
	if old != nil {
		for _, p := range old.Spec.Ports {
			held[p.NodePort] = true
		}
	}
	var errs field.ErrorList
	for i, p := range svc.Spec.Ports {
		if p.NodePort >= band.First && p.NodePort <= band.Last && !held[p.NodePort] {
			errs = append(errs, field.Forbidden(field.NewPath("spec", "ports").Index(i).Child("nodePort"),
				fmt.Sprintf("%d is in brokerport's port band %s, and %s: this Service keeps only the nodePorts it held", p.NodePort, band, why)))
		}
	}
	return errs
}
