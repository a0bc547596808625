package patches

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Listener is one externally exposed listener of a broker: its name (also the name of the port
// entries brokerport adds) and the containerPort on which the broker serves it.
type Listener struct {
	Name          string
	ContainerPort int32
}

// EnvName is the listener's part of brokerport's variable names: "schema-registry" → "SCHEMA_REGISTRY".
func (l Listener) EnvName() string {
	return strings.ToUpper(strings.ReplaceAll(l.Name, "-", "_"))
}

// Flavor names a broker image family whose external listener brokerport completes in full.
type Flavor string

const (
	FlavorNone    Flavor = ""
	FlavorKafka   Flavor = "kafka"   // Apache Kafka images: KAFKA_LISTENERS, ...
	FlavorBitnami Flavor = "bitnami" // Bitnami images: KAFKA_CFG_LISTENERS, ...
	// FlavorRedpanda: the Redpanda Helm chart (and the Redpanda Operator, which renders it); see
	// flavor_redpanda.go.
	FlavorRedpanda Flavor = "redpanda"
)

// envPrefix is where the flavor's configuration variables start.
func (f Flavor) envPrefix() string {
	switch f {
	case FlavorKafka:
		return "KAFKA_"
	case FlavorBitnami:
		return "KAFKA_CFG_"
	}
	return ""
}

// Strategy is how a StatefulSet's brokers are reached from outside.
type Strategy string

const (
	// StrategyNodePort: each broker on its own node, on a hostPort reserved cluster-wide as a
	// nodePort, advertising the node's address.
	StrategyNodePort Strategy = "nodeport"
	// StrategyLoadBalancer: each broker behind a LoadBalancer Service of its own, advertising the
	// Service's ingress (strategy_loadbalancer.go).
	StrategyLoadBalancer Strategy = "loadbalancer"
)

// Defaults used when a StatefulSet does not say otherwise.
var (
	DefaultListeners    = []Listener{{Name: "kafka", ContainerPort: 9094}}
	DefaultAddressTypes = []corev1.NodeAddressType{
		corev1.NodeExternalDNS, corev1.NodeExternalIP, corev1.NodeInternalDNS, corev1.NodeInternalIP, corev1.NodeHostName,
	}
	DefaultPortRange = PortRange{First: 30000, Last: 30085}
)

const (
	DefaultMaxBrokers       = 8
	DefaultListenerName     = "EXTERNAL"
	DefaultSecurityProtocol = "PLAINTEXT"
)

var securityProtocols = []string{"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}

// maxEchoed is how much of a user-written value a denial repeats (see clip).
const maxEchoed = 64

// Bounds on what a StatefulSet's configuration may ask for. ParseConfig checks them, so that the
// StatefulSet webhook denies a configuration past one (naming the annotation and the bound), and
// so that whatever reads a configuration (every admission, the controller, the probe) does work
// bounded by them, not by what a tenant wrote.
const (
	// MaxListeners bounds brokerport.io/listeners: a Kafka broker serves a handful of listeners
	// (the Redpanda chart four: kafka, http, schema-registry, admin). Each listener is a port per
	// broker, an environment variable per container and, with the loadbalancer strategy, a
	// Service port per broker.
	MaxListeners = 16
	// maxConfigValue bounds the value of every configuration annotation but
	// brokerport.io/service-annotations (maxServiceAnnotations): the longest sensible value, 16
	// listeners of 15-character names, is under 400 bytes. The API server's own bound is 256 KiB
	// for all annotations together, too much to parse on every admission.
	maxConfigValue = 1024
)

// valueLimit is the most bytes the value of configuration annotation key may have.
func valueLimit(key string) int {
	if key == AnnotationServiceAnnotations {
		return maxServiceAnnotations
	}
	return maxConfigValue
}

// boundedKeys are the annotations whose size ParseConfig checks: the configuration annotations
// and the loadbalancer strategy's choice of nodePorts (read from the StatefulSet only).
var boundedKeys = append(slices.Clone(configAnnotations), AnnotationAllocateLoadBalancerNodePorts)

// clipPart is clip for a part of a value that the detail repeats after the value itself: a part
// of a usual size in full, a longer one as a stub, so that an error stays under 300 bytes.
func clipPart(s string) string {
	if c := clip(s, 32); c == s {
		return s
	}
	return clip(s, 12)
}

// Options are brokerport's cluster-wide settings (flags of `serve` and `render`).
type Options struct {
	// PortRange is where port blocks are allocated.
	PortRange PortRange
	// AddressTypes is the node address preference when a StatefulSet does not set one.
	AddressTypes []corev1.NodeAddressType
	// GateImage, when set, is the image of the init container that holds a broker back until its
	// host annotation is present.
	GateImage string
	// GateResources are the gate's requests and limits: a namespace whose ResourceQuota covers
	// cpu or memory refuses every container that declares none.
	GateResources corev1.ResourceRequirements
}

// DefaultOptions returns the settings brokerport runs with when no flag changes them.
func DefaultOptions() Options {
	return Options{PortRange: DefaultPortRange, AddressTypes: slices.Clone(DefaultAddressTypes), GateResources: GateResources(DefaultGateCPU, DefaultGateMemory)}
}

// Config is one StatefulSet's brokerport configuration, read from its annotations.
type Config struct {
	Listeners []Listener
	// PortBase is the first port of the StatefulSet's block; 0 until one is assigned.
	PortBase         int32
	MaxBrokers       int32
	AddressTypes     []corev1.NodeAddressType
	HostTemplate     *HostTemplate
	AdvertiseEnv     string
	Container        string
	Flavor           Flavor
	ListenerName     string
	SecurityProtocol string
	IPFamily         IPFamily
	Strategy         Strategy
	// ServiceAnnotations and ExternalTrafficPolicy shape the LoadBalancer Services
	// (StrategyLoadBalancer only).
	ServiceAnnotations    map[string]string
	ExternalTrafficPolicy corev1.ServiceExternalTrafficPolicy
	// NoNodePorts: the LoadBalancer Services ask for no nodePorts
	// (allocateLoadBalancerNodePorts: false), as a load balancer that routes to the pods
	// directly allows.
	NoNodePorts bool
	// TLSIssuer, when set, has each broker's certificate issued by cert-manager.
	TLSIssuer *IssuerRef
}

// LoadBalanced tells whether the brokers are reached through LoadBalancer Services.
func (c Config) LoadBalanced() bool { return c.Strategy == StrategyLoadBalancer }

// HoldsBlock tells whether the StatefulSet holds a port block of the band: a nodeport one that
// has been assigned its block.
func (c Config) HoldsBlock() bool { return !c.LoadBalanced() && c.PortBase != 0 }

// Configured tells whether the StatefulSet webhook has completed the configuration: a block
// assigned, or none needed.
func (c Config) Configured() bool { return c.LoadBalanced() || c.PortBase != 0 }

// BlockSize is how many ports the StatefulSet reserves: one per listener per possible broker.
func (c Config) BlockSize() int32 { return c.MaxBrokers * int32(len(c.Listeners)) }

// Block is the StatefulSet's reserved port range; valid only once PortBase is set.
func (c Config) Block() PortRange {
	return PortRange{First: c.PortBase, Last: c.PortBase + c.BlockSize() - 1}
}

// Port is the external port of broker ordinal i for listener index l: in its block for a node
// port; for a load balancer, the listener's containerPort (each broker has an address of its
// own, so the ports need not differ).
func (c Config) Port(ordinal, listener int) int32 {
	if c.LoadBalanced() {
		return c.Listeners[listener].ContainerPort
	}
	return c.PortBase + int32(ordinal*len(c.Listeners)+listener)
}

// ParseConfig reads the configuration annotations. Every invalid value is reported, each naming
// its annotation (under path), what is wrong and what is accepted.
func ParseConfig(annotations map[string]string, path *field.Path, opts Options) (Config, field.ErrorList) {
	cfg := Config{
		Listeners:        DefaultListeners,
		MaxBrokers:       DefaultMaxBrokers,
		AddressTypes:     opts.AddressTypes,
		ListenerName:     DefaultListenerName,
		SecurityProtocol: DefaultSecurityProtocol,
		Strategy:         StrategyNodePort,
	}
	if len(cfg.AddressTypes) == 0 {
		cfg.AddressTypes = DefaultAddressTypes
	}
	var errs field.ErrorList
	// Annotation values are of any size (up to the API server's 256 kB, several MB in render):
	// a denial repeats only their start, so that it stays short.
	invalid := func(key, value, detail string) {
		errs = append(errs, field.Invalid(path.Key(key), clip(value, maxEchoed), detail))
	}
	// A value past its size bound is reported and not read further: get does not give it.
	oversized := 0
	for _, key := range boundedKeys {
		if v, ok := annotations[key]; ok && len(v) > valueLimit(key) {
			invalid(key, v, fmt.Sprintf("is %d bytes; at most %d", len(v), valueLimit(key)))
			oversized++
		}
	}
	get := func(key string) (string, bool) {
		v, ok := annotations[key]
		if oversized > 0 && ok && len(v) > valueLimit(key) {
			return "", false
		}
		return v, ok
	}

	if v, ok := get(AnnotationListeners); ok {
		if n := strings.Count(v, ",") + 1; n > MaxListeners {
			invalid(AnnotationListeners, v, fmt.Sprintf("names %d listeners; at most %d", n, MaxListeners))
		} else if listeners, err := parseListeners(v); err != nil {
			invalid(AnnotationListeners, v, err.Error())
		} else {
			cfg.Listeners = listeners
		}
	}
	if v, ok := get(AnnotationPortBase); ok {
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil || n < 1 || n > 65535 {
			invalid(AnnotationPortBase, v, "must be a port number from 1 to 65535; remove it to have a free block assigned")
		} else {
			cfg.PortBase = int32(n)
		}
	}
	if v, ok := get(AnnotationMaxBrokers); ok {
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil || n < 1 || n > 1000 {
			invalid(AnnotationMaxBrokers, v, "must be a whole number from 1 to 1000")
		} else {
			cfg.MaxBrokers = int32(n)
		}
	}
	if v, ok := get(AnnotationAddressTypes); ok {
		types, err := parseAddressTypes(v)
		if err != nil {
			invalid(AnnotationAddressTypes, v, err.Error())
		} else {
			cfg.AddressTypes = types
		}
	}
	if v, ok := get(AnnotationHostTemplate); ok {
		tmpl, err := ParseHostTemplate(v)
		if err != nil {
			invalid(AnnotationHostTemplate, v, err.Error()+"; e.g. {{.Node}}.nodes.example.com")
		} else {
			cfg.HostTemplate = tmpl
		}
	}
	if v, ok := get(AnnotationAdvertiseEnv); ok {
		if msgs := validation.IsEnvVarName(v); len(msgs) > 0 || strings.HasPrefix(v, EnvPrefix) {
			invalid(AnnotationAdvertiseEnv, v, "must name an environment variable of the broker container (letters, digits and '_', not starting with a digit), not brokerport's own BROKERPORT_*")
		} else {
			cfg.AdvertiseEnv = v
		}
	}
	if v, ok := get(AnnotationContainer); ok {
		if msgs := validation.IsDNS1123Label(v); len(msgs) > 0 {
			invalid(AnnotationContainer, v, "must be the name of a container of the pod (a DNS-1123 label)")
		} else {
			cfg.Container = v
		}
	}
	if v, ok := get(AnnotationFlavor); ok {
		switch f := Flavor(v); f {
		case FlavorKafka, FlavorBitnami, FlavorRedpanda:
			cfg.Flavor = f
		default:
			invalid(AnnotationFlavor, v, `accepted values: "kafka" (Apache Kafka images, KAFKA_*), "bitnami" (KAFKA_CFG_*), "redpanda" (the Redpanda chart)`)
		}
	}
	if v, ok := get(AnnotationListenerName); ok {
		if !isKafkaListenerName(v) {
			invalid(AnnotationListenerName, v, "must be a Kafka listener name: upper-case letters, digits and '_', starting with a letter")
		} else {
			cfg.ListenerName = v
		}
	}
	if v, ok := get(AnnotationTLSIssuer); ok {
		if issuer, err := parseIssuer(v); err != nil {
			invalid(AnnotationTLSIssuer, v, err.Error())
		} else {
			cfg.TLSIssuer = issuer
			cfg.SecurityProtocol = "SSL" // the certificate is for a TLS listener
		}
	}
	if v, ok := get(AnnotationSecurityProtocol); ok {
		switch {
		case !slices.Contains(securityProtocols, v):
			invalid(AnnotationSecurityProtocol, v, "accepted values: "+strings.Join(securityProtocols, ", "))
		case cfg.TLSIssuer != nil && !strings.HasSuffix(v, "SSL"):
			invalid(AnnotationSecurityProtocol, v, fmt.Sprintf("with %s the external listener serves TLS: SSL (the default then) or SASL_SSL", AnnotationTLSIssuer))
		default:
			cfg.SecurityProtocol = v
		}
	}

	if v, ok := get(AnnotationIPFamily); ok {
		switch f := IPFamily(v); f {
		case IPv4, IPv6:
			cfg.IPFamily = f
		default:
			invalid(AnnotationIPFamily, v, `accepted values: "IPv4", "IPv6"; remove it to take the node's first address of the preferred type`)
		}
	}

	parseStrategy(get, &cfg, invalid)

	if cfg.TLSIssuer != nil && cfg.Flavor == FlavorBitnami {
		// Bitnami's start-up validation (libkafka.sh) requires its own keystore files in its
		// certificates directory for any SSL listener, which brokerport does not write.
		invalid(AnnotationTLSIssuer, annotations[AnnotationTLSIssuer], `flavor "bitnami" cannot serve brokerport's certificate yet (the image's start-up check wants its own keystore files); remove the flavor and configure the listener as in README "A custom init script", reading $BROKERPORT_TLS_DIR`)
	}
	if cfg.Flavor == FlavorRedpanda {
		if cfg.AdvertiseEnv != "" {
			invalid(AnnotationAdvertiseEnv, cfg.AdvertiseEnv, "flavor \"redpanda\" advertises through the chart's redpanda.yaml, not an environment variable; remove one of the two")
		}
	} else if cfg.Flavor != FlavorNone {
		want := cfg.Flavor.envPrefix() + "ADVERTISED_LISTENERS"
		if cfg.AdvertiseEnv == "" {
			cfg.AdvertiseEnv = want
		} else if cfg.AdvertiseEnv != want {
			invalid(AnnotationAdvertiseEnv, cfg.AdvertiseEnv, fmt.Sprintf("flavor %q advertises through %s; remove the annotation or make it %s", cfg.Flavor, want, want))
		}
	}
	if cfg.PortBase != 0 && len(errs) == 0 && !cfg.LoadBalanced() && int64(cfg.PortBase)+int64(cfg.BlockSize())-1 > 65535 {
		invalid(AnnotationPortBase, annotations[AnnotationPortBase], fmt.Sprintf("a block of %d ports (%s × %d listeners) starting here runs past 65535", cfg.BlockSize(), AnnotationMaxBrokers, len(cfg.Listeners)))
	}
	return cfg, errs
}

// parseListeners reads name=containerPort pairs in one pass: names and ports already seen are
// kept in sets, so that its cost is linear in the number of listeners.
func parseListeners(v string) ([]Listener, error) {
	n := strings.Count(v, ",") + 1
	out := make([]Listener, 0, n)
	names := make(map[string]struct{}, n)
	ports := make(map[int32]string, n)
	for item := range strings.SplitSeq(v, ",") {
		name, portText, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok {
			return nil, fmt.Errorf(`%q has no '='; want name=containerPort pairs separated by commas, e.g. "kafka=9094,http=8083"`, clipPart(item))
		}
		if msgs := validation.IsValidPortName(name); len(msgs) > 0 {
			return nil, fmt.Errorf("listener name %q is not a valid port name (at most 15 lower-case letters, digits and '-', with a letter)", clipPart(name))
		}
		port, err := strconv.ParseInt(portText, 10, 32)
		if err != nil || port < 1 || port > 65535 {
			return nil, fmt.Errorf("listener %q: containerPort %q is not a port number from 1 to 65535", name, clipPart(portText))
		}
		if _, seen := names[name]; seen {
			return nil, fmt.Errorf("listener %q is named twice", name)
		}
		if seen, taken := ports[int32(port)]; taken {
			return nil, fmt.Errorf("listeners %q and %q share containerPort %d", seen, name, port)
		}
		names[name] = struct{}{}
		ports[int32(port)] = name
		out = append(out, Listener{Name: name, ContainerPort: int32(port)})
	}
	return out, nil
}

func parseAddressTypes(v string) ([]corev1.NodeAddressType, error) {
	var out []corev1.NodeAddressType
	for _, item := range strings.Split(v, ",") {
		t := corev1.NodeAddressType(strings.TrimSpace(item))
		if !slices.Contains(DefaultAddressTypes, t) {
			return nil, fmt.Errorf("%q is not a node address type; accepted, in any order: ExternalDNS, ExternalIP, InternalDNS, InternalIP, Hostname", clipPart(item))
		}
		if slices.Contains(out, t) {
			return nil, fmt.Errorf("%q is listed twice", item)
		}
		out = append(out, t)
	}
	return out, nil
}

func isKafkaListenerName(v string) bool {
	if v == "" || v[0] < 'A' || v[0] > 'Z' {
		return false
	}
	for _, r := range v {
		if (r < 'A' || r > 'Z') && (r < '0' || r > '9') && r != '_' {
			return false
		}
	}
	return true
}
