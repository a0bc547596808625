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

// PortSet is the ports in use, sorted by first port so that allocation is a single ordered walk
// with an exact, deterministic answer.
type PortSet struct {
	sorted []Reservation
}

// NewPortSet sorts the reservations (by first port, then owner, so ties are stable).
func NewPortSet(reservations ...Reservation) PortSet {
	sorted := slices.Clone(reservations)
	slices.SortFunc(sorted, func(a, b Reservation) int {
		return cmp.Or(cmp.Compare(a.First, b.First), cmp.Compare(a.Last, b.Last), cmp.Compare(a.Owner, b.Owner))
	})
	return PortSet{sorted: sorted}
}

// With is the set with more reservations.
func (s PortSet) With(more ...Reservation) PortSet {
	if len(more) == 0 {
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

// AllocateBlock returns the first port of the lowest block of size free ports within the range.
func AllocateBlock(inUse PortSet, within PortRange, size int32) (int32, error) {
	candidate := within.First
	for _, res := range inUse.sorted {
		if candidate+size-1 > within.Last || res.First > candidate+size-1 {
			break
		}
		candidate = max(candidate, res.Last+1)
	}
	if candidate+size-1 > within.Last {
		return 0, fmt.Errorf("no block of %d free ports is left in the port range %s (%d ports): widen it with --port-range, or lower %s or the number of listeners", size, within, within.Size(), AnnotationMaxBrokers)
	}
	return candidate, nil
}
