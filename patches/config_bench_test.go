package patches

import (
	"fmt"
	"testing"
)

// BenchmarkParseListeners parses N listeners, past the bound ParseConfig keeps (the parser itself
// has none): its cost is linear, ns/op at 10N about ten times that at N (the duplicate check
// was a scan of the listeners before, 0.47 s for 21,402).
func BenchmarkParseListeners(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		v := manyListeners(n)
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := parseListeners(v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkParseConfig is what each admission pays for one configuration: 16 listeners (the
// bound), and the 250 KiB annotation seen, refused on its size before it is read.
func BenchmarkParseConfig(b *testing.B) {
	for name, v := range map[string]string{"listeners=16": manyListeners(MaxListeners), "listeners=21402,250KiB": manyListeners(21402)} {
		annotations := map[string]string{AnnotationListeners: v, AnnotationPortBase: "30000", AnnotationMaxBrokers: "2"}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				ParseConfig(annotations, nil, DefaultOptions())
			}
		})
	}
}
