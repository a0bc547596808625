package patches

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"
)

const (
	// GateContainer holds a broker back until its host annotation is present: a broker bound
	// while the binding webhook was unreachable starts only after the controller's repair, never
	// advertising an empty host.
	GateContainer = "brokerport-wait-address"
	gateVolume    = "brokerport-address"
	gateMountPath = "/etc/brokerport"
	// GateHostFile is where the gate reads the host annotation, through a downward-API volume.
	GateHostFile = gateMountPath + "/host"
)

// The gate's default requests and limits: it reads one file every few seconds.
const (
	DefaultGateCPU    = "10m"
	DefaultGateMemory = "32Mi"
)

// GateResources are requests equal to limits (a quota on either is satisfied, and the init
// container adds nothing to the pod's effective requests beyond them).
func GateResources(cpu, memory string) corev1.ResourceRequirements {
	list := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(memory)}
	return corev1.ResourceRequirements{Requests: list, Limits: list.DeepCopy()}
}

// addGate puts the gate first among the init containers (so that the others, which may read
// BROKERPORT_HOST, start after it) with the downward-API volume it reads.
// With tls, it also waits until the certificate Secret mounted at TLSDir names that host.
func addGate(pod *corev1.Pod, image string, resources corev1.ResourceRequirements, tls bool) {
	args := []string{"wait-address", "--file", GateHostFile}
	if tls {
		args = append(args, "--tls-dir", TLSDir)
	}
	gate := corev1.Container{
		Name:         GateContainer,
		Image:        image,
		Args:         args,
		VolumeMounts: []corev1.VolumeMount{{Name: gateVolume, MountPath: gateMountPath, ReadOnly: true}},
		Resources:    *resources.DeepCopy(),
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             ptr.To(true),
			RunAsUser:                ptr.To[int64](65532),
			ReadOnlyRootFilesystem:   ptr.To(true),
			AllowPrivilegeEscalation: ptr.To(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
	}
	pod.Spec.InitContainers = slices.DeleteFunc(pod.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == GateContainer })
	pod.Spec.InitContainers = slices.Insert(pod.Spec.InitContainers, 0, gate)

	volume := corev1.Volume{Name: gateVolume, VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
		Items: []corev1.DownwardAPIVolumeFile{{Path: "host", FieldRef: &corev1.ObjectFieldSelector{FieldPath: annotationRef(AnnotationHost)}}},
	}}}
	if i := slices.IndexFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == gateVolume }); i >= 0 {
		pod.Spec.Volumes[i] = volume
	} else {
		pod.Spec.Volumes = append(pod.Spec.Volumes, volume)
	}
}
