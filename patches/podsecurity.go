package patches

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

const (
	// LabelPodSecurityEnforce is the Pod Security admission level a namespace enforces.
	LabelPodSecurityEnforce = "pod-security.kubernetes.io/enforce"
	// AnnotationPodSecurityExempt, on a namespace, says that the API server's PodSecurity
	// admission configuration exempts it, which brokerport cannot see. Only those who may edit
	// namespaces can set it.
	AnnotationPodSecurityExempt = "brokerport.io/pod-security-exempt"
)

// IsPodSecurityKey tells whether a namespace label is one of Pod Security admission's.
func IsPodSecurityKey(k string) bool { return strings.HasPrefix(k, "pod-security.kubernetes.io/") }

// CheckPodSecurity refuses to opt in a StatefulSet in a namespace whose Pod Security level
// forbids hostPorts (baseline and restricted do): every broker pod would be refused, and the
// StatefulSet would sit with none.
func CheckPodSecurity(namespace string, labels, annotations map[string]string) *field.Error {
	level := labels[LabelPodSecurityEnforce]
	if (level != "baseline" && level != "restricted") || annotations[AnnotationPodSecurityExempt] == "true" {
		return nil
	}
	return field.Forbidden(field.NewPath("metadata", "labels").Key(LabelExpose), fmt.Sprintf(
		"namespace %q enforces Pod Security level %q (label %s), which refuses the hostPorts brokerport gives every broker: label the namespace %s=privileged, or, if the API server's PodSecurity configuration exempts it, annotate the namespace %s=true",
		namespace, level, LabelPodSecurityEnforce, LabelPodSecurityEnforce, AnnotationPodSecurityExempt))
}
