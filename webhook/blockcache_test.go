package webhook

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/brokerport/brokerport/patches"
)

// A version of a StatefulSet (its UID and resourceVersion) is parsed once: a second look gives
// what the first parse found, even were the annotations different (they cannot be, for one
// version); a new version is parsed again.
func TestBlockCacheParsesEachVersionOnce(t *testing.T) {
	c := NewBlockCache()
	sts := stored("team-a", "kafka", "30000", nil)
	sts.UID, sts.ResourceVersion = "uid-1", "10"
	block, holds := c.Block(sts)
	require.True(t, holds)
	assert.Equal(t, patches.PortRange{First: 30000, Last: 30007}, block)

	same := sts.DeepCopy()
	same.Annotations[patches.AnnotationPortBase] = "30040"
	block, _ = c.Block(same)
	assert.Equal(t, patches.PortRange{First: 30000, Last: 30007}, block, "the same version: not parsed again")

	same.ResourceVersion = "11"
	block, _ = c.Block(same)
	assert.Equal(t, patches.PortRange{First: 30040, Last: 30047}, block, "a new version: parsed")

	recreated := same.DeepCopy()
	recreated.UID = "uid-2"
	recreated.Annotations[patches.AnnotationPortBase] = "30080"
	recreated.Annotations[patches.AnnotationMaxBrokers] = "1"
	block, _ = c.Block(recreated)
	assert.Equal(t, patches.PortRange{First: 30080, Last: 30080}, block, "another object of that name: parsed")

	unversioned := stored("team-a", "test", "30016", nil)
	_, _ = c.Block(unversioned)
	unversioned.Annotations[patches.AnnotationPortBase] = "30024"
	block, _ = c.Block(unversioned)
	assert.Equal(t, patches.PortRange{First: 30024, Last: 30031}, block, "no resourceVersion: parsed every time")

	invalid := stored("team-a", "bad", "30000", map[string]string{patches.AnnotationListeners: manyListeners(17)})
	invalid.ResourceVersion = "3"
	_, holds = c.Block(invalid)
	assert.False(t, holds, "a configuration that does not parse holds no block")
}

// The cache keeps entries of StatefulSets no longer listed only while they are few.
func TestBlockCacheForgetsStatefulSetsNoLongerListed(t *testing.T) {
	c := NewBlockCache()
	sets := make([]appsv1.StatefulSet, 40)
	for i := range sets {
		sets[i] = *stored("team-a", fmt.Sprintf("s%d", i), fmt.Sprint(30000+i), map[string]string{patches.AnnotationMaxBrokers: "1"})
		sets[i].ResourceVersion = "1"
	}
	got := c.reservations(sets, types.NamespacedName{Namespace: "team-a", Name: "s0"}, nil)
	assert.Len(t, got, 39, "all but the one admitted")
	assert.Equal(t, "StatefulSet team-a/s1", got[0].Owner)
	assert.Len(t, c.entries, 39)

	c.reservations(sets[:5], types.NamespacedName{}, nil)
	assert.Len(t, c.entries, 5, "39 entries for 5 listed: the others are forgotten")
}
