package patches

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

func TestParseConfigStrategy(t *testing.T) {
	for _, tc := range []struct {
		name        string
		annotations map[string]string
		want        func(*testing.T, Config)
		err         string
	}{
		{name: "nodeport by default", want: func(t *testing.T, c Config) {
			assert.Equal(t, StrategyNodePort, c.Strategy)
			assert.Empty(t, c.ExternalTrafficPolicy)
		}},
		{name: "loadbalancer, Local by default", annotations: map[string]string{AnnotationStrategy: "loadbalancer"}, want: func(t *testing.T, c Config) {
			assert.True(t, c.LoadBalanced())
			assert.Equal(t, corev1.ServiceExternalTrafficPolicyLocal, c.ExternalTrafficPolicy)
			assert.True(t, c.Configured(), "no block needed")
			assert.False(t, c.HoldsBlock())
		}},
		{name: "loadbalancer with settings", annotations: map[string]string{
			AnnotationStrategy: "loadbalancer", AnnotationExternalTrafficPolicy: "Cluster",
			AnnotationServiceAnnotations: `{"service.beta.kubernetes.io/aws-load-balancer-type":"nlb"}`,
		}, want: func(t *testing.T, c Config) {
			assert.Equal(t, corev1.ServiceExternalTrafficPolicyCluster, c.ExternalTrafficPolicy)
			assert.Equal(t, map[string]string{"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"}, c.ServiceAnnotations)
		}},
		{name: "unknown strategy", annotations: map[string]string{AnnotationStrategy: "ingress"}, err: `brokerport.io/strategy]: Invalid value: "ingress": accepted values: "nodeport"`},
		{name: "traffic policy misspelt", annotations: map[string]string{AnnotationStrategy: "loadbalancer", AnnotationExternalTrafficPolicy: "local"}, err: `accepted values: "Local"`},
		{name: "settings without the strategy", annotations: map[string]string{AnnotationExternalTrafficPolicy: "Local"}, err: "applies to brokerport.io/strategy=loadbalancer only"},
		{name: "not JSON", annotations: map[string]string{AnnotationStrategy: "loadbalancer", AnnotationServiceAnnotations: "a=b"}, err: "must be a JSON object of strings"},
		{name: "not a string value", annotations: map[string]string{AnnotationStrategy: "loadbalancer", AnnotationServiceAnnotations: `{"a":1}`}, err: "must be a JSON object of strings"},
		{name: "invalid key", annotations: map[string]string{AnnotationStrategy: "loadbalancer", AnnotationServiceAnnotations: `{"not a key!":"x"}`}, err: "not valid Service annotations"},
		{name: "brokerport's key", annotations: map[string]string{AnnotationStrategy: "loadbalancer", AnnotationServiceAnnotations: `{"brokerport.io/host":"x"}`}, err: "brokerport.io/ annotations of a broker Service are brokerport's"},
		{name: "too large", annotations: map[string]string{AnnotationStrategy: "loadbalancer", AnnotationServiceAnnotations: `{"a":"` + strings.Repeat("x", 5000) + `"}`}, err: "5008 bytes; at most 4096"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, errs := ParseConfig(tc.annotations, field.NewPath("metadata", "annotations"), DefaultOptions())
			if tc.err != "" {
				require.Len(t, errs, 1)
				assert.Contains(t, errs.ToAggregate().Error(), tc.err)
				assert.Less(t, len(errs.ToAggregate().Error()), 400, "bounded")
				return
			}
			require.Empty(t, errs)
			tc.want(t, cfg)
		})
	}
}

func TestBrokerServiceLoadBalancer(t *testing.T) {
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "kafka", Namespace: "ns", UID: "u"}}
	cfg, errs := ParseConfig(map[string]string{
		AnnotationStrategy: "loadbalancer", AnnotationListeners: "kafka=9094,http=8083",
		AnnotationServiceAnnotations: `{"b":"2","a":"1"}`,
	}, nil, DefaultOptions())
	require.Empty(t, errs)
	svc := BrokerService(sts, cfg, 3)
	assert.Equal(t, "kafka-3-external", svc.Name)
	assert.Equal(t, corev1.ServiceTypeLoadBalancer, svc.Spec.Type)
	assert.Equal(t, corev1.ServiceExternalTrafficPolicyLocal, svc.Spec.ExternalTrafficPolicy)
	assert.Equal(t, map[string]string{"statefulset.kubernetes.io/pod-name": "kafka-3"}, svc.Spec.Selector)
	assert.Equal(t, []corev1.ServicePort{
		{Name: "kafka", Protocol: corev1.ProtocolTCP, Port: 9094, TargetPort: svc.Spec.Ports[0].TargetPort},
		{Name: "http", Protocol: corev1.ProtocolTCP, Port: 8083, TargetPort: svc.Spec.Ports[1].TargetPort},
	}, svc.Spec.Ports)
	assert.Equal(t, map[string]string{"a": "1", "b": "2", AnnotationServiceAnnotations: `{"a":"1","b":"2"}`}, svc.Annotations)
	assert.ElementsMatch(t, []string{"a", "b"}, PassedAnnotations(svc))
	assert.Equal(t, int32(8083), cfg.Port(3, 1), "a load-balanced broker's port is its listener's containerPort")
}

func TestObserveLoadBalancedBroker(t *testing.T) {
	cfg, errs := ParseConfig(map[string]string{AnnotationStrategy: "loadbalancer"}, nil, DefaultOptions())
	require.Empty(t, errs)
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}
	bound := &corev1.Pod{Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "kafka"}}}}
	onNodePort := bound.DeepCopy()
	onNodePort.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 9094, HostPort: 30000}}
	for _, tc := range []struct {
		name      string
		facts     BrokerFacts
		exposed   bool
		transient bool
		reason    string
		address   string
	}{
		{name: "waiting for the load balancer", facts: BrokerFacts{Pod: bound, Node: node, LoadBalancer: LoadBalancerFacts{Service: "kafka-0-external"}},
			transient: true, reason: "Service kafka-0-external has no load-balancer address yet"},
		{name: "load balancer late", facts: BrokerFacts{Pod: bound, Node: node, LoadBalancer: LoadBalancerFacts{Service: "kafka-0-external", Overdue: true}},
			reason: "Service kafka-0-external has no load-balancer address yet: is a load-balancer controller running"},
		{name: "exposed at an IP", facts: BrokerFacts{Pod: bound, Node: node, LoadBalancer: LoadBalancerFacts{Ingress: "203.0.113.7"}}, exposed: true, address: "203.0.113.7:9094"},
		{name: "exposed at an IPv6", facts: BrokerFacts{Pod: bound, Node: node, LoadBalancer: LoadBalancerFacts{Ingress: "2001:db8::7"}}, exposed: true, address: "[2001:db8::7]:9094"},
		{name: "still on a node port", facts: BrokerFacts{Pod: onNodePort, Node: node, LoadBalancer: LoadBalancerFacts{Ingress: "203.0.113.7"}},
			transient: true, reason: "still listens on a node port"},
		{name: "Service not ours", facts: BrokerFacts{Pod: bound, Node: node, ServiceProblem: "Service kafka-0-external exists and is not brokerport's"},
			reason: "is not brokerport's"},
		{name: "not bound", facts: BrokerFacts{Pod: &corev1.Pod{}, LoadBalancer: LoadBalancerFacts{Ingress: "203.0.113.7"}}, transient: true, reason: "not scheduled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ObserveBroker(cfg, "kafka", 0, tc.facts)
			assert.Equal(t, tc.exposed, got.Exposed)
			assert.Equal(t, tc.transient, got.Transient)
			assert.Contains(t, got.Reason, tc.reason)
			assert.Equal(t, tc.address, got.Address(0))
		})
	}
}

// A load balancer may give several addresses: the first of the StatefulSet's ip-family, a
// hostname only when it gives no IP (hostnames have no family), none when no IP is of the family.
func TestIngressHostByFamily(t *testing.T) {
	svc := &corev1.Service{Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{
		{IP: "203.0.113.7"}, {IP: "2001:db8::7"},
	}}}}
	assert.Equal(t, "203.0.113.7", IngressHost(svc, ""))
	assert.Equal(t, "203.0.113.7", IngressHost(svc, IPv4))
	assert.Equal(t, "2001:db8::7", IngressHost(svc, IPv6))
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.7"}}
	assert.Empty(t, IngressHost(svc, IPv6), "no IPv6 address: none, not the IPv4 one")
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{Hostname: "b0.elb.example.com"}}
	assert.Equal(t, "b0.elb.example.com", IngressHost(svc, IPv6))
	svc.Status.LoadBalancer.Ingress = nil
	assert.Empty(t, IngressHost(svc, ""))
}
