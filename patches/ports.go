package patches

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// PortRange is an inclusive range of ports.
type PortRange struct{ First, Last int32 }

func (r PortRange) Size() int32 { return r.Last - r.First + 1 }

func (r PortRange) String() string {
	if r.First == r.Last {
		return strconv.Itoa(int(r.First))
	}
	return fmt.Sprintf("%d-%d", r.First, r.Last)
}

// ParsePortRange reads "30000-30085" (or a single port).
func ParsePortRange(s string) (PortRange, error) {
	firstText, lastText, isRange := strings.Cut(s, "-")
	if !isRange {
		lastText = firstText
	}
	first, err1 := strconv.ParseInt(firstText, 10, 32)
	last, err2 := strconv.ParseInt(lastText, 10, 32)
	if err1 != nil || err2 != nil || first < 1 || last > 65535 || first > last {
		return PortRange{}, fmt.Errorf("port range %q: want FIRST-LAST with 1 <= FIRST <= LAST <= 65535", s)
	}
	return PortRange{First: int32(first), Last: int32(last)}, nil
}

// Reservation is a range of ports someone holds, with who it is, for error messages.
type Reservation struct {
	PortRange
	Owner string // e.g. "StatefulSet kafka/redpanda" or "Service default/web nodePort"
}

// PortSet is the ports in use. Reservations are kept sorted (for Conflict, which names the
// holder); the free gaps between them are kept in a max segment tree, so that the lowest gap that
// holds a block is found in O(log n).
type PortSet struct {
	sorted []Reservation
	gaps   []PortRange // free ranges between the merged reservations, ascending, within 1-65535
	tree   []int32     // tree[1] is the longest gap; tree[i] = max(tree[2i], tree[2i+1])
	leaves int
}

// NewPortSet sorts the reservations (by first port, then owner, so ties are stable) and indexes
// the gaps between them.
func NewPortSet(reservations ...Reservation) PortSet {
	sorted := slices.Clone(reservations)
	slices.SortFunc(sorted, func(a, b Reservation) int {
		return cmp.Or(cmp.Compare(a.First, b.First), cmp.Compare(a.Last, b.Last), cmp.Compare(a.Owner, b.Owner))
	})
	var gaps []PortRange
	next := int32(1) // the lowest port not yet covered
	for _, r := range sorted {
		if r.First > next {
			gaps = append(gaps, PortRange{First: next, Last: r.First - 1})
		}
		next = max(next, r.Last+1)
	}
	if next <= 65535 {
		gaps = append(gaps, PortRange{First: next, Last: 65535})
	}
	leaves := 1
	for leaves < len(gaps) {
		leaves *= 2
	}
	tree := make([]int32, 2*leaves)
	for i, g := range gaps {
		tree[leaves+i] = g.Size()
	}
	for i := leaves - 1; i >= 1; i-- {
		tree[i] = max(tree[2*i], tree[2*i+1])
	}
	return PortSet{sorted: sorted, gaps: gaps, tree: tree, leaves: leaves}
}

// With is the set with more reservations.
func (s PortSet) With(more ...Reservation) PortSet {
	if len(more) == 0 && s.tree != nil {
		return s
	}
	return NewPortSet(append(slices.Clone(s.sorted), more...)...)
}

// Conflict returns the first reservation that overlaps r.
func (s PortSet) Conflict(r PortRange) (Reservation, bool) {
	// Reservations starting after r.Last cannot overlap; everything before may, as ranges can be long.
	end, _ := slices.BinarySearchFunc(s.sorted, r.Last+1, func(res Reservation, port int32) int { return cmp.Compare(res.First, port) })
	for _, res := range s.sorted[:end] {
		if res.Last >= r.First {
			return res, true
		}
	}
	return Reservation{}, false
}

// firstGapOf returns the index of the first gap from index from on that holds size ports, or -1.
func (s PortSet) firstGapOf(from int, size int32) int {
	if i := s.find(1, 0, s.leaves-1, from, size); i < len(s.gaps) {
		return i
	}
	return -1
}

// find descends the tree, left first, skipping subtrees wholly before from or too short: it
// visits O(log n) nodes.
func (s PortSet) find(node, lo, hi, from int, size int32) int {
	if hi < from || s.tree[node] < size {
		return -1
	}
	if lo == hi {
		return lo
	}
	mid := (lo + hi) / 2
	if i := s.find(2*node, lo, mid, from, size); i >= 0 {
		return i
	}
	return s.find(2*node+1, mid+1, hi, from, size)
}

// AllocateBlock returns the first port of the lowest block of size free ports within the range.
func AllocateBlock(inUse PortSet, within PortRange, size int32) (int32, error) {
	if inUse.tree == nil {
		inUse = NewPortSet() // the zero PortSet: nothing in use
	}
	// The gap where the range starts may begin below it: clip it.
	g, _ := slices.BinarySearchFunc(inUse.gaps, within.First, func(gap PortRange, port int32) int { return cmp.Compare(gap.Last, port) })
	start := int32(-1)
	if g < len(inUse.gaps) && inUse.gaps[g].Last-max(inUse.gaps[g].First, within.First)+1 >= size {
		start = max(inUse.gaps[g].First, within.First)
	} else if g = inUse.firstGapOf(g+1, size); g >= 0 {
		start = inUse.gaps[g].First
	}
	if start < 0 || start+size-1 > within.Last {
		return 0, fmt.Errorf("no block of %d free ports is left in brokerport's port range %s (%d ports; %s); to fix: widen brokerport's --port-range (inside the API server's --service-node-port-range), lower %s or the number of listeners, or opt out a StatefulSet that no longer needs its block", size, within, within.Size(), inUse.holders(within), AnnotationMaxBrokers)
	}
	return start, nil
}

// holders says who holds the ports of a range: the first few, and how many more.
func (s PortSet) holders(within PortRange) string {
	const shown = 4
	var names []string
	more := 0
	for _, r := range s.sorted {
		if r.Last < within.First || r.First > within.Last {
			continue
		}
		if len(names) == shown {
			more++
			continue
		}
		names = append(names, fmt.Sprintf("%s %s", clip(r.Owner, maxEchoed), r.PortRange))
	}
	if len(names) == 0 {
		return "none held"
	}
	out := "held by " + strings.Join(names, ", ")
	if more > 0 {
		out += fmt.Sprintf(" and %d more", more)
	}
	return out
}
