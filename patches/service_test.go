package patches

import (
	"testing"

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
