package probe

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/brokerport/brokerport/patches"
)

func TestParsePublished(t *testing.T) {
	data := map[string]string{
		"bootstrap.servers":       "10.0.0.1:30000,10.0.0.2:30002",
		"admin.addresses":         "rp-0 10.0.0.1:30001\nrp-1 10.0.0.2:30003",
		"admin.bootstrap.servers": "10.0.0.1:30001,10.0.0.2:30003",
		"kafka.addresses":         "rp-0 10.0.0.1:30000\nrp-1 10.0.0.2:30002\n\ngarbage",
		"kafka.bootstrap.servers": "10.0.0.1:30000,10.0.0.2:30002",
		"status":                  "rp-0 exposed\nrp-1 exposed\nrp-2 not exposed: pending",
		"kafka.reachability":      "rp-0 reachable",
	}
	want := Published{
		Listeners: []string{"kafka", "admin"}, // the Kafka listener first, though "admin" sorts before it
		Brokers: []Broker{
			{Pod: "rp-0", Addresses: map[string]string{"kafka": "10.0.0.1:30000", "admin": "10.0.0.1:30001"}},
			{Pod: "rp-1", Addresses: map[string]string{"kafka": "10.0.0.2:30002", "admin": "10.0.0.2:30003"}},
		},
	}
	got := ParsePublished(data)
	assert.Equal(t, want, got)
	assert.Equal(t, "kafka", got.Kafka())
	assert.Equal(t, []string{"10.0.0.1:30001", "10.0.0.2:30003"}, got.All("admin"))
	assert.Empty(t, ParsePublished(map[string]string{"status": ""}).Kafka())
}

func TestModeOf(t *testing.T) {
	assert.Equal(t, KafkaMetadata, ModeOf(0, "PLAINTEXT"))
	assert.Equal(t, KafkaMetadata, ModeOf(0, ""))
	assert.Equal(t, KafkaHandshake, ModeOf(0, "SASL_PLAINTEXT"))
	assert.Equal(t, TCP, ModeOf(0, "SSL"))
	assert.Equal(t, TCP, ModeOf(0, "SASL_SSL"))
	assert.Equal(t, TCP, ModeOf(1, "PLAINTEXT"), "HTTP listeners: TCP only")
}

func TestJudge(t *testing.T) {
	published := []string{"10.0.0.1:30000", "10.0.0.2:30002", "10.0.0.3:30004"}
	tests := map[string]struct {
		dialed string
		mode   Mode
		obs    Observation
		want   string
	}{
		"advertises the dialed address": {
			dialed: "10.0.0.2:30002", mode: KafkaMetadata,
			obs:  Observation{Advertised: []string{"10.0.0.1:30000", "10.0.0.2:30002", "10.0.0.3:30004"}},
			want: "reachable",
		},
		"DNS names compare without case or final dot": {
			dialed: "Node-1.example.com.:30000", mode: KafkaMetadata,
			obs:  Observation{Advertised: []string{"node-1.example.com:30000"}},
			want: "reachable",
		},
		"refused": {
			dialed: "10.0.0.2:30002", mode: KafkaMetadata,
			obs:  Observation{Err: errors.New("connection refused")},
			want: "unreachable: connection refused",
		},
		"the wrong port on its own host is named": {
			dialed: "10.0.0.2:30002", mode: KafkaMetadata,
			obs:  Observation{Advertised: []string{"10.0.0.1:30000", "10.0.0.2:30003", "10.0.0.3:30004"}},
			want: "advertises 10.0.0.2:30003",
		},
		"another host: the one unpublished entry is named": {
			dialed: "10.0.0.2:30002", mode: KafkaMetadata,
			obs:  Observation{Advertised: []string{"10.0.0.1:30000", "kafka-1.kafka-headless.svc:9092", "10.0.0.3:30004"}},
			want: "advertises kafka-1.kafka-headless.svc:9092",
		},
		"nothing to tell them apart: all are listed": {
			dialed: "10.0.0.2:30002", mode: KafkaMetadata,
			obs:  Observation{Advertised: []string{"b:9092", "a:9092"}},
			want: "advertises something else: the cluster's brokers are a:9092,b:9092",
		},
		"TCP mode does not look at Metadata": {
			dialed: "10.0.0.2:30003", mode: TCP, obs: Observation{}, want: "reachable",
		},
		"a long reason is clipped to one line": {
			dialed: "10.0.0.2:30002", mode: TCP,
			obs:  Observation{Err: errors.New(strings.Repeat("x\n", 200))},
			want: "unreachable: " + strings.TrimSpace(strings.Repeat("x ", 200))[:maxReason-3] + "...",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, tc.want, Judge(tc.dialed, tc.mode, tc.obs, published).String())
		})
	}
}

func TestTransition(t *testing.T) {
	ok := Verdict{State: Reachable}
	down := Verdict{State: Unreachable, Reason: "connection refused"}
	down2 := Verdict{State: Unreachable, Reason: "connect timed out"}
	wrong := Verdict{State: Mismatch, Advertises: "10.0.0.2:30003"}
	tests := map[string]struct {
		before     Verdict
		known      bool
		now        Verdict
		wantType   string
		wantReason string
	}{
		"healthy at first: nothing":          {now: ok},
		"unreachable at first: Warning":      {now: down, wantType: "Warning", wantReason: "BrokerUnreachable"},
		"still healthy: nothing":             {before: ok, known: true, now: ok},
		"goes down: Warning":                 {before: ok, known: true, now: down, wantType: "Warning", wantReason: "BrokerUnreachable"},
		"another reason, still down: silent": {before: down, known: true, now: down2},
		"mismatch: Warning":                  {before: ok, known: true, now: wrong, wantType: "Warning", wantReason: "BrokerAdvertisesOther"},
		"down to mismatch: Warning":          {before: down, known: true, now: wrong, wantType: "Warning", wantReason: "BrokerAdvertisesOther"},
		"recovers: Normal":                   {before: wrong, known: true, now: ok, wantType: "Normal", wantReason: "BrokerReachable"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e, said := Transition("rp-1", "kafka", "10.0.0.2:30002", tc.before, tc.known, tc.now)
			assert.Equal(t, tc.wantType != "", said)
			assert.Equal(t, tc.wantType, e.Type)
			assert.Equal(t, tc.wantReason, e.Reason)
			if said {
				assert.Contains(t, e.Message, "rp-1")
				assert.Contains(t, e.Message, "10.0.0.2:30002")
			}
		})
	}
	e, _ := Transition("rp-1", "kafka", "10.0.0.2:30002", ok, true, wrong)
	assert.Contains(t, e.Message, "advertises 10.0.0.2:30003")
}

func TestReachabilityKeys(t *testing.T) {
	got := ReachabilityKeys([]string{"kafka", "admin"}, []string{"rp-0", "rp-1", "rp-2"}, map[Target]Verdict{
		{Pod: "rp-0", Listener: "kafka"}: {State: Reachable},
		{Pod: "rp-1", Listener: "kafka"}: {State: Mismatch, Advertises: "h1:9"},
		{Pod: "rp-1", Listener: "admin"}: {State: Unreachable, Reason: "connection refused"},
		{Pod: "rp-2", Listener: "kafka"}: {State: NotProbed, Reason: "why"},
		{Pod: "rp-9", Listener: "kafka"}: {State: Reachable}, // not one of the pods
	})
	assert.Equal(t, map[string]string{
		"kafka.reachability": "rp-0 reachable\nrp-1 advertises h1:9\nrp-2 not probed: why",
		"admin.reachability": "rp-1 unreachable: connection refused",
	}, got)
}

// judgeInCluster names what a broker advertises only when brokerport computed that address for
// the StatefulSet: the rest is a listener's bytes, not repeated in Events or the ConfigMap.
func TestJudgeInCluster(t *testing.T) {
	kafka := []string{"10.0.0.1:30000", "10.0.0.2:30002", "10.0.0.3:30004"}
	admin := []string{"10.0.0.1:30001", "10.0.0.2:30003", "10.0.0.3:30005"}
	own := [][]string{kafka, admin}
	tests := map[string]struct {
		advertised []string
		want       string
	}{
		"advertises its own address": {
			advertised: kafka, want: "reachable",
		},
		"advertises its admin listener's address (named: brokerport computed it)": {
			advertised: []string{"10.0.0.1:30000", "10.0.0.2:30003", "10.0.0.3:30004"},
			want:       "advertises 10.0.0.2:30003",
		},
		"advertises the wrong port on its host": {
			advertised: []string{"10.0.0.1:30000", "10.0.0.2:9092", "10.0.0.3:30004"},
			want:       "advertises an address brokerport did not publish for it (brokerport check --from-here names it)",
		},
		"another team's brokers": {
			advertised: []string{"kafka-0.payments.svc:9092", "kafka-1.payments.svc:9092"},
			want:       "advertises " + unpublished,
		},
		"one of another team's, with its siblings": {
			advertised: []string{"10.0.0.1:30000", "kafka-0.payments.svc:9092", "10.0.0.3:30004"},
			want:       "advertises " + unpublished,
		},
		"nothing": {
			advertised: []string{}, want: "advertises no broker (empty Metadata response)",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			v := judgeInCluster("10.0.0.2:30002", KafkaMetadata, Observation{Advertised: tc.advertised}, kafka, own)
			assert.Equal(t, tc.want, v.String())
			if e, said := Transition("rp-1", "kafka", "10.0.0.2:30002", Verdict{}, true, v); said {
				assert.NotContains(t, e.Message, "payments")
				assert.NotContains(t, e.Message, ":9092")
			}
		})
	}
}

func TestTransitionNotProbed(t *testing.T) {
	for _, before := range []Verdict{{State: Reachable}, {State: Unreachable, Reason: "x"}} {
		_, said := Transition("rp-1", "kafka", "10.0.0.2:30002", before, true, Verdict{State: NotProbed, Reason: "why"})
		assert.False(t, said, "an address not probed says nothing in Events: its line does")
	}
}

func TestFreePorts(t *testing.T) {
	band := patches.PortRange{First: 30000, Last: 30085}
	tests := map[string]struct {
		held []patches.PortRange
		want int
	}{
		"empty":                 {want: 86},
		"one block":             {held: []patches.PortRange{{First: 30000, Last: 30007}}, want: 78},
		"overlaps count once":   {held: []patches.PortRange{{First: 30000, Last: 30007}, {First: 30004, Last: 30004}, {First: 30006, Last: 30009}}, want: 76},
		"outside the band":      {held: []patches.PortRange{{First: 31000, Last: 31010}, {First: 29990, Last: 30001}}, want: 84},
		"the whole band":        {held: []patches.PortRange{{First: 1, Last: 65535}}, want: 0},
		"unsorted and nested":   {held: []patches.PortRange{{First: 30080, Last: 30085}, {First: 30010, Last: 30020}, {First: 30012, Last: 30013}}, want: 69},
		"a nodePort at the end": {held: []patches.PortRange{{First: 30085, Last: 30085}}, want: 85},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) { assert.Equal(t, tc.want, FreePorts(band, tc.held)) })
	}
}

func TestJitter(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		d := Jitter(30*time.Second, r)
		assert.GreaterOrEqual(t, d, 27*time.Second)
		assert.Less(t, d, 33*time.Second)
	}
}
