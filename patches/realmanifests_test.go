package patches

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// realStatefulSet reads one of the public manifests of test/testdata (provenance in their headers).
func realStatefulSet(t *testing.T, path string) *appsv1.StatefulSet {
	t.Helper()
	data, err := os.ReadFile("../test/testdata/" + path)
	require.NoError(t, err)
	sts := &appsv1.StatefulSet{}
	require.NoError(t, yaml.Unmarshal(data, sts))
	return sts
}

// brokerOf makes broker 0 of a StatefulSet opted in with the given annotations.
func brokerOf(sts *appsv1.StatefulSet, annotations map[string]string) *corev1.Pod {
	pod := &corev1.Pod{ObjectMeta: *sts.Spec.Template.ObjectMeta.DeepCopy(), Spec: *sts.Spec.Template.Spec.DeepCopy()}
	pod.Name = sts.Name + "-0"
	pod.Labels[LabelExpose] = "true"
	pod.Labels[LabelCluster] = sts.Name
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	for k, v := range annotations {
		pod.Annotations[k] = v
	}
	return pod
}

// apache/kafka StatefulSets often set no KAFKA_LISTENER_SECURITY_PROTOCOL_MAP (issue 14 met one in
// a chart): Kafka then uses its default map, to which KRaft adds CONTROLLER:PLAINTEXT. flavor kafka
// exposes it (the map written as Kafka's effective default plus EXTERNAL), rather than refuse it.
func TestFlavorKafkaWithoutProtocolMap(t *testing.T) {
	sts := realStatefulSet(t, "kafka/apache-kafka-kraft.statefulset.yaml")
	pod := brokerOf(sts, map[string]string{AnnotationFlavor: "kafka", AnnotationListeners: "external=9094", AnnotationPortBase: "30000"})
	require.Empty(t, MutatePod(pod, nil, DefaultOptions()))
	var protocolMap string
	for _, e := range pod.Spec.Containers[0].Env {
		if e.Name == "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP" {
			protocolMap = e.Value
		}
	}
	for _, want := range []string{"PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT", "EXTERNAL:PLAINTEXT"} {
		assert.Contains(t, strings.Split(protocolMap, ","), want)
	}

	// Applied again, nothing changes.
	again := pod.DeepCopy()
	require.Empty(t, MutatePod(again, nil, DefaultOptions()))
	assert.Equal(t, pod, again)
}

// What Kafka does without the map (KafkaConfig.effectiveListenerSecurityProtocolMap), and where
// brokerport cannot know it and says what to add.
func TestFlavorKafkaEffectiveProtocolMap(t *testing.T) {
	const defaults = "PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL"
	tests := map[string]struct {
		flavor  string
		env     []corev1.EnvVar
		wantMap string // the variable brokerport adds
		wantErr []string
	}{
		"KRaft: controller listeners mapped to PLAINTEXT": {
			env:     []corev1.EnvVar{{Name: "KAFKA_PROCESS_ROLES", Value: "broker,controller"}, {Name: "KAFKA_CONTROLLER_LISTENER_NAMES", Value: "CONTROLLER"}, {Name: "KAFKA_LISTENERS", Value: "PLAINTEXT://:9092,CONTROLLER://:9093"}},
			wantMap: defaults + ",CONTROLLER:PLAINTEXT,EXTERNAL:PLAINTEXT",
		},
		"KRaft broker only: the controller listener is not in listeners but is mapped": {
			env:     []corev1.EnvVar{{Name: "KAFKA_PROCESS_ROLES", Value: "broker"}, {Name: "KAFKA_CONTROLLER_LISTENER_NAMES", Value: "ctrl"}, {Name: "KAFKA_LISTENERS", Value: "PLAINTEXT://:9092"}},
			wantMap: defaults + ",CTRL:PLAINTEXT,EXTERNAL:PLAINTEXT",
		},
		"bitnami": {
			flavor:  "bitnami",
			env:     []corev1.EnvVar{{Name: "KAFKA_CFG_PROCESS_ROLES", Value: "broker,controller"}, {Name: "KAFKA_CFG_CONTROLLER_LISTENER_NAMES", Value: "CONTROLLER"}, {Name: "KAFKA_CFG_LISTENERS", Value: "PLAINTEXT://:9092,CONTROLLER://:9093"}},
			wantMap: defaults + ",CONTROLLER:PLAINTEXT,EXTERNAL:PLAINTEXT",
		},
		"no KRaft: nothing added": {
			env:     []corev1.EnvVar{{Name: "KAFKA_LISTENERS", Value: "PLAINTEXT://:9092,SSL://:9093"}},
			wantMap: defaults + ",EXTERNAL:PLAINTEXT",
		},
		"an SSL listener: Kafka maps no controller listener": {
			env:     []corev1.EnvVar{{Name: "KAFKA_PROCESS_ROLES", Value: "broker,controller"}, {Name: "KAFKA_CONTROLLER_LISTENER_NAMES", Value: "CONTROLLER"}, {Name: "KAFKA_LISTENERS", Value: "SSL://:9092,CONTROLLER://:9093"}},
			wantErr: []string{"spec.containers[0].env", "no security protocol for listener CONTROLLER", "add KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "CONTROLLER:<its security protocol>"},
		},
		"a listener of a name Kafka does not map": {
			env:     []corev1.EnvVar{{Name: "KAFKA_PROCESS_ROLES", Value: "broker,controller"}, {Name: "KAFKA_CONTROLLER_LISTENER_NAMES", Value: "CONTROLLER"}, {Name: "KAFKA_LISTENERS", Value: "INTERNAL://:9092,CONTROLLER://:9093"}},
			wantErr: []string{"no security protocol for listener INTERNAL", `container "kafka"`, "INTERNAL:<its security protocol>"},
		},
		"controller listener names from valueFrom": {
			env: []corev1.EnvVar{{Name: "KAFKA_PROCESS_ROLES", Value: "broker,controller"}, {Name: "KAFKA_LISTENERS", Value: "PLAINTEXT://:9092"},
				{Name: "KAFKA_CONTROLLER_LISTENER_NAMES", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{Key: "names"}}}},
			wantErr: []string{"spec.containers[0].env[3].valueFrom", "depends on KAFKA_CONTROLLER_LISTENER_NAMES", "add KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"},
		},
		"the external listener name is a default one": {
			env:     []corev1.EnvVar{{Name: "KAFKA_LISTENERS", Value: "PLAINTEXT://:9092"}},
			wantErr: []string{"listener name SSL is already used", "brokerport.io/listener-name"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			flavor := tc.flavor
			if flavor == "" {
				flavor = "kafka"
			}
			prefix := Flavor(flavor).envPrefix()
			env := append([]corev1.EnvVar{{Name: prefix + "ADVERTISED_LISTENERS", Value: "PLAINTEXT://kafka-0.kafka:9092"}}, tc.env...)
			annotations := map[string]string{AnnotationFlavor: flavor, AnnotationPortBase: "30000"}
			if name == "the external listener name is a default one" {
				annotations[AnnotationListenerName] = "SSL"
			}
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "kafka-0", Labels: map[string]string{LabelExpose: ExposeValue, LabelCluster: "kafka"}, Annotations: annotations},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "kafka", Image: "apache/kafka:4.1.0", Env: env}}},
			}
			errs := MutatePod(pod, nil, DefaultOptions())
			if tc.wantErr != nil {
				require.NotEmpty(t, errs)
				for _, want := range tc.wantErr {
					assert.Contains(t, errs.ToAggregate().Error(), want)
				}
				return
			}
			require.Empty(t, errs)
			got := pod.Spec.Containers[0].Env
			assert.Equal(t, corev1.EnvVar{Name: prefix + "LISTENER_SECURITY_PROTOCOL_MAP", Value: tc.wantMap}, got[len(got)-1])
		})
	}
}

// The cp-kafka tutorial's StatefulSet exports KAFKA_ADVERTISED_LISTENERS in its command script:
// flavor kafka refuses such brokers, so the advice for it must not be "annotate flavor=kafka"
// but say that the script sets the advertised listeners and must add brokerport's address.
func TestAdviceForAdvertisedListenersSetByScript(t *testing.T) {
	sts := realStatefulSet(t, "kafka/cp-kafka-kraft.statefulset.yaml")
	sts.Labels[LabelExpose] = "true"
	cfg, errs := ParseConfig(map[string]string{AnnotationPortBase: "30000"}, nil, DefaultOptions())
	require.Empty(t, errs)
	advice := AdviseStatefulSet(sts, cfg, DefaultOptions())
	assert.NotContains(t, advice, "annotate the StatefulSet brokerport.io/flavor=kafka")
	assert.Contains(t, advice, "KAFKA_ADVERTISED_LISTENERS")
	assert.Contains(t, advice, `",EXTERNAL://${BROKERPORT_KAFKA_ADDRESS}"`)
	assert.Contains(t, advice, `"EXTERNAL://:9094" to KAFKA_LISTENERS`)
	assert.Contains(t, advice, `"EXTERNAL:PLAINTEXT" to KAFKA_LISTENER_SECURITY_PROTOCOL_MAP`)
	assert.Less(t, len(advice), 1024, "kubectl prints it whole")

	// With the flavor anyway, the refusal names the same way out.
	pod := brokerOf(sts, map[string]string{AnnotationFlavor: "kafka", AnnotationListeners: "external=9094", AnnotationPortBase: "30000"})
	errs = MutatePod(pod, nil, DefaultOptions())
	require.NotEmpty(t, errs)
	assert.Contains(t, errs.ToAggregate().Error(), "script sets KAFKA_ADVERTISED_LISTENERS itself")
	assert.Contains(t, errs.ToAggregate().Error(), `",EXTERNAL://${BROKERPORT_EXTERNAL_ADDRESS}"`)
}
