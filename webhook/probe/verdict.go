package probe

import (
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/brokerport/brokerport/patches"
)

// This file is the probe's pure half: what was published, what an answer means, what to say.
// The I/O (dialing, Kafka requests, the loop, metrics, Events) is in kafka.go and probe.go; what
// the in-cluster probe dials, computed as purely, in targets.go.

// Published is what brokerport published for one StatefulSet, read back from its ConfigMap by
// `brokerport check`, which dials from the user's machine. The in-cluster probe reads no
// ConfigMap: the controller hands it what it computed (targets.go).
type Published struct {
	// Listeners in the order they are probed: the Kafka listener (the one whose
	// <listener>.bootstrap.servers is the ConfigMap's bootstrap.servers) first, then by name.
	Listeners []string
	Brokers   []Broker // by pod name
}

// Broker is one broker's published addresses.
type Broker struct {
	Pod       string
	Addresses map[string]string // listener → host:port
}

// Kafka is the Kafka listener's name, or "" when nothing is published.
func (p Published) Kafka() string {
	if len(p.Listeners) == 0 {
		return ""
	}
	return p.Listeners[0]
}

// All is every published address of every broker, on any listener (a broker's advertised
// address may only be confused with another broker's, so the Kafka listener's are what count).
func (p Published) All(listener string) []string {
	var out []string
	for _, b := range p.Brokers {
		if a := b.Addresses[listener]; a != "" {
			out = append(out, a)
		}
	}
	return out
}

// ParsePublished reads a ConfigMap <sts>-external's data: "<listener>.addresses" holds one
// "<pod> <host:port>" line per broker. Lines it cannot read are skipped: the ConfigMap is
// brokerport's own output.
func ParsePublished(data map[string]string) Published {
	var p Published
	byPod := map[string]*Broker{}
	kafka := ""
	for key, value := range data {
		listener, ok := strings.CutSuffix(key, ".addresses")
		if !ok || listener == "" {
			continue
		}
		if data[listener+".bootstrap.servers"] == data["bootstrap.servers"] && data["bootstrap.servers"] != "" {
			kafka = listener
		}
		p.Listeners = append(p.Listeners, listener)
		for _, line := range strings.Split(value, "\n") {
			pod, addr, ok := strings.Cut(strings.TrimSpace(line), " ")
			if !ok || pod == "" || addr == "" {
				continue
			}
			b := byPod[pod]
			if b == nil {
				b = &Broker{Pod: pod, Addresses: map[string]string{}}
				byPod[pod] = b
			}
			b.Addresses[listener] = addr
		}
	}
	slices.SortFunc(p.Listeners, func(a, b string) int {
		switch {
		case a == kafka:
			return -1
		case b == kafka:
			return 1
		}
		return strings.Compare(a, b)
	})
	for _, b := range byPod {
		p.Brokers = append(p.Brokers, *b)
	}
	slices.SortFunc(p.Brokers, func(a, b Broker) int { return strings.Compare(a.Pod, b.Pod) })
	return p
}

// Mode is how much of a listener the probe checks.
type Mode int

const (
	// TCP: a connection is accepted. HTTP listeners (admin API, HTTP proxy, schema registry)
	// and Kafka listeners behind TLS are checked this way: their paths and credentials are the
	// user's, and a handshake with no certificate would say nothing more.
	TCP Mode = iota
	// KafkaHandshake: TCP, then an ApiVersions request answered (SASL listeners answer it
	// before authentication; Metadata they do not).
	KafkaHandshake
	// KafkaMetadata: KafkaHandshake, then a Metadata request whose broker list must hold the
	// dialed address.
	KafkaMetadata
)

func (m Mode) String() string {
	switch m {
	case KafkaHandshake:
		return "kafka-apiversions"
	case KafkaMetadata:
		return "kafka"
	}
	return "tcp"
}

// ModeOf is how listener index l of a StatefulSet with security protocol securityProtocol is
// probed: the first listener is the Kafka API (DESIGN.md), the others are HTTP.
func ModeOf(l int, securityProtocol string) Mode {
	if l != 0 {
		return TCP
	}
	switch securityProtocol {
	case "", "PLAINTEXT":
		return KafkaMetadata
	case "SASL_PLAINTEXT":
		return KafkaHandshake
	}
	return TCP
}

// Observation is what the I/O saw at one address.
type Observation struct {
	// Err is why the address did not answer (connect, or the Kafka requests); nil when it did.
	Err error
	// Advertised are the brokers of the Metadata response, host:port (KafkaMetadata only).
	Advertised []string
	// Latency is the time to connect (and, for Kafka, to be answered).
	Latency time.Duration
}

// State is a verdict's kind.
type State int

const (
	Reachable State = iota
	Unreachable
	Mismatch
	// NotProbed: the probe did not dial the address, and Reason says why (a host the StatefulSet
	// chose, a cap, a round that ran out of time).
	NotProbed
)

// Verdict is the probe's judgement of one broker's address on one listener.
type Verdict struct {
	State State
	// Reason says why it is unreachable, or not probed.
	Reason string
	// Advertises is what a mismatched broker advertises instead of the dialed address.
	Advertises string
	// later: not probed only because the round ran out (of time, or of its address cap); the
	// broker goes first in the next round, and its last probe's verdict stands meanwhile.
	later bool
}

// String is the verdict as published: "reachable", "unreachable: <reason>",
// "advertises <address>" or "not probed: <reason>".
func (v Verdict) String() string {
	switch v.State {
	case Unreachable:
		return "unreachable: " + v.Reason
	case Mismatch:
		return "advertises " + v.Advertises
	case NotProbed:
		return "not probed: " + v.Reason
	}
	return "reachable"
}

// maxReason bounds a reason: it goes into a ConfigMap line, an Event and a terminal.
const maxReason = 160

// Judge turns an observation at dialed (published for this broker) into a verdict; published is
// every broker's address on the same listener, to tell which advertised entry is this broker's.
func Judge(dialed string, mode Mode, obs Observation, published []string) Verdict {
	if obs.Err != nil {
		return Verdict{State: Unreachable, Reason: clip(obs.Err.Error(), maxReason)}
	}
	if mode != KafkaMetadata || slices.ContainsFunc(obs.Advertised, func(a string) bool { return sameAddress(a, dialed) }) {
		return Verdict{State: Reachable}
	}
	return Verdict{State: Mismatch, Advertises: clip(whatItAdvertises(dialed, obs.Advertised, published), maxReason)}
}

// whatItAdvertises names, among the brokers a Metadata response lists, the one that answered at
// dialed. The response does not say which broker is speaking, but brokerport puts each broker on
// its own node: the entry on the dialed host is it; failing that, the one entry brokerport did
// not publish.
func whatItAdvertises(dialed string, advertised, published []string) string {
	host, _, _ := net.SplitHostPort(dialed)
	var sameHost, unpublished []string
	for _, a := range advertised {
		if h, _, _ := net.SplitHostPort(a); strings.EqualFold(h, host) {
			sameHost = append(sameHost, a)
		}
		if !slices.ContainsFunc(published, func(p string) bool { return sameAddress(p, a) }) {
			unpublished = append(unpublished, a)
		}
	}
	switch {
	case len(sameHost) == 1:
		return sameHost[0]
	case len(unpublished) == 1:
		return unpublished[0]
	case len(advertised) == 0:
		return "no broker (empty Metadata response)"
	}
	return "something else: the cluster's brokers are " + strings.Join(slices.Sorted(slices.Values(advertised)), ",")
}

// unpublished is what the in-cluster probe says a mismatched broker advertises when that is not
// an address brokerport computed for its StatefulSet.
const unpublished = "an address brokerport did not publish for it (brokerport check --from-here names it)"

// judgeInCluster is Judge for the in-cluster probe, whose verdicts go into Events and a ConfigMap
// the StatefulSet's users read; peers are every address computed for the StatefulSet's brokers on
// the dialed listener, own those of all its listeners. A Metadata response is bytes from whatever
// listens at the dialed address; the address is brokerport's own choice, but what answers there
// need not be the broker (a hostNetwork pod of someone else, a relay to another team's cluster).
// So what it advertises is named only when it is one of the addresses brokerport computed for
// this StatefulSet (a sibling's, or another listener's: a configuration mix-up). Anything else is
// said to be an address brokerport did not publish, without repeating it or the cluster's broker
// list: `brokerport check --from-here`, run with the user's own network and rights, names it.
func judgeInCluster(dialed string, mode Mode, obs Observation, peers []string, own [][]string) Verdict {
	v := Judge(dialed, mode, obs, peers)
	if v.State != Mismatch || len(obs.Advertised) == 0 {
		return v
	}
	for _, addrs := range own {
		if slices.ContainsFunc(addrs, func(a string) bool { return sameAddress(a, v.Advertises) }) {
			return v
		}
	}
	v.Advertises = unpublished
	return v
}

// sameAddress compares host:port addresses, DNS names without regard to case or a final dot.
func sameAddress(a, b string) bool {
	ha, pa, errA := net.SplitHostPort(a)
	hb, pb, errB := net.SplitHostPort(b)
	if errA != nil || errB != nil {
		return a == b
	}
	return pa == pb && strings.EqualFold(strings.TrimSuffix(ha, "."), strings.TrimSuffix(hb, "."))
}

func clip(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ") // one line
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

// Event is what to say on the StatefulSet when a verdict changes.
type Event struct {
	Type    string // "Warning" or "Normal"
	Reason  string
	Message string
}

// Transition is the Event for a broker's verdict on a listener going from before (known tells
// whether there was one) to now: a Warning on becoming unreachable or mismatched (or changing
// from one to the other), a Normal on recovery, nothing otherwise; a healthy first verdict says
// nothing, and neither does an address not probed (its line in the ConfigMap says why).
func Transition(pod, listener, address string, before Verdict, known bool, now Verdict) (Event, bool) {
	if now.State == NotProbed || known && before.State == now.State {
		return Event{}, false
	}
	switch now.State {
	case Unreachable:
		return Event{Type: "Warning", Reason: "BrokerUnreachable",
			Message: fmt.Sprintf("broker %s is unreachable on listener %s at its published address %s: %s", pod, listener, address, now.Reason)}, true
	case Mismatch:
		return Event{Type: "Warning", Reason: "BrokerAdvertisesOther",
			Message: fmt.Sprintf("broker %s answers on listener %s at its published address %s but advertises %s: clients are sent elsewhere; fix the broker's advertised listener", pod, listener, address, now.Advertises)}, true
	}
	if !known {
		return Event{}, false
	}
	return Event{Type: "Normal", Reason: "BrokerReachable",
		Message: fmt.Sprintf("broker %s is reachable again on listener %s at %s", pod, listener, address)}, true
}

// ReachabilityKeys are the ConfigMap keys the probe adds: "<listener>.reachability", one
// "<pod> <verdict>" line per broker with a verdict on that listener, in the order of pods.
func ReachabilityKeys(listeners, pods []string, verdicts map[Target]Verdict) map[string]string {
	out := map[string]string{}
	for _, l := range listeners {
		var lines []string
		for _, pod := range pods {
			if v, ok := verdicts[Target{Pod: pod, Listener: l}]; ok {
				lines = append(lines, pod+" "+v.String())
			}
		}
		if len(lines) > 0 {
			out[l+ReachabilitySuffix] = strings.Join(lines, "\n")
		}
	}
	return out
}

// ReachabilitySuffix ends the ConfigMap keys of the probe's verdicts.
const ReachabilitySuffix = ".reachability"

// Target is one broker's listener.
type Target struct{ Pod, Listener string }

// FreePorts counts the ports of band that none of held covers.
func FreePorts(band patches.PortRange, held []patches.PortRange) int {
	clipped := make([]patches.PortRange, 0, len(held))
	for _, h := range held {
		h.First, h.Last = max(h.First, band.First), min(h.Last, band.Last)
		if h.First <= h.Last {
			clipped = append(clipped, h)
		}
	}
	slices.SortFunc(clipped, func(a, b patches.PortRange) int { return int(a.First - b.First) })
	free := int(band.Size())
	next := band.First // the lowest port not yet counted as held
	for _, h := range clipped {
		first := max(h.First, next)
		if first <= h.Last {
			free -= int(h.Last - first + 1)
			next = h.Last + 1
		}
	}
	return free
}

// Jitter spreads periods over [0.9, 1.1) of period, so that replicas restarted together and
// StatefulSets created together do not probe in step.
func Jitter(period time.Duration, r *rand.Rand) time.Duration {
	return time.Duration(float64(period) * (0.9 + 0.2*r.Float64()))
}
