package patches

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// BenchmarkHostTemplateBomb: the template that made text/template run for seconds and allocate
// hundreds of MB is refused in microseconds, with the same few allocations as a template many
// times its size (3 MB, what `render -f` reads) and as a valid one. Compare allocs/op across the
// sub-benchmarks: they do not grow with the text.
func BenchmarkHostTemplateBomb(b *testing.B) {
	bomb := "{{range 3000000}}abcdefghij{{end}}"
	for name, text := range map[string]string{
		"bomb":       bomb,
		"bomb×100k":  strings.Repeat(bomb, 100_000),
		"valid":      "{{.Node}}.{{.Zone}}.nodes.example.com",
		"253-fields": strings.Repeat("{{.Node}}", 28) + strings.Repeat("a", 253-28*9),
	} {
		b.Run(name, func(b *testing.B) {
			annotations := map[string]string{AnnotationHostTemplate: text}
			path := field.NewPath("metadata", "annotations")
			opts := DefaultOptions()
			b.ReportAllocs()
			for b.Loop() {
				_, _ = ParseConfig(annotations, path, opts)
			}
		})
	}
	b.Run("execute", func(b *testing.B) {
		tmpl, err := ParseHostTemplate("{{.Node}}.{{.Zone}}.nodes.example.com")
		if err != nil {
			b.Fatal(err)
		}
		data := HostData{Node: "ip-10-0-0-1.eu-west-1.compute.internal", Zone: "eu-west-1a"}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := tmpl.Execute(data); err != nil {
				b.Fatal(err)
			}
		}
	})
}
