package patches

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkAllocateBlock allocates a 32-port block in a range where taken ports are scattered as
// Services' nodePorts are (one every few ports), for growing numbers of taken ports. The range
// grows with them so that the only block that fits is at the end: the worst case for a walk.
func BenchmarkAllocateBlock(b *testing.B) {
	for _, taken := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("taken=%d", taken), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 2))
			var reservations []Reservation
			port := int32(30000)
			for range taken {
				port += 1 + rng.Int32N(5) // gaps of 0-4 ports: never 32 free in a row
				reservations = append(reservations, Reservation{PortRange: PortRange{First: port, Last: port}, Owner: "svc"})
			}
			within := PortRange{First: 30000, Last: port + 64}
			set := NewPortSet(reservations...)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := AllocateBlock(set, within, 32); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
