package patches

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// The low-severity findings of issue 13: each test failed before its fix.

// ordinals.start + replicas past int32 wrapped to a negative last ordinal, which passed the
// max-brokers check.
func TestCheckReplicasOrdinalsOverflowInt32(t *testing.T) {
	cfg := Config{Listeners: DefaultListeners, PortBase: 30000, MaxBrokers: 8}
	tests := map[string]struct {
		start, replicas int32
		wantErr         string
	}{
		"within the block":  {start: 0, replicas: 8},
		"start shifts":      {start: 1, replicas: 8, wantErr: "broker ordinal 8 would be past the 8 brokers"},
		"sum overflows":     {start: math.MaxInt32, replicas: 2, wantErr: "broker ordinal 2147483648 (spec.ordinals.start + spec.replicas - 1) is past the 1000 brokers any port block can hold"},
		"both at the limit": {start: math.MaxInt32, replicas: math.MaxInt32, wantErr: "broker ordinal 4294967293 (spec.ordinals.start"},
		"past any block":    {start: 1000, replicas: 1, wantErr: "lower spec.ordinals.start or spec.replicas"},
		"no replicas":       {start: 0, replicas: 0},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			sts := &appsv1.StatefulSet{Spec: appsv1.StatefulSetSpec{
				Replicas: &tc.replicas, Ordinals: &appsv1.StatefulSetOrdinals{Start: tc.start},
			}}
			err := CheckReplicas(sts, cfg)
			if tc.wantErr == "" {
				assert.Nil(t, err)
				return
			}
			require.NotNil(t, err)
			assert.Equal(t, "spec.replicas", err.Field)
			assert.Contains(t, err.Error(), tc.wantErr)
		})
	}
}

func sidecarPod(sidecar corev1.Container) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "kafka-0",
			Labels:      map[string]string{LabelExpose: ExposeValue, LabelCluster: "kafka"},
			Annotations: map[string]string{AnnotationPortBase: "30000"}},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "setup"}, sidecar},
			Containers:     []corev1.Container{{Name: "kafka", Ports: []corev1.ContainerPort{{ContainerPort: 9094}}}},
		},
	}
}

// A native sidecar (an init container with restartPolicy: Always) runs beside the broker, so its
// hostPorts and port names conflict with the broker's like a container's.
func TestMutatePodSidecarConflicts(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	tests := map[string]struct {
		sidecar   corev1.Container
		wantField string
		wantErr   string
	}{
		"sidecar holds the broker's hostPort": {
			sidecar:   corev1.Container{Name: "proxy", RestartPolicy: &always, Ports: []corev1.ContainerPort{{ContainerPort: 8080, HostPort: 30000}}},
			wantField: "spec.initContainers[1].ports[0].hostPort",
			wantErr:   `hostPort 30000 is broker 0's external port for listener "kafka"; remove it`,
		},
		"sidecar's port has the listener's name": {
			sidecar:   corev1.Container{Name: "proxy", RestartPolicy: &always, Ports: []corev1.ContainerPort{{Name: "kafka", ContainerPort: 8080}}},
			wantField: "spec.initContainers[1].ports[0].name",
			wantErr:   "this name is taken",
		},
		// A plain init container has ended before the broker starts: its ports are no conflict.
		"plain init container": {
			sidecar: corev1.Container{Name: "proxy", Ports: []corev1.ContainerPort{{Name: "kafka", ContainerPort: 8080, HostPort: 30000}}},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			pod := sidecarPod(tc.sidecar)
			if name == "sidecar's port has the listener's name" {
				pod.Spec.Containers[0].Ports = nil // brokerport adds a port entry named after the listener
			}
			errs := MutatePod(pod, nil, DefaultOptions())
			if tc.wantErr == "" {
				require.Empty(t, errs)
				return
			}
			require.Len(t, errs, 1)
			assert.Equal(t, tc.wantField, errs[0].Field)
			assert.Contains(t, errs[0].Error(), tc.wantErr)
		})
	}
}

// A broker with hostNetwork binds the node's ports itself: brokerport cannot map a per-broker
// hostPort to its containerPort. Before, the pod webhook reported the hostPort the API server
// defaults (= containerPort under hostNetwork) as "an explicit hostPort to remove", and the
// StatefulSet was admitted.
func TestHostNetworkRefused(t *testing.T) {
	t.Run("pod", func(t *testing.T) {
		pod := sidecarPod(corev1.Container{Name: "proxy"})
		pod.Spec.HostNetwork = true
		pod.Spec.Containers[0].Ports[0].HostPort = 9094 // the API server's defaulting under hostNetwork
		errs := MutatePod(pod, nil, DefaultOptions())
		require.Len(t, errs, 1)
		assert.Equal(t, field.ErrorTypeForbidden, errs[0].Type)
		assert.Equal(t, "spec.hostNetwork", errs[0].Field)
		assert.Contains(t, errs[0].Detail, "remove hostNetwork")
		assert.Less(t, len(errs[0].Error()), 300)
	})
	t.Run("statefulset", func(t *testing.T) {
		sts := &appsv1.StatefulSet{
			ObjectMeta: metav1.ObjectMeta{Name: "kafka", Labels: map[string]string{LabelExpose: ExposeValue}},
			Spec: appsv1.StatefulSetSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
				HostNetwork: true, Containers: []corev1.Container{{Name: "kafka"}},
			}}},
		}
		errs := MutateStatefulSet(sts, NewPortSet(), DefaultOptions())
		require.Len(t, errs, 1)
		assert.Equal(t, "spec.template.spec.hostNetwork", errs[0].Field)
		assert.Contains(t, errs[0].Detail, "remove hostNetwork")
	})
	t.Run("statefulset not opted in", func(t *testing.T) {
		sts := &appsv1.StatefulSet{Spec: appsv1.StatefulSetSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{HostNetwork: true}}}}
		assert.Empty(t, MutateStatefulSet(sts, NewPortSet(), DefaultOptions()))
	})
}
