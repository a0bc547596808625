package patches

import (
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// apiServer replays a plan as the API server's nodePort allocator would: a Service's create or
// update fails when it claims a port another Service (of the plan, or foreign) holds. It returns
// the Services' ports at the end.
func apiServer(t testing.TB, in ServicePlanInput, plan ServicePlan) map[string][]int32 {
	t.Helper()
	state := maps.Clone(in.Current)
	if state == nil {
		state = map[string][]int32{}
	}
	for _, s := range plan.Steps {
		switch s.Op {
		case OpDelete:
			require.Contains(t, state, s.Name, "deleting a Service that does not exist: %+v", plan.Steps)
			delete(state, s.Name)
			continue
		case OpCreate:
			require.NotContains(t, state, s.Name, "creating a Service that exists: %+v", plan.Steps)
		case OpUpdate:
			require.Contains(t, state, s.Name, "updating a Service that does not exist: %+v", plan.Steps)
		}
		require.Contains(t, in.Target, s.Name, "writing a Service that is not wanted")
		for _, p := range in.Target[s.Name] {
			if holder, ok := in.Foreign[p]; ok {
				require.Failf(t, "port held", "%s %s claims %d, held by %s: %+v", s.Op, s.Name, p, holder, plan.Steps)
			}
			for other, ports := range state {
				if other != s.Name && slices.Contains(ports, p) {
					require.Failf(t, "port held", "%s %s claims %d, held by %s: %+v", s.Op, s.Name, p, other, plan.Steps)
				}
			}
		}
		state[s.Name] = in.Target[s.Name]
	}
	return state
}

// checkPlan replays the plan and checks that every Service not blocked ends at its target, no
// surplus Service is left, and a Service is blocked only by a port someone really holds.
func checkPlan(t testing.TB, in ServicePlanInput) ServicePlan {
	t.Helper()
	plan := PlanServices(in)
	end := apiServer(t, in, plan)
	for name, want := range in.Target {
		if b, blocked := plan.Blocked[name]; blocked {
			assert.Contains(t, want, b.Port, "%s blocked by a port it does not want", name)
			continue
		}
		assert.Equal(t, want, end[name], "Service %s at the end of %+v", name, plan.Steps)
	}
	for name := range end {
		_, wanted := in.Target[name]
		assert.True(t, wanted, "surplus Service %s left after %+v", name, plan.Steps)
	}
	return plan
}

func TestPlanServices(t *testing.T) {
	// Three brokers, two listeners, block 30000: broker i holds 30000+2i, 30001+2i.
	twoListeners := map[string][]int32{"r-0": {30000, 30001}, "r-1": {30002, 30003}, "r-2": {30004, 30005}}
	threeListeners := map[string][]int32{"r-0": {30000, 30001, 30002}, "r-1": {30003, 30004, 30005}, "r-2": {30006, 30007, 30008}}
	tests := map[string]struct {
		in          ServicePlanInput
		wantSteps   []ServiceStep
		wantBlocked map[string]PortHolder
	}{
		"nothing to do": {
			in: ServicePlanInput{Current: twoListeners, Target: twoListeners},
		},
		"first opt-in creates in order": {
			in:        ServicePlanInput{Target: twoListeners},
			wantSteps: []ServiceStep{{OpCreate, "r-0"}, {OpCreate, "r-1"}, {OpCreate, "r-2"}},
		},
		"listener added: each Service moves after the one whose old ports it takes": {
			in: ServicePlanInput{Current: twoListeners, Target: threeListeners},
			// r-0 takes 30002 from r-1, r-1 takes 30004-30005 from r-2: the last moves first.
			wantSteps: []ServiceStep{{OpUpdate, "r-2"}, {OpUpdate, "r-1"}, {OpUpdate, "r-0"}},
		},
		"listener removed": {
			in:        ServicePlanInput{Current: threeListeners, Target: twoListeners},
			wantSteps: []ServiceStep{{OpUpdate, "r-0"}, {OpUpdate, "r-1"}, {OpUpdate, "r-2"}},
		},
		"listeners reordered within each Service": {
			in: ServicePlanInput{
				Current: map[string][]int32{"r-0": {30000, 30001}, "r-1": {30002, 30003}},
				Target:  map[string][]int32{"r-0": {30001, 30000}, "r-1": {30003, 30002}},
			},
			wantSteps: []ServiceStep{{OpUpdate, "r-0"}, {OpUpdate, "r-1"}},
		},
		"two Services swap ports: one is deleted and created again": {
			in: ServicePlanInput{
				Current: map[string][]int32{"r-0": {30000}, "r-1": {30001}},
				Target:  map[string][]int32{"r-0": {30001}, "r-1": {30000}},
			},
			wantSteps: []ServiceStep{{OpDelete, "r-0"}, {OpUpdate, "r-1"}, {OpCreate, "r-0"}},
		},
		"scale down deletes the surplus first": {
			in:        ServicePlanInput{Current: twoListeners, Target: map[string][]int32{"r-0": {30000, 30001}}},
			wantSteps: []ServiceStep{{OpDelete, "r-1"}, {OpDelete, "r-2"}},
		},
		"a port held by another namespace blocks that broker only": {
			in: ServicePlanInput{
				Current: map[string][]int32{"r-0": {30000, 30001}},
				Target:  twoListeners,
				Foreign: map[int32]string{30003: "Service other/squat"},
			},
			wantSteps:   []ServiceStep{{OpCreate, "r-2"}},
			wantBlocked: map[string]PortHolder{"r-1": {Port: 30003, Holder: "Service other/squat"}},
		},
		"a blocked Service in the way of another is deleted": {
			in: ServicePlanInput{
				Current: twoListeners,
				Target:  threeListeners,
				Foreign: map[int32]string{30006: "Service other/squat"},
			},
			wantSteps:   []ServiceStep{{OpDelete, "r-2"}, {OpUpdate, "r-1"}, {OpUpdate, "r-0"}},
			wantBlocked: map[string]PortHolder{"r-2": {Port: 30006, Holder: "Service other/squat"}},
		},
		"block moved (max-brokers raised): old and new blocks overlap": {
			in: ServicePlanInput{
				Current: map[string][]int32{"r-0": {30000}, "r-1": {30001}, "r-2": {30002}},
				Target:  map[string][]int32{"r-0": {30002}, "r-1": {30003}, "r-2": {30004}},
			},
			wantSteps: []ServiceStep{{OpUpdate, "r-1"}, {OpUpdate, "r-2"}, {OpUpdate, "r-0"}},
		},
		"only a port's name changed": {
			in: ServicePlanInput{
				Current: map[string][]int32{"r-0": {30000}},
				Target:  map[string][]int32{"r-0": {30000}},
				Stale:   map[string]bool{"r-0": true},
			},
			wantSteps: []ServiceStep{{OpUpdate, "r-0"}},
		},
		"targets that share a port (bad input) end, blocked": {
			in: ServicePlanInput{
				Target: map[string][]int32{"r-0": {30000}, "r-1": {30000}},
			},
			wantSteps:   []ServiceStep{{OpCreate, "r-0"}},
			wantBlocked: map[string]PortHolder{"r-1": {Port: 30000, Holder: "Service r-0"}},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			plan := PlanServices(tc.in)
			assert.Equal(t, tc.wantSteps, plan.Steps)
			if tc.wantBlocked == nil {
				tc.wantBlocked = map[string]PortHolder{}
			}
			assert.Equal(t, tc.wantBlocked, plan.Blocked)
			if name != "targets that share a port (bad input) end, blocked" {
				checkPlan(t, tc.in)
			}
		})
	}
}

// FuzzPlanServices checks on random moves that a plan never claims a held port and always ends
// at the target, but for the Services a foreign port blocks.
func FuzzPlanServices(f *testing.F) {
	f.Add(uint64(1), uint8(3), uint8(2), uint8(3), uint8(0), uint8(0))
	f.Add(uint64(7), uint8(4), uint8(3), uint8(2), uint8(5), uint8(2))
	f.Fuzz(func(t *testing.T, seed uint64, nowBrokers, nowListeners, wantListeners, shift, foreign uint8) {
		const base = 30000
		rng := seed
		next := func(n int) int { // a small deterministic generator: the fuzzer drives the seed
			rng = rng*6364136223846793005 + 1442695040888963407
			return int((rng >> 33) % uint64(n))
		}
		in := ServicePlanInput{Current: map[string][]int32{}, Target: map[string][]int32{}, Foreign: map[int32]string{}, Stale: map[string]bool{}}
		layout := func(into map[string][]int32, brokers, listeners int, first int32, perm bool) {
			for i := range brokers {
				var ports []int32
				for l := range listeners {
					ports = append(ports, first+int32(i*listeners+l))
				}
				if perm && len(ports) > 1 && next(3) == 0 {
					ports[0], ports[len(ports)-1] = ports[len(ports)-1], ports[0]
				}
				into[fmt.Sprintf("r-%d", i)] = ports
			}
		}
		layout(in.Current, int(nowBrokers%9), 1+int(nowListeners%5), base, true)
		layout(in.Target, 1+next(8), 1+int(wantListeners%5), base+int32(shift%16), true)
		// Some current Services hold arbitrary distinct ports instead (a half-finished move).
		taken := map[int32]bool{}
		for _, name := range slices.Sorted(maps.Keys(in.Current)) {
			if next(4) == 0 {
				var ports []int32
				for range in.Current[name] {
					p := int32(base + next(60))
					for taken[p] {
						p++
					}
					ports = append(ports, p)
				}
				in.Current[name] = ports
			}
			for _, p := range in.Current[name] {
				taken[p] = true
			}
		}
		// Dedupe: every port is held by one Service at most.
		seen := map[int32]string{}
		for _, name := range slices.Sorted(maps.Keys(in.Current)) {
			in.Current[name] = slices.DeleteFunc(in.Current[name], func(p int32) bool {
				if _, dup := seen[p]; dup {
					return true
				}
				seen[p] = name
				return false
			})
		}
		for range int(foreign % 4) {
			p := int32(base + next(60))
			if _, ours := seen[p]; !ours {
				in.Foreign[p] = "Service other/squat"
			}
		}
		for name := range in.Target {
			if next(5) == 0 {
				in.Stale[name] = true
			}
		}
		plan := checkPlan(t, in)
		for name, b := range plan.Blocked {
			_, foreign := in.Foreign[b.Port]
			assert.True(t, foreign, "%s blocked by %d, which nobody else holds", name, b.Port)
		}
	})
}
