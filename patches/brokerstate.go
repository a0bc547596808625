package patches

import (
	"fmt"
	"net"
	"strconv"

	corev1 "k8s.io/api/core/v1"
)

// BrokerState is what is true of one broker now: where it can be reached per listener, and
// whether it is exposed as its StatefulSet asks.
type BrokerState struct {
	Pod  string
	Node string
	Host string
	// Ports are the broker's external ports per listener, as its pod was admitted; 0 where
	// nothing is published for that listener.
	Ports []int32
	// Exposed: bound, with an address, listening on the ports the StatefulSet's configuration
	// gives it, and those ports reserved by its Service.
	Exposed bool
	// Reason says why it is not exposed.
	Reason string
	// Transient: it is not exposed only because it is coming, going or rolling (a step of every
	// rollout, not a fault to warn about).
	Transient bool
}

// Address is the broker's host:port for listener l ("" when nothing is published), with an
// IPv6 host in brackets.
func (b BrokerState) Address(l int) string {
	if b.Host == "" || l >= len(b.Ports) || b.Ports[l] == 0 {
		return ""
	}
	return net.JoinHostPort(b.Host, strconv.Itoa(int(b.Ports[l])))
}

// BrokerFacts is what the controller knows of one broker: its pod (nil when there is none), the
// pod's node (nil when unknown) and why its Service cannot hold its ports ("" when it can).
type BrokerFacts struct {
	Pod            *corev1.Pod
	Node           *corev1.Node
	ServiceProblem string
	// LoadBalancer is the broker's LoadBalancer Service (the loadbalancer strategy only).
	LoadBalancer LoadBalancerFacts
}

// ObserveBroker decides broker ordinal's state from trusted facts only: the StatefulSet's
// configuration, the pod's spec as admitted (its node and hostPorts cannot change afterwards) and
// the node. The pod's annotations, which anyone who can edit the pod can change, are not read.
func ObserveBroker(cfg Config, cluster string, ordinal int, facts BrokerFacts) BrokerState {
	state := BrokerState{Pod: fmt.Sprintf("%s-%d", cluster, ordinal)}
	pod := facts.Pod
	switch {
	case pod == nil:
		state.Reason, state.Transient = "no pod yet", true
		return state
	case pod.DeletionTimestamp != nil:
		state.Reason, state.Transient = "terminating", true
		return state
	case pod.Spec.NodeName == "":
		state.Reason, state.Transient = "not scheduled to a node yet", true
		return state
	case facts.Node == nil:
		state.Reason = fmt.Sprintf("node %s is not known", pod.Spec.NodeName)
		return state
	}
	state.Node = pod.Spec.NodeName
	if cfg.LoadBalanced() {
		return observeLoadBalanced(cfg, ordinal, facts, state)
	}
	addr, err := SelectAddress(facts.Node, cfg)
	if err != nil {
		state.Reason = err.Error()
		return state
	}
	state.Host = addr.Host

	state.Ports = make([]int32, len(cfg.Listeners))
	var moved, missing []string
	for l, listener := range cfg.Listeners {
		port := admittedHostPort(pod, listener.ContainerPort)
		switch want := cfg.Port(ordinal, l); {
		case port == 0:
			missing = append(missing, listener.Name)
			continue
		case port != want:
			moved = append(moved, fmt.Sprintf("%s %d (now %d)", listener.Name, port, want))
		}
		state.Ports[l] = port
	}
	switch {
	case facts.ServiceProblem != "":
		// Another Service holds its ports: node:port may reach that Service's backends, so
		// nothing of this broker is published.
		state.Ports = make([]int32, len(cfg.Listeners))
		state.Reason = facts.ServiceProblem
	case len(missing) == len(cfg.Listeners):
		// Admitted for the loadbalancer strategy: it is on no node port, and the node's address
		// is not what it advertises.
		state.Host = ""
		state.Reason, state.Transient = "it listens on no node port (a pod of the loadbalancer strategy) until it restarts", true
	case len(missing) > 0:
		state.Reason, state.Transient = fmt.Sprintf("its pod was created before listeners %v were configured: it is exposed on them once it restarts", missing), true
	case len(moved) > 0:
		state.Reason, state.Transient = fmt.Sprintf("it listens on the ports of an earlier configuration (%v) until it restarts", moved), true
	default:
		state.Exposed = true
	}
	return state
}

// CertificateFacts is what the controller knows of a broker's certificate (a tls-issuer only).
type CertificateFacts struct {
	Name string
	// Named: the Certificate asks for the broker's current host; Issued: cert-manager has issued
	// what it asks for.
	Named, Issued bool
	// Overdue: the Certificate has waited for its issuer longer than an issuer takes.
	Overdue bool
	// Problem says why there is no Certificate to wait for.
	Problem string
}

// WithCertificate is an exposed broker's state once its certificate is known: with a tls-issuer,
// a broker is reachable only once its certificate names its host (until then its gate holds it).
func WithCertificate(state BrokerState, cfg Config, cert CertificateFacts) BrokerState {
	if cfg.TLSIssuer == nil || !state.Exposed {
		return state
	}
	switch {
	case cert.Problem != "":
		state.Reason = cert.Problem
	case !cert.Named || !cert.Issued:
		state.Reason, state.Transient = fmt.Sprintf("waiting for cert-manager to issue Certificate %s naming %s", cert.Name, state.Host), !cert.Overdue
		if cert.Overdue {
			state.Reason += ": is cert-manager running, and is the issuer ready? (kubectl describe certificate " + cert.Name + ")"
		}
	default:
		return state
	}
	state.Exposed = false
	state.Ports = make([]int32, len(cfg.Listeners))
	return state
}

// admittedHostPort is the hostPort a broker pod was admitted with for a listener's containerPort,
// 0 when there is none.
func admittedHostPort(pod *corev1.Pod, containerPort int32) int32 {
	for _, c := range pod.Spec.Containers {
		if i := tcpPortIndex(c.Ports, containerPort); i >= 0 && c.Ports[i].HostPort != 0 {
			return c.Ports[i].HostPort
		}
	}
	return 0
}
