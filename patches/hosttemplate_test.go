package patches

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseHostTemplate(t *testing.T) {
	tests := map[string]struct {
		text    string
		data    HostData
		want    string
		wantErr string // at parse, or at Execute when the template parses
	}{
		"node":                       {text: "{{.Node}}.nodes.example.com", data: HostData{Node: "n1"}, want: "n1.nodes.example.com"},
		"node and zone":              {text: "{{.Node}}.{{.Zone}}.example.com", data: HostData{Node: "n1", Zone: "eu-west-1a"}, want: "n1.eu-west-1a.example.com"},
		"spaces inside the braces":   {text: "{{ .Node }}.{{  .Zone}}.example.com", data: HostData{Node: "n1", Zone: "z"}, want: "n1.z.example.com"},
		"upper case is a DNS name":   {text: "{{.Node}}.Example.COM", data: HostData{Node: "N1"}, want: "N1.Example.COM"},
		"literal only":               {text: "kafka.example.com", want: "kafka.example.com"},
		"field only":                 {text: "{{.Node}}", data: HostData{Node: "10.0.0.1"}, want: "10.0.0.1"},
		"IPv6":                       {text: "{{.Node}}", data: HostData{Node: "2001:db8::1"}, want: "2001:db8::1"},
		"a stray }} is literal":      {text: "a}}b", wantErr: `gives "a}}b" for node "node-0", which is neither an IP address nor a DNS name: '}' is not a letter, digit, '-' or '.'`},
		"unclosed":                   {text: "{{.Node", wantErr: "at byte 0: {{ without }}; fields: {{.Node}}, {{.Zone}}; no functions, pipelines or loops"},
		"unknown field":              {text: "x.{{.Nodes}}", wantErr: `at byte 2: "{{.Nodes}}" is not a field`},
		"range is refused":           {text: "{{range 3000000}}abcdefghij{{end}}", wantErr: `at byte 0: "{{range 3000000}}" is not a field`},
		"function is refused":        {text: `{{printf "%s" .Node}}`, wantErr: `at byte 0: "{{printf \"%s\" .Node}}" is not a field`},
		"pipeline is refused":        {text: "{{.Node | lower}}", wantErr: "is not a field"},
		"trim markers are refused":   {text: "{{- .Node -}}", wantErr: "is not a field"},
		"comment is refused":         {text: "{{/* c */}}{{.Node}}", wantErr: "is not a field"},
		"long action is cut":         {text: "{{" + strings.Repeat("x", 200) + "}}", wantErr: `at byte 0: "{{xxxxxxxxxxxxxxxxxxxxxx… (204 bytes)" is not a field`},
		"text too long":              {text: strings.Repeat("a", 254), wantErr: "254 bytes, longer than the 253 of a DNS name"},
		"empty label":                {text: "{{.Node}}..example.com", wantErr: `gives "node-0..example.com" for node "node-0", which is neither an IP address nor a DNS name: an empty label (a leading, trailing or double dot)`},
		"empty":                      {text: "", wantErr: "it is empty"},
		"label longer than 63":       {text: strings.Repeat("a", 64) + ".example.com", wantErr: "a label longer than 63 characters"},
		"label starting with a dash": {text: "-{{.Node}}.example.com", wantErr: "a label starts or ends with '-'"},
		"underscore":                 {text: "{{.Node}}_x.example.com", wantErr: `'_' is not a letter, digit, '-' or '.'`},
		"IPv6 zone":                  {text: "fe80::1%eth0", wantErr: `':' is not a letter`},
		"at binding: too long": {
			text: "{{.Node}}.example.com", data: HostData{Node: strings.Repeat("n", 250)},
			wantErr: `gives 262 characters for node "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn… (250 bytes)", more than the 253 of a DNS name`,
		},
		"at binding: label too long": {
			text: "{{.Node}}.example.com", data: HostData{Node: strings.Repeat("n", 64)},
			wantErr: "a label longer than 63 characters",
		},
		"at binding: zone not a DNS label": {
			text: "{{.Node}}.{{.Zone}}.example.com", data: HostData{Node: "n1", Zone: "zone_a"},
			wantErr: `gives "n1.zone_a.example.com" for node "n1", which is neither an IP address nor a DNS name: '_' is not a letter, digit, '-' or '.'`,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			tmpl, err := ParseHostTemplate(tc.text)
			if err == nil {
				_, err = tmpl.Execute(tc.data)
				if tc.wantErr == "" {
					require.NoError(t, err)
					got, _ := tmpl.Execute(tc.data)
					assert.Equal(t, tc.want, got)
					assert.Equal(t, tc.text, tmpl.String())
					return
				}
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.wantErr)
			assert.Less(t, len(err.Error()), 300, "a denial stays short")
		})
	}
}

func TestHostTemplateUsesZone(t *testing.T) {
	for text, want := range map[string]bool{"{{.Node}}.example.com": false, "{{.Node}}.{{ .Zone }}.example.com": true} {
		tmpl, err := ParseHostTemplate(text)
		require.NoError(t, err)
		assert.Equal(t, want, tmpl.UsesZone(), text)
	}
}

// Execute allocates the host and nothing else; parsing allocates the same whatever the text.
func TestHostTemplateAllocations(t *testing.T) {
	tmpl, err := ParseHostTemplate("{{.Node}}.{{.Zone}}.nodes.example.com")
	require.NoError(t, err)
	data := HostData{Node: "ip-10-0-0-1.eu-west-1.compute.internal", Zone: "eu-west-1a"}
	assert.Equal(t, 1.0, testing.AllocsPerRun(100, func() { _, _ = tmpl.Execute(data) }))
	ip, err := ParseHostTemplate("{{.Node}}")
	require.NoError(t, err)
	assert.Equal(t, 1.0, testing.AllocsPerRun(100, func() { _, _ = ip.Execute(HostData{Node: "2001:db8::1"}) }))

	bomb := "{{range 3000000}}abcdefghij{{end}}"
	long := strings.Repeat(bomb, 100_000) // built once: only the parse is measured
	small := testing.AllocsPerRun(10, func() { _, _ = ParseHostTemplate(bomb) })
	large := testing.AllocsPerRun(10, func() { _, _ = ParseHostTemplate(long) })
	assert.LessOrEqual(t, large, small, "refusing a long text costs no more than a short one")
}

func TestClip(t *testing.T) {
	assert.Equal(t, "short", clip("short", 64))
	assert.Equal(t, "abc… (6 bytes)", clip("abcdef", 3))
	assert.Equal(t, "é… (4 bytes)", clip("éé", 3), "never cuts a character")
	assert.Equal(t, "… (3 bytes)", clip("\x00\x01\x02", 3), "escapes count")
	long := clip(strings.Repeat("\x00", 1000), 64)
	assert.Equal(t, `"`+strings.Repeat(`\x00`, 16)+`… (1000 bytes)"`, fmt.Sprintf("%q", long))
}
