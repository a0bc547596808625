package patches

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"
)

// Issue 27, item 5: every value a StatefulSet's configuration asks for is bounded, whatever the
// strategy, and a denial names the annotation and the bound.

// manyListeners is a brokerport.io/listeners value of n distinct, valid listeners
// ("l0=1,l1=2,..."), n up to 65535.
func manyListeners(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "l%d=%d", i, i+1)
	}
	return b.String()
}

func parseErr(t *testing.T, annotations map[string]string) string {
	t.Helper()
	_, errs := ParseConfig(annotations, field.NewPath("metadata", "annotations"), DefaultOptions())
	require.NotEmpty(t, errs)
	msg := errs.ToAggregate().Error()
	assert.Less(t, len(msg), 400, "a denial stays short: %s", msg)
	return msg
}

func TestListenersBounded(t *testing.T) {
	_, errs := ParseConfig(map[string]string{AnnotationListeners: manyListeners(MaxListeners)}, nil, DefaultOptions())
	assert.Empty(t, errs, "16 listeners are accepted")

	msg := parseErr(t, map[string]string{AnnotationListeners: manyListeners(MaxListeners + 1)})
	assert.Contains(t, msg, "metadata.annotations[brokerport.io/listeners]")
	assert.Contains(t, msg, "names 17 listeners; at most 16")

	// The annotation seen: 21,402 listeners in 250 KiB, admitted before.
	huge := manyListeners(21402)
	require.InDelta(t, 250<<10, len(huge), 8<<10)
	msg = parseErr(t, map[string]string{AnnotationListeners: huge})
	assert.Contains(t, msg, "metadata.annotations[brokerport.io/listeners]")
	assert.Contains(t, msg, fmt.Sprintf("is %d bytes; at most 1024", len(huge)))
}

// Each configuration annotation has a size bound, checked before its value is read.
func TestEveryConfigAnnotationSizeBounded(t *testing.T) {
	for _, key := range boundedKeys {
		t.Run(key, func(t *testing.T) {
			annotations := map[string]string{key: strings.Repeat("x", valueLimit(key)+1)}
			if key != AnnotationStrategy {
				annotations[AnnotationStrategy] = string(StrategyLoadBalancer) // so that no loadbalancer-only error comes too
			}
			msg := parseErr(t, annotations)
			assert.Contains(t, msg, "metadata.annotations["+key+"]")
			assert.Contains(t, msg, fmt.Sprintf("is %d bytes; at most %d", valueLimit(key)+1, valueLimit(key)))
		})
	}
}

// The duplicate check is a set: a duplicate is found whatever its distance.
func TestDuplicateListenersFoundFarApart(t *testing.T) {
	_, err := parseListeners(manyListeners(5000) + ",l7=9999")
	assert.EqualError(t, err, `listener "l7" is named twice`)
	_, err = parseListeners(manyListeners(5000) + ",far=3")
	assert.EqualError(t, err, `listeners "l2" and "far" share containerPort 3`)
}

func loadBalancedSTS(replicas int32, listeners string) *appsv1.StatefulSet {
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "kafka", Namespace: "team-a", Labels: map[string]string{LabelExpose: ExposeValue},
			Annotations: map[string]string{AnnotationStrategy: string(StrategyLoadBalancer), AnnotationListeners: listeners}},
		Spec: appsv1.StatefulSetSpec{Replicas: ptr.To(replicas)},
	}
}

// max-brokers sizes a block of the band, which the loadbalancer strategy does not take; what
// bounds it is what it costs, its load-balancer ports (nodePorts of the cluster's range).
func TestLoadBalancerPortsBounded(t *testing.T) {
	seen := loadBalancedSTS(1000, "kafka=9094,http=8083,admin=9644")
	errs := MutateStatefulSet(seen, PortSet{}, DefaultOptions())
	require.Len(t, errs, 1)
	msg := errs.ToAggregate().Error()
	assert.Contains(t, msg, "spec.replicas")
	assert.Contains(t, msg, "1000 brokers × 3 listeners (brokerport.io/listeners) ask for 3000 load-balancer ports")
	assert.Contains(t, msg, "at most 256")

	assert.Empty(t, MutateStatefulSet(loadBalancedSTS(128, "kafka=9094,http=8083"), PortSet{}, DefaultOptions()), "256 ports: at the bound")
	assert.Len(t, MutateStatefulSet(loadBalancedSTS(129, "kafka=9094,http=8083"), PortSet{}, DefaultOptions()), 1, "258 ports")
	assert.Empty(t, MutateStatefulSet(loadBalancedSTS(20, "kafka=9094"), PortSet{}, DefaultOptions()), "max-brokers (8 by default) is not a bound of this strategy")

	cfg, errs := ParseConfig(loadBalancedSTS(0, "kafka=9094,http=8083").Annotations, nil, DefaultOptions())
	require.Empty(t, errs)
	scaled := loadBalancedSTS(200, "kafka=9094,http=8083")
	err := CheckReplicas(scaled, cfg)
	require.NotNil(t, err, "the scale subresource is checked with the same bound")
	assert.Contains(t, err.Error(), "400 load-balancer ports")
}

func TestAllocateLoadBalancerNodePorts(t *testing.T) {
	for name, tc := range map[string]struct {
		annotations map[string]string
		noNodePorts bool
		err         string
	}{
		"default: the load balancer routes to nodePorts": {annotations: map[string]string{AnnotationStrategy: "loadbalancer"}},
		"true":  {annotations: map[string]string{AnnotationStrategy: "loadbalancer", AnnotationAllocateLoadBalancerNodePorts: "true"}},
		"false": {annotations: map[string]string{AnnotationStrategy: "loadbalancer", AnnotationAllocateLoadBalancerNodePorts: "false"}, noNodePorts: true},
		"not a boolean": {annotations: map[string]string{AnnotationStrategy: "loadbalancer", AnnotationAllocateLoadBalancerNodePorts: "no"},
			err: `brokerport.io/allocate-load-balancer-node-ports]: Invalid value: "no": accepted values: "true"`},
		"without the strategy": {annotations: map[string]string{AnnotationAllocateLoadBalancerNodePorts: "false"}, err: "applies to brokerport.io/strategy=loadbalancer only"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg, errs := ParseConfig(tc.annotations, field.NewPath("metadata", "annotations"), DefaultOptions())
			if tc.err != "" {
				require.Len(t, errs, 1)
				assert.Contains(t, errs.ToAggregate().Error(), tc.err)
				return
			}
			require.Empty(t, errs)
			assert.Equal(t, tc.noNodePorts, cfg.NoNodePorts)

			sts := loadBalancedSTS(1, "kafka=9094")
			sts.Annotations = tc.annotations
			svc := BrokerService(sts, cfg, 0)
			assert.Equal(t, tc.noNodePorts, AsksNoNodePorts(svc), "recorded where brokerport's cache sees it")
			if tc.noNodePorts {
				assert.Equal(t, ptr.To(false), svc.Spec.AllocateLoadBalancerNodePorts)
			} else {
				assert.Nil(t, svc.Spec.AllocateLoadBalancerNodePorts, "left to the API server's default, as before")
				assert.Empty(t, svc.Annotations)
			}

			// The Service webhook makes a broker Service the same.
			user := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{LabelExpose: ExposeValue, LabelCluster: "kafka"}},
				Spec: corev1.ServiceSpec{Selector: map[string]string{labelPodName: "kafka-0"}, Ports: []corev1.ServicePort{{Name: "kafka", Port: 9094}}}}
			require.Empty(t, MutateService(user, sts, DefaultOptions()))
			assert.Equal(t, svc.Spec.AllocateLoadBalancerNodePorts, user.Spec.AllocateLoadBalancerNodePorts)
		})
	}
}

func TestBandNodePorts(t *testing.T) {
	svc := &corev1.Service{Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{
		{Name: "kafka", NodePort: 31000}, {Name: "http", NodePort: 30085}, {Name: "admin"}, {Name: "sr", NodePort: 30000},
	}}}
	got := BandNodePorts(svc, DefaultPortRange)
	assert.Equal(t, []corev1.ServicePort{{Name: "http", NodePort: 30085}, {Name: "sr", NodePort: 30000}}, got)
}
