package patches

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestAdviseStatefulSet(t *testing.T) {
	broker := func(image string, mod func(*corev1.Container)) corev1.Container {
		c := corev1.Container{Name: "broker", Image: image, Ports: []corev1.ContainerPort{{Name: "client", ContainerPort: 9092}}}
		if mod != nil {
			mod(&c)
		}
		return c
	}
	tests := map[string]struct {
		annotations map[string]string
		containers  []corev1.Container
		init        []corev1.Container
		want        string // "" for no advice
	}{
		"apache/kafka":             {containers: []corev1.Container{broker("apache/kafka:4.0.0", nil)}, want: "brokerport.io/flavor=kafka"},
		"confluentinc/cp-kafka":    {containers: []corev1.Container{broker("confluentinc/cp-kafka:7.9.0", nil)}, want: "brokerport.io/flavor=kafka"},
		"bitnami/kafka":            {containers: []corev1.Container{broker("docker.io/bitnami/kafka:4.0.0", nil)}, want: "brokerport.io/flavor=bitnami"},
		"redpanda":                 {containers: []corev1.Container{broker("docker.redpanda.com/redpandadata/redpanda:v26.1.1", nil)}, want: "brokerport.io/flavor=redpanda"},
		"redpanda from Docker Hub": {containers: []corev1.Container{broker("redpandadata/redpanda:v26.1.1", nil)}, want: "brokerport.io/flavor=redpanda"},
		"unknown image":            {containers: []corev1.Container{broker("example.com/broker:1", nil)}, want: "make the broker advertise $(BROKERPORT_KAFKA_ADDRESS) on the listener of containerPort 9094"},
		"flavor set": {annotations: map[string]string{AnnotationFlavor: "kafka"}, containers: []corev1.Container{broker("apache/kafka:4.0.0", func(c *corev1.Container) {
			c.Env = []corev1.EnvVar{{Name: "KAFKA_LISTENERS", Value: "A://:9092"}, {Name: "KAFKA_ADVERTISED_LISTENERS", Value: "A://a:9092"}, {Name: "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", Value: "A:PLAINTEXT"}}
		})}},
		"advertise-env set": {annotations: map[string]string{AnnotationAdvertiseEnv: "ADV"}, containers: []corev1.Container{broker("apache/kafka:4.0.0", func(c *corev1.Container) {
			c.Env = []corev1.EnvVar{{Name: "ADV", Value: "A://a:9092"}}
		})}},
		"env refers to brokerport": {containers: []corev1.Container{broker("apache/kafka:4.0.0", func(c *corev1.Container) {
			c.Env = []corev1.EnvVar{{Name: "KAFKA_ADVERTISED_LISTENERS", Value: "EXTERNAL://$(BROKERPORT_KAFKA_ADDRESS)"}}
		})}},
		"args refer to brokerport": {containers: []corev1.Container{broker("apache/kafka:4.0.0", func(c *corev1.Container) {
			c.Args = []string{"--override", "advertised.listeners=EXTERNAL://${BROKERPORT_KAFKA_ADDRESS}"}
		})}},
		"an init script refers to brokerport": {containers: []corev1.Container{broker("apache/kafka:4.0.0", nil)},
			init: []corev1.Container{{Name: "config", Image: "busybox", Command: []string{"sh", "-c", "echo advertised.listeners=EXTERNAL://$BROKERPORT_KAFKA_ADDRESS >> /config/server.properties"}}}},
		"a sidecar's reference does not count": {containers: []corev1.Container{broker("apache/kafka:4.0.0", nil), {Name: "exporter", Image: "exporter", Args: []string{"$(BROKERPORT_KAFKA_ADDRESS)"}}}, want: "flavor=kafka"},
		"brokerport's own variables do not count": {containers: []corev1.Container{broker("apache/kafka:4.0.0", func(c *corev1.Container) {
			c.Env = []corev1.EnvVar{{Name: "BROKERPORT_KAFKA_ADDRESS", Value: "$(BROKERPORT_HOST_URI):$(BROKERPORT_KAFKA_PORT)"}}
		})}, want: "flavor=kafka"},
		"brokers that would be refused": {annotations: map[string]string{AnnotationFlavor: "kafka"}, containers: []corev1.Container{broker("apache/kafka:4.0.0", nil)},
			want: "brokerport will refuse its brokers as they are created: spec.containers[0].env: Required value"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			annotations := map[string]string{AnnotationPortBase: "30000"}
			for k, v := range tc.annotations {
				annotations[k] = v
			}
			sts := &appsv1.StatefulSet{
				ObjectMeta: metav1.ObjectMeta{Name: "kafka", Labels: map[string]string{LabelExpose: ExposeValue}, Annotations: annotations},
				Spec: appsv1.StatefulSetSpec{Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{LabelExpose: ExposeValue, LabelCluster: "kafka"}, Annotations: annotations},
					Spec:       corev1.PodSpec{Containers: tc.containers, InitContainers: tc.init},
				}},
			}
			cfg, errs := ParseConfig(annotations, nil, DefaultOptions())
			require.Empty(t, errs)
			got := AdviseStatefulSet(sts, cfg, DefaultOptions())
			if tc.want == "" {
				assert.Empty(t, got)
				return
			}
			assert.Contains(t, got, tc.want)
			assert.Less(t, len(got), 1024, "kubectl prints it whole")
		})
	}
}

func TestAdviseStatefulSetNotOptedIn(t *testing.T) {
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "kafka"}, Spec: appsv1.StatefulSetSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "k", Image: "apache/kafka"}}}}}}
	assert.Empty(t, AdviseStatefulSet(sts, Config{Listeners: DefaultListeners, PortBase: 30000, MaxBrokers: 8}, DefaultOptions()))
}
