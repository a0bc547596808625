package probe

import (
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/brokerport/brokerport/patches"
)

// What the probe dials, and why nothing else (issue 27). Its targets are handed over by the
// controller each time it publishes a StatefulSet (Prober.Track): the addresses it computed from
// the StatefulSet's configuration, its brokers' pods as admitted, their nodes and brokerport's own
// LoadBalancer Services: exactly what it publishes. The probe reads no ConfigMap: anyone who can
// write one named <sts>-external (or edit brokerport's) would otherwise have brokerport dial any
// host:port from inside the cluster. Of those addresses, it dials only the ones whose host and
// port brokerport chose:
//   - the host is one of the broker's node's own addresses (as the kubelet reports them), or the
//     ingress of brokerport's LoadBalancer Service for the broker (the loadbalancer strategy);
//     a host a StatefulSet's brokerport.io/host-template makes is the tenant's choice, literal
//     text included, and is dialed only when an admin allows it (serve --probe-host-templates);
//   - the port is the one the StatefulSet's block gives the broker on that listener (a pod's
//     hostPort is the pod's: a pod brokerport did not admit may carry any).
// Every other broker is published all the same, and its lines say why it was not probed.

// Bounds: a round's work and memory are linear in the brokers, and capped.
const (
	// MaxBrokersPerStatefulSet bounds the brokers of one StatefulSet the probe dials: admission
	// allows up to 1000 (brokerport.io/max-brokers), and no StatefulSet should cost the probe of
	// every other one. The brokers past it are published, their lines say they were not probed.
	MaxBrokersPerStatefulSet = 256
	// MaxAddressesPerRound bounds the addresses one round dials, every StatefulSet together:
	// with the default 8 at a time, a few milliseconds each, a round of healthy brokers stays
	// well inside its period. Those past it are not probed this round, and go first in the next.
	MaxAddressesPerRound = 2048
)

// targetSet is what the probe dials for one StatefulSet, as the controller last computed it.
// It is never changed once built (Track replaces it whole), so rounds read it without a lock.
type targetSet struct {
	// sts carries the StatefulSet's namespace, name and UID only: what Events are recorded on.
	sts       *appsv1.StatefulSet
	listeners []listenerTargets // in the StatefulSet's order: the Kafka API first
	brokers   []brokerTargets   // in ordinal order
	// own are the listeners' peers: every address computed for the StatefulSet.
	own [][]string
}

type listenerTargets struct {
	name string
	mode Mode
	// peers are every address computed for the StatefulSet's brokers on this listener: what tells
	// which entry of a Metadata response is the dialed broker's, and the only addresses a verdict
	// may name. One list per listener, shared by all the brokers: memory linear in brokers.
	peers []string
}

type brokerTargets struct {
	pod string
	// addrs are its addresses per listener, as published ("" where nothing is).
	addrs []string
	// skip says why the probe does not dial it ("" when it does); its lines say "not probed: <skip>".
	skip string
}

// Why a published broker is not dialed.
var (
	skipPastCap    = fmt.Sprintf("past the %d brokers of a StatefulSet the probe dials", MaxBrokersPerStatefulSet)
	skipTemplate   = "host from " + patches.AnnotationHostTemplate + ": not dialed from inside the cluster unless brokerport serves with --probe-host-templates (check --from-here dials from your machine)"
	skipNotNode    = "its host is not an address of its node"
	skipOtherPorts = "it is on ports its StatefulSet no longer gives it until it restarts"
)

// newTargetSet computes what the probe dials for a StatefulSet from what the controller publishes
// it from: its configuration, the brokers' states (patches.ObserveBroker) and their nodes.
// hostTemplates allows hosts made by a host template.
func newTargetSet(sts *appsv1.StatefulSet, cfg patches.Config, states []patches.BrokerState, nodes map[string]*corev1.Node, hostTemplates bool) *targetSet {
	set := &targetSet{
		sts:       &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: sts.Namespace, Name: sts.Name, UID: sts.UID}},
		listeners: make([]listenerTargets, len(cfg.Listeners)),
		brokers:   make([]brokerTargets, 0, len(states)),
	}
	for l, listener := range cfg.Listeners {
		set.listeners[l] = listenerTargets{name: listener.Name, mode: ModeOf(l, cfg.SecurityProtocol), peers: make([]string, 0, len(states))}
	}
	for i, s := range states {
		b := brokerTargets{pod: s.Pod, addrs: make([]string, len(cfg.Listeners))}
		published := false
		for l := range cfg.Listeners {
			if a := s.Address(l); a != "" {
				b.addrs[l], published = a, true
				set.listeners[l].peers = append(set.listeners[l].peers, a)
			}
		}
		if !published {
			continue // nothing published: nothing to say either
		}
		switch {
		case i >= MaxBrokersPerStatefulSet:
			b.skip = skipPastCap
		case !portsOfBlock(cfg, sts.Name, s):
			b.skip = skipOtherPorts
		default:
			b.skip = hostOrigin(cfg, s, nodes[s.Node], hostTemplates)
		}
		set.brokers = append(set.brokers, b)
	}
	set.own = make([][]string, len(set.listeners))
	for l := range set.listeners {
		set.own[l] = set.listeners[l].peers
	}
	return set
}

// portsOfBlock tells whether every port published for a broker is the one its StatefulSet's
// configuration gives it on that listener.
func portsOfBlock(cfg patches.Config, cluster string, s patches.BrokerState) bool {
	ordinal, ok := patches.OrdinalOf(s.Pod, cluster)
	if !ok {
		return false
	}
	for l, port := range s.Ports {
		if port != 0 && port != cfg.Port(ordinal, l) {
			return false
		}
	}
	return true
}

// hostOrigin is why a broker's host is not dialed, "" when it is: brokerport's load balancer's
// address (the loadbalancer strategy sets the host from nothing else) or an address of its node.
func hostOrigin(cfg patches.Config, s patches.BrokerState, node *corev1.Node, hostTemplates bool) string {
	if cfg.LoadBalanced() {
		return ""
	}
	if node != nil {
		for _, a := range node.Status.Addresses {
			if strings.EqualFold(a.Address, s.Host) {
				return ""
			}
		}
	}
	switch {
	case cfg.HostTemplate == nil:
		return skipNotNode
	case hostTemplates:
		return ""
	}
	return skipTemplate
}
