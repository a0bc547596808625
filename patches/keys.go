// Package patches holds brokerport's mutations as pure functions: from an object, its configuration
// and what the caller knows of the cluster to the mutated object. No client, no HTTP, no clock:
// the same inputs always give the same output, which is what the golden tests and `render` rely on.
package patches

// The opt-in label, put on a StatefulSet by the user and copied into its pod template.
const (
	LabelExpose = "brokerport.io/expose"
	ExposeValue = "true"
	// LabelCluster names the StatefulSet a broker pod or Service belongs to; the anti-affinity
	// term selects on it so that two brokers of one StatefulSet never share a node.
	LabelCluster = "brokerport.io/cluster"
	// LabelManagedBy marks the Services and ConfigMaps the controller creates, so that the API
	// server (a ValidatingAdmissionPolicy bound to brokerport's identity) can keep its writes to
	// them.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedByValue = "brokerport"
)

// Configuration annotations, set on the StatefulSet and copied into its pod template so that the
// pod webhook needs no look-up.
const (
	AnnotationListeners        = "brokerport.io/listeners"
	AnnotationPortBase         = "brokerport.io/port-base"
	AnnotationMaxBrokers       = "brokerport.io/max-brokers"
	AnnotationAddressTypes     = "brokerport.io/address-types"
	AnnotationHostTemplate     = "brokerport.io/host-template"
	AnnotationAdvertiseEnv     = "brokerport.io/advertise-env"
	AnnotationContainer        = "brokerport.io/container"
	AnnotationFlavor           = "brokerport.io/flavor"
	AnnotationListenerName     = "brokerport.io/listener-name"
	AnnotationSecurityProtocol = "brokerport.io/security-protocol"
	AnnotationIPFamily         = "brokerport.io/ip-family"
	// AnnotationStrategy chooses how brokers are reached: "nodeport" (the default) or
	// "loadbalancer" (see strategy_loadbalancer.go).
	AnnotationStrategy = "brokerport.io/strategy"
	// AnnotationServiceAnnotations (loadbalancer) is a JSON object of annotations passed to every
	// broker's LoadBalancer Service: the cloud's load-balancer settings.
	AnnotationServiceAnnotations = "brokerport.io/service-annotations"
	// AnnotationExternalTrafficPolicy (loadbalancer) is the Services' externalTrafficPolicy.
	AnnotationExternalTrafficPolicy = "brokerport.io/external-traffic-policy"
	// AnnotationTLSIssuer names the cert-manager Issuer or ClusterIssuer that issues each broker
	// a certificate naming its advertised address (see tls.go).
	AnnotationTLSIssuer = "brokerport.io/tls-issuer"
)

// configAnnotations are the annotations copied from a StatefulSet into its pod template, in a
// fixed order so that error lists come out the same way every time.
var configAnnotations = []string{
	AnnotationListeners,
	AnnotationPortBase,
	AnnotationMaxBrokers,
	AnnotationAddressTypes,
	AnnotationHostTemplate,
	AnnotationAdvertiseEnv,
	AnnotationContainer,
	AnnotationFlavor,
	AnnotationListenerName,
	AnnotationSecurityProtocol,
	AnnotationIPFamily,
	AnnotationStrategy,
	AnnotationServiceAnnotations,
	AnnotationExternalTrafficPolicy,
	AnnotationTLSIssuer,
}

// Address annotations, written on a broker pod when it is bound to a node.
const (
	AnnotationHost = "brokerport.io/host"
	// AnnotationHostURI is the host as it goes before ":port": an IPv6 literal in brackets, any
	// other host as it is. The kubelet expands $(VAR) without conditions, so the brackets have to
	// be in the value itself.
	AnnotationHostURI = "brokerport.io/host-uri"
	AnnotationZone    = "brokerport.io/zone"
	AnnotationNode    = "brokerport.io/node"
)

// Labels set by Kubernetes that brokerport reads.
const (
	labelPodName  = "statefulset.kubernetes.io/pod-name"
	labelPodIndex = "apps.kubernetes.io/pod-index"
	labelHostname = "kubernetes.io/hostname"
	LabelZone     = "topology.kubernetes.io/zone"
)

// EnvPrefix is reserved: every variable of a broker container whose name starts with it is
// brokerport's, and is rewritten on each mutation.
const EnvPrefix = "BROKERPORT_"

// EditedConfig lists the configuration annotations whose value on a pod differs from its
// StatefulSet's: the pod predates a change of the StatefulSet, or someone edited it. brokerport
// reads neither: what it publishes and repairs comes from the StatefulSet.
func EditedConfig(pod, sts map[string]string) []string {
	var keys []string
	for _, key := range configAnnotations {
		podValue, onPod := pod[key]
		stsValue, onSTS := sts[key]
		if onPod != onSTS || podValue != stsValue {
			keys = append(keys, key)
		}
	}
	return keys
}
