package patches

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestCheckPodSecurity(t *testing.T) {
	tests := map[string]struct {
		labels, annotations map[string]string
		refused             bool
	}{
		"no label":             {},
		"privileged":           {labels: map[string]string{LabelPodSecurityEnforce: "privileged"}},
		"baseline":             {labels: map[string]string{LabelPodSecurityEnforce: "baseline"}, refused: true},
		"restricted":           {labels: map[string]string{LabelPodSecurityEnforce: "restricted"}, refused: true},
		"warn only":            {labels: map[string]string{"pod-security.kubernetes.io/warn": "restricted"}},
		"baseline, exempt":     {labels: map[string]string{LabelPodSecurityEnforce: "baseline"}, annotations: map[string]string{AnnotationPodSecurityExempt: "true"}},
		"baseline, not exempt": {labels: map[string]string{LabelPodSecurityEnforce: "baseline"}, annotations: map[string]string{AnnotationPodSecurityExempt: "yes"}, refused: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := CheckPodSecurity("kafka", tc.labels, tc.annotations)
			if !tc.refused {
				assert.Nil(t, err)
				return
			}
			if assert.NotNil(t, err) {
				assert.Contains(t, err.Error(), `namespace "kafka" enforces Pod Security level`)
				assert.Contains(t, err.Error(), "pod-security.kubernetes.io/enforce=privileged")
			}
		})
	}
}
