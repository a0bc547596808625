package patches

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/stretchr/testify/assert"
)

func TestBrokerServiceOrdinal(t *testing.T) {
	for name, want := range map[string]int{"redpanda-0-external": 0, "redpanda-12-external": 12} {
		got, ok := BrokerServiceOrdinal(name, "redpanda")
		assert.True(t, ok, name)
		assert.Equal(t, want, got, name)
	}
	for _, name := range []string{"redpanda-0", "redpanda-x-external", "other-1-external", "redpanda-01-external"} {
		_, ok := BrokerServiceOrdinal(name, "redpanda")
		assert.False(t, ok, name)
	}
}

func TestBrokerServiceNameFitsAServiceName(t *testing.T) {
	long := strings.Repeat("a", 63) // the longest StatefulSet name brokerport accepts
	for _, cluster := range []string{"redpanda", long, long[:52], long[:53], long[:62] + "b"} {
		for _, ordinal := range []int{0, 7, 999} {
			name := BrokerServiceName(cluster, ordinal)
			assert.Empty(t, validation.IsDNS1035Label(name), "%s: %q", cluster, name)
			got, ok := BrokerServiceOrdinal(name, cluster)
			assert.True(t, ok, name)
			assert.Equal(t, ordinal, got, name)
		}
	}
	assert.Equal(t, "redpanda-3-external", BrokerServiceName("redpanda", 3), "short names are kept as they are")
	assert.NotEqual(t, BrokerServiceName(long, 1), BrokerServiceName(long[:62]+"b", 1), "two long names that share a prefix")
}
