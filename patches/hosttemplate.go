package patches

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Host templates are brokerport's own tiny language, not Go's text/template: literal text and the
// fields {{.Node}} and {{.Zone}} (spaces inside the braces allowed), nothing else. A template is a
// user's annotation, parsed and run by the webhook and the controller for every broker, so its
// cost must be bounded by its length: text/template's {{range 3000000}} made seconds of work and
// hundreds of megabytes out of 34 bytes.
const (
	// MaxHostTemplateLen bounds the template text: the size of the longest DNS name.
	MaxHostTemplateLen = 253
	// MaxHostLen bounds what a template gives: a DNS name of at most 253 characters, labels of at
	// most 63.
	MaxHostLen  = 253
	maxLabelLen = 63
)

// hostFields is what the error messages offer.
const hostFields = "fields: {{.Node}}, {{.Zone}}; no functions, pipelines or loops"

// HostTemplate builds a broker's host from its node, e.g. "{{.Node}}.nodes.example.com".
type HostTemplate struct {
	text  string
	parts []hostPart
	// fixed is the length of the literal text, what every output has besides the fields.
	fixed    int
	usesZone bool
}

// hostPart is literal text or one field.
type hostPart struct {
	literal string
	field   hostField
}

type hostField uint8

const (
	fieldNone hostField = iota
	fieldNode
	fieldZone
)

// HostData is what a host template can use.
type HostData struct {
	Node string // the node's name
	Zone string // the node's topology.kubernetes.io/zone label, "" when it has none
}

// sampleHost is what a template is test-run with at admission: a node name and a zone as
// Kubernetes and the cloud providers write them.
var sampleHost = HostData{Node: "node-0", Zone: "zone-a"}

// ParseHostTemplate parses a host template in one pass over its text, and test-runs it, so that a
// broken one is refused when the StatefulSet is labeled, not when a broker is bound. Errors are
// short: they never repeat the text.
func ParseHostTemplate(text string) (*HostTemplate, error) {
	if len(text) > MaxHostTemplateLen {
		return nil, fmt.Errorf("%d bytes, longer than the %d of a DNS name", len(text), MaxHostTemplateLen)
	}
	t := &HostTemplate{text: text, parts: make([]hostPart, 0, 2*strings.Count(text, "{{")+1)}
	rest := text
	for rest != "" {
		open := strings.Index(rest, "{{")
		if open < 0 {
			t.addLiteral(rest)
			break
		}
		t.addLiteral(rest[:open])
		at := len(text) - len(rest) + open
		length := strings.Index(rest[open+2:], "}}")
		if length < 0 {
			return nil, fmt.Errorf("at byte %d: {{ without }}; %s", at, hostFields)
		}
		action := rest[open : open+2+length+2]
		switch strings.Trim(action[2:len(action)-2], " ") {
		case ".Node":
			t.parts = append(t.parts, hostPart{field: fieldNode})
		case ".Zone":
			t.parts = append(t.parts, hostPart{field: fieldZone})
			t.usesZone = true
		default:
			return nil, fmt.Errorf("at byte %d: %q is not a field; %s", at, clip(action, 24), hostFields)
		}
		rest = rest[open+len(action):]
	}
	if _, err := t.Execute(sampleHost); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *HostTemplate) addLiteral(s string) {
	if s != "" {
		t.parts = append(t.parts, hostPart{literal: s})
		t.fixed += len(s)
	}
}

func (t *HostTemplate) String() string { return t.text }

// UsesZone tells whether the template needs the node's zone.
func (t *HostTemplate) UsesZone() bool { return t.usesZone }

// Execute renders the host and checks it is a DNS name or an IP address. It allocates the host
// and nothing else: its length is known before it is built, and too long a host is never built.
func (t *HostTemplate) Execute(data HostData) (string, error) {
	n := t.fixed
	for _, p := range t.parts {
		switch p.field {
		case fieldNode:
			n += len(data.Node)
		case fieldZone:
			n += len(data.Zone)
		}
	}
	if n > MaxHostLen {
		return "", fmt.Errorf("gives %d characters for node %q, more than the %d of a DNS name", n, clip(data.Node, 64), MaxHostLen)
	}
	var b strings.Builder
	b.Grow(n)
	for _, p := range t.parts {
		switch p.field {
		case fieldNone:
			b.WriteString(p.literal)
		case fieldNode:
			b.WriteString(data.Node)
		case fieldZone:
			b.WriteString(data.Zone)
		}
	}
	host := b.String()
	if err := checkHost(host); err != nil {
		return "", fmt.Errorf("gives %q for node %q, which is neither an IP address nor a DNS name: %v", clip(host, 64), clip(data.Node, 64), err)
	}
	return host, nil
}

// checkHost accepts an IP address (no IPv6 zone) or a DNS-1123 subdomain of at most 253
// characters whose labels have at most 63, in any case. It allocates nothing when the host is
// valid.
func checkHost(s string) error {
	// Only what can be an address is parsed as one: ParseAddr's error allocates.
	if (s != "" && strings.Trim(s, "0123456789.") == "") || (strings.Contains(s, ":") && !strings.Contains(s, "%")) {
		if _, err := netip.ParseAddr(s); err == nil {
			return nil
		}
	}
	if s == "" {
		return errors.New("it is empty")
	}
	if len(s) > MaxHostLen {
		return fmt.Errorf("longer than %d characters", MaxHostLen)
	}
	for rest := s; ; {
		label, after, more := strings.Cut(rest, ".")
		switch {
		case label == "":
			return errors.New("an empty label (a leading, trailing or double dot)")
		case len(label) > maxLabelLen:
			return fmt.Errorf("a label longer than %d characters", maxLabelLen)
		case label[0] == '-' || label[len(label)-1] == '-':
			return errors.New("a label starts or ends with '-'")
		}
		for i := 0; i < len(label); i++ {
			if c := label[i] | 0x20; (c < 'a' || c > 'z') && (label[i] < '0' || label[i] > '9') && label[i] != '-' {
				r, _ := utf8.DecodeRuneInString(label[i:])
				return fmt.Errorf("%q is not a letter, digit, '-' or '.'", r)
			}
		}
		if !more {
			break
		}
		rest = after
	}
	return nil
}

// clip cuts a user-written value for a message: what %q makes of it takes at most max bytes
// (escapes counted), followed by its full length, so that no value makes a message long.
func clip(s string, max int) string {
	width := 0
	for i, r := range s {
		w := utf8.RuneLen(r)
		switch {
		case r == utf8.RuneError || r < 0x80 && !strconv.IsPrint(r):
			w = 4 // \x00
		case r == '"' || r == '\\':
			w = 2
		case !strconv.IsPrint(r):
			w = 10 // \U0001f000 at most
		}
		if width+w > max {
			return fmt.Sprintf("%s… (%d bytes)", s[:i], len(s))
		}
		width += w
	}
	return s
}
