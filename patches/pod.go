package patches

import (
	"fmt"
	"iter"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Broker is a pod's place in its StatefulSet, as brokerport sees it.
type Broker struct {
	Cluster string // the StatefulSet's name
	Ordinal int
	Config  Config
}

// BrokerOf reads a broker pod's cluster, ordinal and configuration from its labels, annotations
// and name. Errors name the field at fault.
func BrokerOf(pod *corev1.Pod, opts Options) (Broker, field.ErrorList) {
	annotationsPath := field.NewPath("metadata", "annotations")
	cfg, errs := ParseConfig(pod.Annotations, annotationsPath, opts)
	if len(errs) > 0 {
		return Broker{}, errs
	}
	cluster := pod.Labels[LabelCluster]
	if cluster == "" {
		return Broker{}, field.ErrorList{field.Required(field.NewPath("metadata", "labels").Key(LabelCluster), "set from the StatefulSet by brokerport; opt in the StatefulSet, not the pod")}
	}
	if !cfg.Configured() {
		return Broker{}, field.ErrorList{field.Required(annotationsPath.Key(AnnotationPortBase), "set from the StatefulSet by brokerport; opt in the StatefulSet, not the pod")}
	}
	ordinal, ok := OrdinalOf(pod.Name, cluster)
	if !ok {
		return Broker{}, field.ErrorList{field.Invalid(field.NewPath("metadata", "name"), pod.Name, fmt.Sprintf("a broker of StatefulSet %q must be named %s-<ordinal>", cluster, cluster))}
	}
	if ordinal >= int(cfg.MaxBrokers) && !cfg.LoadBalanced() {
		return Broker{}, field.ErrorList{field.Forbidden(field.NewPath("metadata", "name"), fmt.Sprintf("broker ordinal %d is past the %d brokers of the port block (%s)", ordinal, cfg.MaxBrokers, AnnotationMaxBrokers))}
	}
	return Broker{Cluster: cluster, Ordinal: ordinal, Config: cfg}, nil
}

// OrdinalOf parses a broker pod name, "<cluster>-<ordinal>".
func OrdinalOf(name, cluster string) (int, bool) {
	digits, ok := strings.CutPrefix(name, cluster+"-")
	if !ok || digits == "" || (len(digits) > 1 && digits[0] == '0') {
		return 0, false
	}
	n, err := strconv.Atoi(digits)
	return n, err == nil && n >= 0
}

// MutatePod exposes a broker pod, changing it in place: hostPorts on the listeners' container
// ports, one broker per node, brokerport's environment, and, when the pod is already bound
// (node is its node), the address annotations.
func MutatePod(pod *corev1.Pod, node *corev1.Node, opts Options) field.ErrorList {
	if !IsExposed(pod.Labels) {
		return nil
	}
	if err := checkHostNetwork(&pod.Spec, field.NewPath("spec")); err != nil {
		return field.ErrorList{err}
	}
	broker, errs := BrokerOf(pod, opts)
	if len(errs) > 0 {
		return errs
	}
	containers := field.NewPath("spec", "containers")
	ci, err := brokerContainer(pod, broker.Config)
	if err != nil {
		return field.ErrorList{err}
	}
	if err := needsGate(broker.Config, opts); err != nil {
		return field.ErrorList{err}
	}
	if !broker.Config.LoadBalanced() {
		if err := setHostPorts(pod, ci, broker); err != nil {
			return field.ErrorList{err}
		}
		addAntiAffinity(pod, broker.Cluster)
	}

	// Appending first keeps the paths in its errors those of the pod as the user wrote it.
	c := &pod.Spec.Containers[ci]
	if err := advertise(c, broker.Config, containers.Index(ci).Child("env")); err != nil {
		return field.ErrorList{err}
	}
	if broker.Config.Flavor == FlavorRedpanda {
		if err := advertiseRedpanda(pod, ci, broker.Config); err != nil {
			return field.ErrorList{err}
		}
	}
	env := brokerEnv(broker)
	c.Env = withBrokerEnv(c.Env, env)
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name != GateContainer {
			pod.Spec.InitContainers[i].Env = withBrokerEnv(pod.Spec.InitContainers[i].Env, env)
		}
	}
	if opts.GateImage != "" {
		addGate(pod, opts.GateImage, opts.GateResources, broker.Config.TLSIssuer != nil)
	}
	if broker.Config.TLSIssuer != nil {
		mountTLS(pod, broker)
		if broker.Config.Flavor == FlavorKafka || broker.Config.Flavor == FlavorBitnami {
			if err := setEnv(c, kafkaTLSEnv(broker.Config), containers.Index(ci).Child("env")); err != nil {
				return field.ErrorList{err}
			}
		}
	}

	if pod.Spec.NodeName != "" && !broker.Config.LoadBalanced() {
		if node == nil {
			return field.ErrorList{field.Invalid(field.NewPath("spec", "nodeName"), pod.Spec.NodeName, "brokerport does not know this node (yet); create the pod again once the node is registered")}
		}
		addr, err := SelectAddress(node, broker.Config)
		if err != nil {
			return field.ErrorList{field.Invalid(field.NewPath("spec", "nodeName"), pod.Spec.NodeName, err.Error())}
		}
		SetAddress(&pod.ObjectMeta, addr)
	}
	return nil
}

// SetAddress writes a node's address annotations.
func SetAddress(meta *metav1.ObjectMeta, addr NodeAddress) {
	meta.Annotations = setKey(meta.Annotations, AnnotationHost, addr.Host)
	meta.Annotations = setKey(meta.Annotations, AnnotationHostURI, HostURI(addr.Host))
	meta.Annotations = setKey(meta.Annotations, AnnotationZone, addr.Zone)
	meta.Annotations = setKey(meta.Annotations, AnnotationNode, addr.Node)
}

// brokerContainer finds the broker: the container the config names, else the one serving the
// first listener, else the first.
func brokerContainer(pod *corev1.Pod, cfg Config) (int, *field.Error) {
	if cfg.Container != "" {
		i := slices.IndexFunc(pod.Spec.Containers, func(c corev1.Container) bool { return c.Name == cfg.Container })
		if i < 0 {
			names := make([]string, len(pod.Spec.Containers))
			for j, c := range pod.Spec.Containers {
				names[j] = c.Name
			}
			return 0, field.Invalid(field.NewPath("metadata", "annotations").Key(AnnotationContainer), cfg.Container, fmt.Sprintf("the pod has no such container; it has %v", names))
		}
		return i, nil
	}
	for i, c := range pod.Spec.Containers {
		if tcpPortIndex(c.Ports, cfg.Listeners[0].ContainerPort) >= 0 {
			return i, nil
		}
	}
	if len(pod.Spec.Containers) == 0 {
		return 0, field.Required(field.NewPath("spec", "containers"), "a broker pod needs a container")
	}
	return 0, nil
}

func tcpPortIndex(ports []corev1.ContainerPort, containerPort int32) int {
	return slices.IndexFunc(ports, func(p corev1.ContainerPort) bool {
		return p.ContainerPort == containerPort && (p.Protocol == "" || p.Protocol == corev1.ProtocolTCP)
	})
}

// setHostPorts puts each listener's external port on the broker container as a hostPort: on the
// port entry the container declares for it, else on a new entry named after the listener.
func setHostPorts(pod *corev1.Pod, ci int, broker Broker) *field.Error {
	c := &pod.Spec.Containers[ci]
	portsPath := field.NewPath("spec", "containers").Index(ci).Child("ports")
	for l, listener := range broker.Config.Listeners {
		hostPort := broker.Config.Port(broker.Ordinal, l)
		if owner, ok := hostPortOwner(pod, ci, listener.ContainerPort, hostPort); ok {
			return field.Forbidden(owner, fmt.Sprintf("hostPort %d is broker %d's external port for listener %q; remove it", hostPort, broker.Ordinal, listener.Name))
		}
		if p := tcpPortIndex(c.Ports, listener.ContainerPort); p >= 0 {
			if current := c.Ports[p].HostPort; current != 0 && current != hostPort {
				return field.Forbidden(portsPath.Index(p).Child("hostPort"), fmt.Sprintf("brokerport sets the hostPort of listener %q to %d (broker %d); remove the explicit %d", listener.Name, hostPort, broker.Ordinal, current))
			}
			c.Ports[p].HostPort = hostPort
			continue
		}
		if path, taken := portNameOwner(pod, listener.Name); taken {
			return field.Invalid(path, listener.Name, fmt.Sprintf("brokerport names the port it adds for listener %q (containerPort %d) after the listener, and this name is taken; declare containerPort %d in the broker container or rename the listener in %s", listener.Name, listener.ContainerPort, listener.ContainerPort, AnnotationListeners))
		}
		c.Ports = append(c.Ports, corev1.ContainerPort{Name: listener.Name, ContainerPort: listener.ContainerPort, HostPort: hostPort, Protocol: corev1.ProtocolTCP})
	}
	return nil
}

// hostNetworkDetail says why an exposed broker cannot have hostNetwork, and the ways out.
const hostNetworkDetail = "brokerport gives each broker its own node port by mapping a hostPort to the listener's containerPort, " +
	"which hostNetwork rules out (the broker binds the node's ports itself): remove hostNetwork, or the StatefulSet's " + LabelExpose + " label"

// checkHostNetwork refuses an exposed pod (or pod template, under path) with hostNetwork: the
// API server would otherwise refuse brokerport's hostPort, or brokerport the hostPort the API
// server defaults under hostNetwork, each with a message that hides the cause.
func checkHostNetwork(spec *corev1.PodSpec, path *field.Path) *field.Error {
	if spec.HostNetwork {
		return field.Forbidden(path.Child("hostNetwork"), hostNetworkDetail)
	}
	return nil
}

// portEntry is one port of a container that runs beside the broker.
type portEntry struct {
	list      string // "containers" or "initContainers"
	container int    // index in list
	port      int    // index in the container's ports
	corev1.ContainerPort
}

func (p portEntry) path() *field.Path {
	return field.NewPath("spec", p.list).Index(p.container).Child("ports").Index(p.port)
}

// runningPorts are the ports of every container that runs beside the broker: the containers and
// the native sidecars (init containers with restartPolicy: Always). Plain init containers have
// ended before the broker starts.
func runningPorts(pod *corev1.Pod) iter.Seq[portEntry] {
	return func(yield func(portEntry) bool) {
		for ci, c := range pod.Spec.Containers {
			for pi, p := range c.Ports {
				if !yield(portEntry{"containers", ci, pi, p}) {
					return
				}
			}
		}
		for ci, c := range pod.Spec.InitContainers {
			if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
				continue
			}
			for pi, p := range c.Ports {
				if !yield(portEntry{"initContainers", ci, pi, p}) {
					return
				}
			}
		}
	}
}

// hostPortOwner finds a port entry, other than the broker's own entry for the listener, that
// already uses hostPort.
func hostPortOwner(pod *corev1.Pod, brokerIndex int, containerPort, hostPort int32) (*field.Path, bool) {
	for p := range runningPorts(pod) {
		own := p.list == "containers" && p.container == brokerIndex && p.ContainerPort.ContainerPort == containerPort && (p.Protocol == "" || p.Protocol == corev1.ProtocolTCP)
		if p.HostPort == hostPort && !own {
			return p.path().Child("hostPort"), true
		}
	}
	return nil, false
}

func portNameOwner(pod *corev1.Pod, name string) (*field.Path, bool) {
	for p := range runningPorts(pod) {
		if p.Name == name {
			return p.path().Child("name"), true
		}
	}
	return nil, false
}

// addAntiAffinity requires that no two brokers of the cluster share a node, keeping whatever
// affinity the pod already has.
func addAntiAffinity(pod *corev1.Pod, cluster string) {
	term := corev1.PodAffinityTerm{
		LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{LabelCluster: cluster}},
		TopologyKey:   labelHostname,
	}
	if pod.Spec.Affinity == nil {
		pod.Spec.Affinity = &corev1.Affinity{}
	}
	if pod.Spec.Affinity.PodAntiAffinity == nil {
		pod.Spec.Affinity.PodAntiAffinity = &corev1.PodAntiAffinity{}
	}
	anti := pod.Spec.Affinity.PodAntiAffinity
	if !slices.ContainsFunc(anti.RequiredDuringSchedulingIgnoredDuringExecution, func(t corev1.PodAffinityTerm) bool {
		return apiequality.Semantic.DeepEqual(t, term)
	}) {
		anti.RequiredDuringSchedulingIgnoredDuringExecution = append(anti.RequiredDuringSchedulingIgnoredDuringExecution, term)
	}
}

// brokerEnv is brokerport's environment, in the order Kubernetes needs to expand $(VAR): a
// variable can only refer to variables defined before it.
func brokerEnv(b Broker) []corev1.EnvVar {
	env := []corev1.EnvVar{
		{Name: EnvPrefix + "NODE_NAME", ValueFrom: fieldRef("spec.nodeName")},
		{Name: EnvPrefix + "HOST", ValueFrom: fieldRef(annotationRef(AnnotationHost))},
		{Name: hostURIVar, ValueFrom: fieldRef(annotationRef(AnnotationHostURI))},
		{Name: EnvPrefix + "ZONE", ValueFrom: fieldRef(annotationRef(AnnotationZone))},
		{Name: EnvPrefix + "ORDINAL", Value: strconv.Itoa(b.Ordinal)},
	}
	if b.Config.TLSIssuer != nil {
		env = append(env, corev1.EnvVar{Name: tlsDirVar, Value: TLSDir})
	}
	for l, listener := range b.Config.Listeners {
		port := portVar(listener)
		env = append(env,
			corev1.EnvVar{Name: port, Value: strconv.Itoa(int(b.Config.Port(b.Ordinal, l)))},
			corev1.EnvVar{Name: addressVar(listener), Value: fmt.Sprintf("$(%s):$(%s)", hostURIVar, port)},
		)
	}
	return env
}

// hostURIVar is the host as it goes before ":port" (see AnnotationHostURI).
const hostURIVar = EnvPrefix + "HOST_URI"

func portVar(l Listener) string    { return EnvPrefix + l.EnvName() + "_PORT" }
func addressVar(l Listener) string { return EnvPrefix + l.EnvName() + "_ADDRESS" }

func fieldRef(path string) *corev1.EnvVarSource {
	return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}
}

func annotationRef(key string) string { return fmt.Sprintf("metadata.annotations['%s']", key) }

// withBrokerEnv puts brokerport's variables first, so that every variable of the container can
// refer to them, replacing any BROKERPORT_* variable already there.
func withBrokerEnv(current, ours []corev1.EnvVar) []corev1.EnvVar {
	out := slices.Clone(ours)
	for _, e := range current {
		if !strings.HasPrefix(e.Name, EnvPrefix) {
			out = append(out, e)
		}
	}
	return out
}

// listenerEntry is one entry brokerport appends to a Kafka listener variable.
type listenerEntry struct {
	variable string
	entry    string
	// binds is the port the entry listens on (LISTENERS only): no other entry may bind it.
	binds int32
}

// advertise appends the external listener to the broker's advertised listeners and, for a
// flavor, binds it and maps it to its security protocol as well.
func advertise(c *corev1.Container, cfg Config, envPath *field.Path) *field.Error {
	if cfg.AdvertiseEnv == "" {
		return nil
	}
	kafka := cfg.Listeners[0]
	name := cfg.ListenerName
	entries := []listenerEntry{{variable: cfg.AdvertiseEnv, entry: fmt.Sprintf("%s://$(%s):$(%s)", name, hostURIVar, portVar(kafka))}}
	if cfg.Flavor != FlavorNone {
		prefix := cfg.Flavor.envPrefix()
		entries = append(entries,
			// An empty host binds every interface of every address family (0.0.0.0 would be
			// IPv4 only).
			listenerEntry{variable: prefix + "LISTENERS", entry: fmt.Sprintf("%s://:%d", name, kafka.ContainerPort), binds: kafka.ContainerPort},
			listenerEntry{variable: prefix + "LISTENER_SECURITY_PROTOCOL_MAP", entry: fmt.Sprintf("%s:%s", name, cfg.SecurityProtocol)},
		)
	}
	for _, e := range entries {
		i := slices.IndexFunc(c.Env, func(v corev1.EnvVar) bool { return v.Name == e.variable })
		if i < 0 && cfg.Flavor != FlavorNone && e.variable == cfg.Flavor.envPrefix()+"LISTENER_SECURITY_PROTOCOL_MAP" {
			// Kafka runs without the map (it has a default): brokerport writes that default out
			// and adds its entry, so every other listener keeps its protocol.
			current, err := effectiveProtocolMap(c, cfg.Flavor.envPrefix(), name, envPath)
			if err != nil {
				return err
			}
			value, appendErr := appendListener(current, e, name)
			if appendErr != nil {
				return field.Invalid(envPath, e.variable, fmt.Sprintf("%s (not set, so Kafka's default %q): %v", e.variable, current, appendErr))
			}
			c.Env = append(c.Env, corev1.EnvVar{Name: e.variable, Value: value})
			continue
		}
		if i < 0 {
			detail := fmt.Sprintf("brokerport appends %q to %s, which container %q does not define (see %s and %s)", e.entry, e.variable, c.Name, AnnotationAdvertiseEnv, AnnotationFlavor)
			if scriptSetsAdvertised(*c) == e.variable {
				detail += "; the " + scriptRecipe(cfg, e.variable)
			}
			return field.Required(envPath, detail)
		}
		if c.Env[i].ValueFrom != nil {
			return field.Invalid(envPath.Index(i).Child("valueFrom"), e.variable, fmt.Sprintf("brokerport appends %q to %s, so it must be a plain value, not valueFrom", e.entry, e.variable))
		}
		value, err := appendListener(c.Env[i].Value, e, name)
		if err != nil {
			return field.Invalid(envPath.Index(i).Child("value"), c.Env[i].Value, fmt.Sprintf("%s: %v", e.variable, err))
		}
		c.Env[i].Value = value
	}
	return nil
}

// appendListener adds the entry to a comma-separated Kafka listener list unless it is there
// already. A different entry for the same listener name, or one binding the same port, is an error.
func appendListener(list string, add listenerEntry, name string) (string, error) {
	if strings.TrimSpace(list) == "" {
		return add.entry, nil
	}
	for _, e := range strings.Split(list, ",") {
		e = strings.TrimSpace(e)
		if e == add.entry {
			return list, nil
		}
		if entryName, _, _ := strings.Cut(e, ":"); entryName == name {
			return "", fmt.Errorf("listener name %s is already used by %q; choose another with %s", name, e, AnnotationListenerName)
		}
		if add.binds != 0 && strings.HasSuffix(e, ":"+strconv.Itoa(int(add.binds))) {
			return "", fmt.Errorf("%q already binds port %d, the external listener's containerPort", e, add.binds)
		}
	}
	return list + "," + add.entry, nil
}
