package patches

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func single(p int32, owner string) Reservation {
	return Reservation{PortRange: PortRange{First: p, Last: p}, Owner: owner}
}

func block(first, last int32, owner string) Reservation {
	return Reservation{PortRange: PortRange{First: first, Last: last}, Owner: owner}
}

func TestAllocateBlock(t *testing.T) {
	within := PortRange{First: 30000, Last: 30085}
	tests := map[string]struct {
		inUse   []Reservation
		size    int32
		want    int32
		wantErr string
	}{
		"empty cluster takes the first port":    {size: 8, want: 30000},
		"after another block":                   {inUse: []Reservation{block(30000, 30007, "a")}, size: 8, want: 30008},
		"a gap too small is skipped":            {inUse: []Reservation{block(30000, 30007, "a"), single(30012, "svc")}, size: 8, want: 30013},
		"a gap that fits exactly is taken":      {inUse: []Reservation{block(30000, 30007, "a"), block(30016, 30023, "b")}, size: 8, want: 30008},
		"unsorted input is sorted":              {inUse: []Reservation{block(30016, 30023, "b"), block(30000, 30007, "a")}, size: 8, want: 30008},
		"overlapping reservations":              {inUse: []Reservation{block(30000, 30030, "a"), block(30004, 30010, "b")}, size: 4, want: 30031},
		"ports outside the range do not matter": {inUse: []Reservation{single(29999, "x"), single(30086, "y")}, size: 86, want: 30000},
		"the last block that fits":              {inUse: []Reservation{block(30000, 30077, "a")}, size: 8, want: 30078},
		"exhausted": {
			inUse: []Reservation{block(30000, 30078, "a")}, size: 8,
			wantErr: "no block of 8 free ports is left in brokerport's port range 30000-30085 (86 ports; held by a 30000-30078); to fix: widen brokerport's --port-range (inside the API server's --service-node-port-range), lower brokerport.io/max-brokers or the number of listeners, or opt out a StatefulSet that no longer needs its block",
		},
		"bigger than the range": {size: 87, wantErr: "no block of 87 free ports is left in brokerport's port range 30000-30085 (86 ports; none held)"},
		"many holders, the first few said": {
			inUse: []Reservation{block(30000, 30009, "a"), block(30010, 30019, "b"), block(30020, 30029, "c"), block(30030, 30039, "d"), block(30040, 30049, "e"), block(30050, 30085, "f"), block(31000, 31000, "outside")},
			size:  1, wantErr: "(86 ports; held by a 30000-30009, b 30010-30019, c 30020-30029, d 30030-30039 and 2 more)",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := AllocateBlock(NewPortSet(tc.inUse...), within, tc.size)
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestPortSetConflict(t *testing.T) {
	set := NewPortSet(block(30000, 30031, "StatefulSet a/long"), single(30040, "Service b/web"), block(30050, 30057, "StatefulSet c/x"))
	tests := map[string]struct {
		r         PortRange
		wantOwner string
	}{
		"inside a long block":        {PortRange{30020, 30021}, "StatefulSet a/long"},
		"touching a single port":     {PortRange{30033, 30040}, "Service b/web"},
		"in a gap":                   {PortRange{30032, 30039}, ""},
		"overlapping a block's tail": {PortRange{30057, 30070}, "StatefulSet c/x"},
		"after everything":           {PortRange{30058, 30085}, ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			res, ok := set.Conflict(tc.r)
			assert.Equal(t, tc.wantOwner != "", ok)
			assert.Equal(t, tc.wantOwner, res.Owner)
		})
	}
}

func TestParsePortRange(t *testing.T) {
	r, err := ParsePortRange("30000-30085")
	require.NoError(t, err)
	assert.Equal(t, PortRange{First: 30000, Last: 30085}, r)
	r, err = ParsePortRange("31000")
	require.NoError(t, err)
	assert.Equal(t, PortRange{First: 31000, Last: 31000}, r)
	for _, bad := range []string{"", "a-b", "30085-30000", "0-10", "1-65536"} {
		_, err := ParsePortRange(bad)
		assert.Error(t, err, bad)
	}
}

func TestPortFormula(t *testing.T) {
	cfg := Config{PortBase: 30011, MaxBrokers: 8, Listeners: []Listener{{"kafka", 9094}, {"http", 8083}, {"schema-registry", 8084}, {"admin", 9645}}}
	assert.Equal(t, int32(30011), cfg.Port(0, 0))
	assert.Equal(t, int32(30018), cfg.Port(1, 3))
	assert.Equal(t, int32(30042), cfg.Port(7, 3))
	assert.Equal(t, PortRange{First: 30011, Last: 30042}, cfg.Block())
}

// The indexed search gives exactly what a port-by-port scan gives, on random sets.
func TestAllocateBlockMatchesAScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 9))
	for round := range 2000 {
		var reservations []Reservation
		for range rng.IntN(30) {
			first := 29990 + rng.Int32N(120)
			reservations = append(reservations, Reservation{PortRange: PortRange{First: first, Last: first + rng.Int32N(6)}})
		}
		within := PortRange{First: 30000 + rng.Int32N(10), Last: 30050 + rng.Int32N(40)}
		size := 1 + rng.Int32N(12)
		want := int32(0)
		for start := within.First; start+size-1 <= within.Last && want == 0; start++ {
			free := true
			for _, r := range reservations {
				if r.First <= start+size-1 && r.Last >= start {
					free = false
				}
			}
			if free {
				want = start
			}
		}
		got, err := AllocateBlock(NewPortSet(reservations...), within, size)
		if want == 0 {
			assert.Error(t, err, "round %d", round)
		} else {
			assert.NoError(t, err, "round %d", round)
		}
		require.Equal(t, want, got, "round %d: %v within %v size %d", round, reservations, within, size)
	}
}
