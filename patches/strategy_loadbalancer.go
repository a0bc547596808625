package patches

import (
	"encoding/json"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"
)

// The loadbalancer strategy: each broker gets a LoadBalancer Service of its own (the usual way
// out on managed clouds, whose nodes have no public address), and advertises the address the
// load balancer is given. No hostPort, no port block, no one-broker-per-node rule: the Service
// routes to the pod wherever it runs. The address is not known when the pod is bound, so the
// gate holds the broker back until the controller has written it.

// maxServiceAnnotations bounds brokerport.io/service-annotations: cloud load-balancer settings
// are a few short keys, and every broker's Service carries a copy.
const maxServiceAnnotations = 4096

// MaxLoadBalancerPorts bounds replicas × listeners under the loadbalancer strategy: each is a
// port of a LoadBalancer Service, and (unless the Services ask for none) a nodePort the API server
// allocates from its NodePort range, shared by the whole cluster. The default range holds 2,768
// ports, and when its upper part is full the API server allocates from the static band
// brokerport's blocks come from. 256 is under a tenth of that range, and room for 64 brokers of
// 4 listeners or 256 of one; no port block bounds this strategy, so this does.
const MaxLoadBalancerPorts = 256

// AnnotationAllocateLoadBalancerNodePorts (loadbalancer), "false", has the broker Services ask
// for no nodePorts (allocateLoadBalancerNodePorts: false): right for a load balancer that routes
// to the pods themselves (MetalLB, the AWS Load Balancer Controller in ip mode, Cilium), wrong for
// one that routes to nodePorts (most cloud providers' defaults), so the StatefulSet says which.
// Read from the StatefulSet only: the pods need nothing of it. Also recorded on each Service it
// shapes, where brokerport's cache sees it (the cache keeps no Service's allocation field).
const AnnotationAllocateLoadBalancerNodePorts = "brokerport.io/allocate-load-balancer-node-ports"

// parseStrategy reads the strategy and the annotations that only the loadbalancer strategy reads;
// each is reported at most once, for what is wrong with it first. get gives an annotation's
// value (none past its size bound).
func parseStrategy(get func(key string) (string, bool), cfg *Config, invalid func(key, value, detail string)) {
	known := true
	if v, ok := get(AnnotationStrategy); ok {
		switch s := Strategy(v); s {
		case StrategyNodePort, StrategyLoadBalancer:
			cfg.Strategy = s
		default:
			known = false
			invalid(AnnotationStrategy, v, `accepted values: "nodeport" (the default: a port on the broker's node), "loadbalancer" (a LoadBalancer Service per broker)`)
		}
	}
	if cfg.LoadBalanced() {
		cfg.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	}
	// lbOnly says, of a valid value, that the strategy does not read it.
	lbOnly := func(key, v string) bool {
		if known && !cfg.LoadBalanced() {
			invalid(key, v, fmt.Sprintf("applies to %s=%s only; remove it or set the strategy", AnnotationStrategy, StrategyLoadBalancer))
			return false
		}
		return true
	}
	if v, ok := get(AnnotationExternalTrafficPolicy); ok {
		switch p := corev1.ServiceExternalTrafficPolicy(v); p {
		case corev1.ServiceExternalTrafficPolicyLocal, corev1.ServiceExternalTrafficPolicyCluster:
			if lbOnly(AnnotationExternalTrafficPolicy, v) {
				cfg.ExternalTrafficPolicy = p
			}
		default:
			invalid(AnnotationExternalTrafficPolicy, v, `accepted values: "Local" (the default: no second hop, the client's address kept), "Cluster"`)
		}
	}
	if v, ok := get(AnnotationServiceAnnotations); ok {
		parsed, err := parseServiceAnnotations(v)
		if err != nil {
			invalid(AnnotationServiceAnnotations, v, err.Error())
		} else if lbOnly(AnnotationServiceAnnotations, v) {
			cfg.ServiceAnnotations = parsed
		}
	}
	if v, ok := get(AnnotationAllocateLoadBalancerNodePorts); ok {
		switch v {
		case "true", "false":
			if lbOnly(AnnotationAllocateLoadBalancerNodePorts, v) {
				cfg.NoNodePorts = v == "false"
			}
		default:
			invalid(AnnotationAllocateLoadBalancerNodePorts, v, `accepted values: "true" (the default: the load balancer routes to nodePorts), "false" (it routes to the pods: MetalLB, the AWS Load Balancer Controller in ip mode)`)
		}
	}
}

// parseServiceAnnotations reads a value within maxServiceAnnotations (ParseConfig's bound).
func parseServiceAnnotations(v string) (map[string]string, error) {
	var m map[string]string
	if err := json.Unmarshal([]byte(v), &m); err != nil {
		return nil, fmt.Errorf(`must be a JSON object of strings, e.g. {"service.beta.kubernetes.io/aws-load-balancer-type":"nlb"}`)
	}
	for k := range m {
		if IsBrokerportKey(k) {
			return nil, fmt.Errorf("key %q: brokerport.io/ annotations of a broker Service are brokerport's", clipPart(k))
		}
	}
	if errs := apivalidation.ValidateAnnotations(m, field.NewPath("")); len(errs) > 0 {
		return nil, fmt.Errorf("not valid Service annotations: %s", clip(errs.ToAggregate().Error(), 2*maxEchoed))
	}
	return m, nil
}

// loadBalancerSpec makes svc (BrokerService's, with the StatefulSet's labels, owner and selector)
// the broker's LoadBalancer Service: one port per listener on the listener's containerPort, the
// nodePorts left to the API server (outside brokerport's band, which it leaves alone), and the
// passed-through annotations, recorded so that a key removed later is removed from the Service.
func loadBalancerSpec(svc *corev1.Service, cfg Config) {
	svc.Spec.Type = corev1.ServiceTypeLoadBalancer
	svc.Spec.ExternalTrafficPolicy = cfg.ExternalTrafficPolicy
	for i := range svc.Spec.Ports {
		svc.Spec.Ports[i].NodePort = 0
	}
	if len(cfg.ServiceAnnotations) > 0 {
		svc.Annotations = make(map[string]string, len(cfg.ServiceAnnotations)+2)
		for k, v := range cfg.ServiceAnnotations {
			svc.Annotations[k] = v
		}
		recorded, _ := json.Marshal(cfg.ServiceAnnotations) // keys sorted: the same map, the same text
		svc.Annotations[AnnotationServiceAnnotations] = string(recorded)
	}
	if cfg.NoNodePorts {
		svc.Spec.AllocateLoadBalancerNodePorts = ptr.To(false)
		svc.Annotations = setKey(svc.Annotations, AnnotationAllocateLoadBalancerNodePorts, "false")
	}
}

// AsksNoNodePorts tells whether a broker Service was made to hold no nodePorts, as recorded on
// it (its allocateLoadBalancerNodePorts field is not in brokerport's cache).
func AsksNoNodePorts(svc *corev1.Service) bool {
	return svc.Annotations[AnnotationAllocateLoadBalancerNodePorts] == "false"
}

// BandNodePorts are the ports of a Service whose nodePort lies in brokerport's band: for a
// broker's LoadBalancer Service, ones the API server allocated there because the rest of its
// NodePort range was full (the Service webhook sees none at creation, before allocation).
func BandNodePorts(svc *corev1.Service, band PortRange) []corev1.ServicePort {
	var out []corev1.ServicePort
	for _, p := range svc.Spec.Ports {
		if p.NodePort >= band.First && p.NodePort <= band.Last {
			out = append(out, p)
		}
	}
	return out
}

// PassedAnnotations are the annotation keys brokerport passed to a broker Service, as recorded
// on it.
func PassedAnnotations(svc *corev1.Service) []string {
	var m map[string]string
	if json.Unmarshal([]byte(svc.Annotations[AnnotationServiceAnnotations]), &m) != nil {
		return nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}

// IngressHost is the address a load balancer gave a Service: its first ingress IP of the family
// (brokerport.io/ip-family; any when unset) or hostname, "" while it has none.
func IngressHost(svc *corev1.Service, family IPFamily) string {
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if in.IP != "" && family.accepts(in.IP) {
			return in.IP
		}
		if in.IP == "" && in.Hostname != "" {
			return in.Hostname
		}
	}
	return ""
}

// IsLoadBalancerOf tells whether a Service is brokerport's LoadBalancer Service of a broker: only
// its address is one a broker may advertise (a user's Service of that name is not).
func IsLoadBalancerOf(svc *corev1.Service) bool {
	return svc != nil && svc.Spec.Type == corev1.ServiceTypeLoadBalancer && IsExposed(svc.Labels) &&
		svc.Labels[LabelManagedBy] == ManagedByValue
}

// LoadBalancerFacts is what the controller knows of a broker's LoadBalancer Service.
type LoadBalancerFacts struct {
	Service string
	// Ingress is the Service's address ("" while the load balancer has given none).
	Ingress string
	// Overdue: the Service has waited for an address longer than a load balancer takes.
	Overdue bool
}

// observeLoadBalanced is ObserveBroker for a bound broker of the loadbalancer strategy: exposed
// once its pod was admitted for it (no hostPort) and its Service has an address.
func observeLoadBalanced(cfg Config, ordinal int, facts BrokerFacts, state BrokerState) BrokerState {
	pod := facts.Pod
	for _, l := range cfg.Listeners {
		if admittedHostPort(pod, l.ContainerPort) != 0 {
			state.Reason, state.Transient = "it still listens on a node port of the nodeport strategy until it restarts", true
			return state
		}
	}
	lb := facts.LoadBalancer
	switch {
	case facts.ServiceProblem != "":
		state.Reason = facts.ServiceProblem
		return state
	case lb.Ingress == "":
		state.Reason = fmt.Sprintf("Service %s has no load-balancer address yet", lb.Service)
		if lb.Overdue {
			state.Reason += ": is a load-balancer controller running, and does it serve this Service's type and annotations?"
		}
		state.Transient = !lb.Overdue
		return state
	}
	state.Host = lb.Ingress
	state.Ports = make([]int32, len(cfg.Listeners))
	for l := range cfg.Listeners {
		state.Ports[l] = cfg.Port(ordinal, l)
	}
	state.Exposed = true
	return state
}

// LoadBalancerAddress is what a broker of the loadbalancer strategy advertises, as the address
// annotations carry it: the ingress as its host, and its pod's node and zone.
func LoadBalancerAddress(ingress string, node *corev1.Node) NodeAddress {
	addr := NodeAddress{Host: ingress}
	if node != nil {
		addr.Node = node.Name
		addr.Zone = node.Labels[LabelZone]
	}
	return addr
}

// mutateLoadBalancerService is MutateService for the loadbalancer strategy: the type and traffic
// policy the StatefulSet asks for, each port named after a listener. Its nodePorts are the API
// server's to allocate.
func mutateLoadBalancerService(svc *corev1.Service, cfg Config) field.ErrorList {
	ports := field.NewPath("spec", "ports")
	for i, p := range svc.Spec.Ports {
		if !slices.ContainsFunc(cfg.Listeners, func(l Listener) bool { return l.Name == p.Name }) {
			return field.ErrorList{field.NotSupported(ports.Index(i).Child("name"), p.Name, listenerNames(cfg))}
		}
	}
	svc.Spec.Type = corev1.ServiceTypeLoadBalancer
	svc.Spec.ExternalTrafficPolicy = cfg.ExternalTrafficPolicy
	if cfg.NoNodePorts {
		svc.Spec.AllocateLoadBalancerNodePorts = ptr.To(false)
	}
	return nil
}
