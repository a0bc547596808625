package patches

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestEditedConfig(t *testing.T) {
	sts := map[string]string{AnnotationListeners: "kafka=9094", AnnotationPortBase: "30000"}
	assert.Empty(t, EditedConfig(map[string]string{AnnotationListeners: "kafka=9094", AnnotationPortBase: "30000", AnnotationHost: "10.0.0.1", "other": "x"}, sts))
	assert.Equal(t, []string{AnnotationPortBase, AnnotationHostTemplate},
		EditedConfig(map[string]string{AnnotationListeners: "kafka=9094", AnnotationPortBase: "30050", AnnotationHostTemplate: "attacker.example.com"}, sts))
	assert.Equal(t, []string{AnnotationListeners}, EditedConfig(map[string]string{AnnotationPortBase: "30000"}, sts))
}
