package patches

import (
	"maps"
	"slices"
)

// ServiceOp is what the controller does to one of a StatefulSet's broker Services.
type ServiceOp string

const (
	OpCreate ServiceOp = "create"
	OpUpdate ServiceOp = "update"
	OpDelete ServiceOp = "delete"
)

// ServiceStep is one write of a plan.
type ServiceStep struct {
	Op   ServiceOp
	Name string
}

// PortHolder says who holds a port a Service needs.
type PortHolder struct {
	Port   int32
	Holder string // e.g. "Service other/squat"
}

// ServicePlanInput is what the plan is computed from: the nodePorts each of the StatefulSet's
// Services holds now and those each should hold, and the ports held by everyone else.
type ServicePlanInput struct {
	// Current holds the nodePorts of every existing Service of the StatefulSet that the plan may
	// change or delete (a Service kept because its broker is still going away is not here: its
	// ports belong in Foreign).
	Current map[string][]int32
	// Target holds the nodePorts of every Service the StatefulSet should have.
	Target map[string][]int32
	// Stale names existing Services of Target that need an update even though their nodePorts
	// are right (a port's name or targetPort changed).
	Stale map[string]bool
	// Foreign holds the ports held by anything this plan does not move, and by whom.
	Foreign map[int32]string
}

// ServicePlan is the ordered writes that take a StatefulSet's Services from Current to Target,
// and the Services that cannot get there now because a port they need is held by someone else.
type ServicePlan struct {
	Steps   []ServiceStep
	Blocked map[string]PortHolder
}

// PlanServices orders the writes so that the API server never sees a claim on a port another
// Service still holds: surplus Services are deleted first; then each Service whose wanted ports
// are free (or its own) is created or updated, which frees its old ports for the next; a cycle
// (two Services swapping ports) is broken by deleting one of them, which is created again once
// its ports are free. A Service that needs a Foreign port is blocked, and deleted if it holds a
// port another Service of the plan wants. The result depends only on the input.
func PlanServices(in ServicePlanInput) ServicePlan {
	plan := ServicePlan{Blocked: map[string]PortHolder{}}
	holder := map[int32]string{} // port → the plan's Service holding it now
	held := map[string][]int32{} // the plan's Services that exist now, and their ports
	for name, ports := range in.Current {
		held[name] = ports
		for _, p := range ports {
			holder[p] = name
		}
	}
	release := func(name string) {
		for _, p := range held[name] {
			if holder[p] == name {
				delete(holder, p)
			}
		}
		delete(held, name)
	}
	step := func(op ServiceOp, name string) {
		plan.Steps = append(plan.Steps, ServiceStep{Op: op, Name: name})
	}

	for _, name := range slices.Sorted(maps.Keys(in.Current)) {
		if _, wanted := in.Target[name]; !wanted {
			step(OpDelete, name)
			release(name)
		}
	}

	wantedBy := map[int32]string{}
	var pending []string
	for _, name := range slices.Sorted(maps.Keys(in.Target)) {
		want := in.Target[name]
		for _, p := range want {
			wantedBy[p] = name
		}
		if i := slices.IndexFunc(want, func(p int32) bool { _, foreign := in.Foreign[p]; return foreign }); i >= 0 {
			plan.Blocked[name] = PortHolder{Port: want[i], Holder: in.Foreign[want[i]]}
			continue
		}
		if _, exists := held[name]; !exists || !slices.Equal(held[name], want) || in.Stale[name] {
			pending = append(pending, name)
		}
	}
	// A blocked Service keeps its old ports unless another Service of the plan needs one of them.
	for _, name := range slices.Sorted(maps.Keys(plan.Blocked)) {
		if slices.ContainsFunc(held[name], func(p int32) bool { return wantedBy[p] != "" && wantedBy[p] != name }) {
			step(OpDelete, name)
			release(name)
		}
	}

	claimable := func(name string) bool {
		return !slices.ContainsFunc(in.Target[name], func(p int32) bool { return holder[p] != "" && holder[p] != name })
	}
	for len(pending) > 0 {
		progressed := false
		pending = slices.DeleteFunc(pending, func(name string) bool {
			if !claimable(name) {
				return false
			}
			op := OpUpdate
			if _, exists := held[name]; !exists {
				op = OpCreate
			}
			step(op, name)
			release(name)
			held[name] = in.Target[name]
			for _, p := range in.Target[name] {
				holder[p] = name
			}
			progressed = true
			return true
		})
		if progressed {
			continue
		}
		// Every pending Service waits for a port another pending one holds: a cycle. Free the
		// first that holds anything. With distinct targets there always is one; if none is
		// (two targets share a port), the rest are blocked rather than looped over.
		i := slices.IndexFunc(pending, func(name string) bool { return len(held[name]) > 0 })
		if i < 0 {
			for _, name := range pending {
				p := in.Target[name][slices.IndexFunc(in.Target[name], func(p int32) bool { return holder[p] != "" && holder[p] != name })]
				plan.Blocked[name] = PortHolder{Port: p, Holder: "Service " + holder[p]}
			}
			break
		}
		step(OpDelete, pending[i])
		release(pending[i])
	}
	return plan
}
