package matchconditions

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/brokerport/brokerport/patches"
)

var update = flag.Bool("update", false, "rewrite testdata/cel/*.json")

func TestBuildNone(t *testing.T) {
	got, err := Build(nil, DefaultLimits)
	require.NoError(t, err)
	assert.Equal(t, []admissionregistrationv1.MatchCondition{{Name: "no-brokerport-brokers", Expression: "false"}}, got)
}

func TestBuildOne(t *testing.T) {
	got, err := Build([]types.NamespacedName{{Namespace: "kafka", Name: "redpanda"}}, DefaultLimits)
	require.NoError(t, err)
	assert.Equal(t, []admissionregistrationv1.MatchCondition{
		{Name: "broker-pod-name", Expression: `object.metadata.name.matches("-[0-9]+$")`},
		{Name: "brokers-0", Expression: `(request.namespace + "/" + object.metadata.name.substring(0, object.metadata.name.lastIndexOf("-") + 1)) in ["kafka/redpanda-"]`},
	}, got)
}

// The same set in any order, with duplicates, gives the same bytes: replicas and resyncs write
// nothing when nothing changed.
func TestBuildIsDeterministic(t *testing.T) {
	sets := generate(200, 8, 12)
	want, err := Build(sets, Limits{MaxExpressionBytes: 2000, MaxTotalBytes: 1 << 20, MaxConditions: 64})
	require.NoError(t, err)
	require.Greater(t, len(want), 3, "several chunks")
	for range 5 {
		shuffled := append(slices.Clone(sets), sets[:17]...)
		rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		got, err := Build(shuffled, Limits{MaxExpressionBytes: 2000, MaxTotalBytes: 1 << 20, MaxConditions: 64})
		require.NoError(t, err)
		assert.Equal(t, want, got)
	}
}

// Within the API server's limits at 1,000 StatefulSets, even with the longest names Kubernetes
// allows (a 63-character namespace, a 52-character StatefulSet: its pods' controller-revision-hash
// label must stay a valid label value).
func TestBuildThousand(t *testing.T) {
	for name, tc := range map[string]struct {
		sets   []types.NamespacedName
		chunks int
	}{
		"typical names": {sets: generate(1000, 12, 14), chunks: 1},
		"longest names": {sets: generate(1000, 63, 52), chunks: 2},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := Build(tc.sets, DefaultLimits)
			require.NoError(t, err)
			assert.Len(t, got, 1+tc.chunks)
			total := 0
			for _, c := range got {
				n := utf8.RuneCountInString(c.Expression)
				assert.LessOrEqual(t, n, 100_000, "cel-go's parser limit, condition %s", c.Name)
				total += n
			}
			assert.LessOrEqual(t, len(got), 64)
			assert.LessOrEqual(t, total, DefaultLimits.MaxTotalBytes)
		})
	}
}

// Capacity with the default limits: 8,211 StatefulSets with the longest names (13 conditions,
// 1 MB), 31,110 with typical ones.
func TestBuildCapacity(t *testing.T) {
	_, err := Build(generate(8_211, 63, 52), DefaultLimits)
	assert.NoError(t, err)
	_, err = Build(generate(31_110, 12, 14), DefaultLimits)
	assert.NoError(t, err)
}

func TestBuildBeyondLimits(t *testing.T) {
	for name, tc := range map[string]struct {
		sets   []types.NamespacedName
		limits Limits
	}{
		"total size":        {sets: generate(10_000, 63, 52), limits: DefaultLimits},
		"condition count":   {sets: generate(100, 10, 10), limits: Limits{MaxExpressionBytes: 500, MaxTotalBytes: 1 << 20, MaxConditions: 8}},
		"one key too long":  {sets: generate(1, 63, 52), limits: Limits{MaxExpressionBytes: 100, MaxTotalBytes: 1 << 20, MaxConditions: 64}},
		"one past capacity": {sets: generate(8_212, 63, 52), limits: DefaultLimits},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Build(tc.sets, tc.limits)
			assert.ErrorIs(t, err, ErrTooLarge)
		})
	}
}

// Every chunk stays within its limit, and the chunks' ranges cover every key exactly once.
func TestBuildChunks(t *testing.T) {
	limits := Limits{MaxExpressionBytes: 1200, MaxTotalBytes: 1 << 20, MaxConditions: 64}
	got, err := Build(generate(300, 5, 9), limits)
	require.NoError(t, err)
	require.Greater(t, len(got), 5)
	for _, c := range got {
		assert.LessOrEqual(t, len(c.Expression), limits.MaxExpressionBytes, c.Name)
	}
	assert.NotContains(t, got[1].Expression, " < ", "the first chunk has no lower bound")
	assert.NotContains(t, got[len(got)-1].Expression, " >= ", "the last chunk has no upper bound")
}

// TestCELCases writes, for celcheck (a module of its own, with the API server's CEL environment),
// the conditions of a few sets and the bindings they must and must not send, decided by
// patches.BrokerCandidate: the binding handler's own test, which the conditions must agree with.
func TestCELCases(t *testing.T) {
	small := Limits{MaxExpressionBytes: 700, MaxTotalBytes: 1 << 20, MaxConditions: 64}
	for name, tc := range map[string]struct {
		sets   []types.NamespacedName
		limits Limits
	}{
		"none":            {},
		"one":             {sets: []types.NamespacedName{{Namespace: "kafka", Name: "redpanda"}}, limits: DefaultLimits},
		"several":         {sets: append(generate(40, 6, 8), types.NamespacedName{Namespace: "kafka", Name: "kafka-x"}, types.NamespacedName{Namespace: "kafka", Name: "redpanda"}), limits: DefaultLimits},
		"several-chunked": {sets: append(generate(40, 6, 8), types.NamespacedName{Namespace: "kafka", Name: "kafka-x"}, types.NamespacedName{Namespace: "kafka", Name: "redpanda"}), limits: small},
		"thousand":        {sets: generate(1000, 12, 14), limits: DefaultLimits},
	} {
		t.Run(name, func(t *testing.T) {
			conditions, err := Build(tc.sets, tc.limits)
			require.NoError(t, err)
			out := celCases{Conditions: conditions, Cases: bindings(tc.sets)}
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			enc.SetIndent("", " ")
			require.NoError(t, enc.Encode(out))
			raw := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
			path := filepath.Join("testdata", "cel", name+".json")
			if *update {
				require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
				require.NoError(t, os.WriteFile(path, append(raw, '\n'), 0o644))
			}
			golden, err := os.ReadFile(path)
			require.NoError(t, err, "run go test ./webhook/matchconditions -run TestCELCases -update")
			assert.Equal(t, string(golden), string(raw)+"\n", "stale %s: run with -update and review", path)
		})
	}
}

// A stale golden with no case fails the run.
func TestNoStaleCELCases(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "cel", "*.json"))
	require.NoError(t, err)
	known := []string{"none", "one", "several", "several-chunked", "thousand"}
	for _, f := range files {
		assert.Contains(t, known, strings.TrimSuffix(filepath.Base(f), ".json"), "stale golden %s", f)
	}
}

type celCases struct {
	Conditions []admissionregistrationv1.MatchCondition `json:"conditions"`
	Cases      []celCase                                `json:"cases"`
}

type celCase struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Send      bool   `json:"send"`
}

// bindings are pod names around each of a few StatefulSets of sets, and names of no
// StatefulSet, each with what the binding handler decides.
func bindings(sets []types.NamespacedName) []celCase {
	sample := sets
	if len(sample) > 12 {
		sample = append(slices.Clone(sets[:6]), sets[len(sets)-6:]...)
	}
	pods := []types.NamespacedName{
		{Namespace: "kafka", Name: "nginx"}, {Namespace: "kafka", Name: "web-7d9f8c6b5-x2x7q"},
		{Namespace: "kafka", Name: "web-7d9f8c6b5-24567"}, {Namespace: "kafka", Name: "-0"},
		{Namespace: "a", Name: "0"}, {Namespace: "zzzzzzzz", Name: "zzzz-1"},
	}
	for _, s := range sample {
		for _, name := range []string{s.Name + "-0", s.Name + "-17", s.Name + "-", s.Name, s.Name + "-0a", s.Name + "-x-0",
			s.Name + "0-0", s.Name[:len(s.Name)-1] + "-0", "x" + s.Name + "-0"} {
			pods = append(pods, types.NamespacedName{Namespace: s.Namespace, Name: name})
		}
		pods = append(pods, types.NamespacedName{Namespace: s.Namespace + "x", Name: s.Name + "-1"},
			types.NamespacedName{Namespace: s.Namespace[:len(s.Namespace)-1], Name: s.Name + "-1"})
	}
	in := map[types.NamespacedName]bool{}
	for _, s := range sets {
		in[s] = true
	}
	out := make([]celCase, 0, len(pods))
	for _, p := range pods {
		_, send := patches.BrokerCandidate(p.Name, func(sts string) bool { return in[types.NamespacedName{Namespace: p.Namespace, Name: sts}] })
		out = append(out, celCase{Namespace: p.Namespace, Name: p.Name, Send: send})
	}
	return out
}

// generate returns n StatefulSets with namespaces and names of the given lengths, spread over
// n/5 namespaces, the same on every run.
func generate(n, nsLen, nameLen int) []types.NamespacedName {
	pad := func(s string, l int) string {
		if len(s) >= l {
			return s[:l]
		}
		return s + strings.Repeat("a", l-len(s))
	}
	out := make([]types.NamespacedName, 0, n)
	for i := range n {
		out = append(out, types.NamespacedName{
			Namespace: pad(fmt.Sprintf("ns%dz", i/5), nsLen),
			Name:      pad(fmt.Sprintf("kafka%dz", i), nameLen),
		})
	}
	return out
}
