// Package matchconditions keeps the matchConditions of brokerport's binding webhook equal to the
// set of opted-in StatefulSets, so that the API server decides in-process, with CEL, that a pod
// is not a broker and calls brokerport only for brokers' bindings.
package matchconditions

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Limits bound the matchConditions brokerport writes. The API server's own (Kubernetes 1.30–1.34,
// checked in the sources):
//   - at most 64 matchConditions per webhook (validateMatchConditions in
//     k8s.io/kubernetes pkg/apis/admissionregistration/validation);
//   - 100,000 code points per expression: cel-go's parser default, which the API server's CEL
//     environment (k8s.io/apiserver pkg/cel/environment) does not override;
//   - a runtime cost of 1,000,000 per expression (PerCallLimit) and 2,500,000 for all conditions of
//     one webhook (RuntimeCELCostBudgetMatchConditions, k8s.io/apiserver pkg/apis/cel). No cost is
//     estimated when a webhook configuration is written. Brokerport's expressions cost about one
//     unit per StatefulSet of a condition plus a constant (celcheck measures it), so length binds
//     long before cost;
//   - the whole MutatingWebhookConfiguration is one etcd value (1.5 MiB by default), and every API
//     server recompiles every condition when it changes.
type Limits struct {
	MaxExpressionBytes int // per condition; names are ASCII, so bytes are code points
	MaxTotalBytes      int // all conditions together
	MaxConditions      int
}

// DefaultLimits keep a tenth of the parser's limit as margin and the configuration far below
// etcd's. About 25,000 StatefulSets with names of typical length fit.
var DefaultLimits = Limits{MaxExpressionBytes: 90_000, MaxTotalBytes: 1_000_000, MaxConditions: 64}

// ErrTooLarge means the opted-in StatefulSets do not fit in matchConditions: the webhook must be
// called for every binding, and decide from the pod's name as before.
var ErrTooLarge = errors.New("the opted-in StatefulSets do not fit in the binding webhook's matchConditions")

// Names of the conditions: the API server reports the one that excluded a request.
const (
	conditionNoBrokers  = "no-brokerport-brokers"
	conditionBrokerName = "broker-pod-name"
	conditionBrokers    = "brokers-" // + the chunk's index
)

// A Binding's name is its pod's. A broker is "<sts>-<ordinal>": brokerName tests the ordinal
// once, and key is "<namespace>/<sts>-", looked up in a list of constants, which the API server's
// CEL (OptOptimize) turns into a hash set. lastIndexOf is -1 when the name has no dash: the key is
// then "<namespace>/", which never matches, so no condition ever ends in an evaluation error
// (each error counts in apiserver_admission_match_condition_evaluation_errors_total).
const (
	brokerName = `object.metadata.name.matches("-[0-9]+$")`
	key        = `(request.namespace + "/" + object.metadata.name.substring(0, object.metadata.name.lastIndexOf("-") + 1))`
)

// Build returns the matchConditions under which the API server calls the binding webhook: the
// Binding's pod is "<sts>-<ordinal>" of one of sets in its namespace. The result is a pure
// function of the set (sorted, duplicates ignored), so that every replica writes the same bytes
// and an unchanged set writes nothing. With no StatefulSet, no binding is sent at all. When the
// set exceeds limits, Build returns ErrTooLarge.
//
// Conditions are ANDed, so the set cannot simply be split in one list per condition. It is split
// in chunks of consecutive keys instead: chunk i holds the keys in [first_i, first_i+1) and its
// condition reads "the key is outside my range, or it is in my list". Every key falls in exactly
// one range, so the AND of all chunks is membership in the whole set.
func Build(sets []types.NamespacedName, limits Limits) ([]admissionregistrationv1.MatchCondition, error) {
	if len(sets) == 0 {
		return []admissionregistrationv1.MatchCondition{{Name: conditionNoBrokers, Expression: "false"}}, nil
	}
	keys := make([]string, 0, len(sets))
	for _, s := range sets {
		keys = append(keys, s.Namespace+"/"+s.Name+"-")
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)

	// Room a chunk's bounds may take: the key expression three times and two quoted keys.
	longest := 0
	for _, k := range keys {
		longest = max(longest, len(strconv.Quote(k)))
	}
	overhead := 3*len(key) + 2*longest + len(` >= ||  <  ||  in []`)
	var chunks [][]string
	size := overhead
	for i, k := range keys {
		item := len(strconv.Quote(k)) + len(", ")
		if i == 0 || size+item > limits.MaxExpressionBytes {
			chunks = append(chunks, nil)
			size = overhead
		}
		chunks[len(chunks)-1] = append(chunks[len(chunks)-1], k)
		size += item
	}

	conditions := []admissionregistrationv1.MatchCondition{{Name: conditionBrokerName, Expression: brokerName}}
	total := len(brokerName)
	for i, chunk := range chunks {
		var b strings.Builder
		if i > 0 {
			fmt.Fprintf(&b, "%s < %s || ", key, strconv.Quote(chunk[0]))
		}
		if i < len(chunks)-1 {
			fmt.Fprintf(&b, "%s >= %s || ", key, strconv.Quote(chunks[i+1][0]))
		}
		b.WriteString(key + " in [")
		for j, k := range chunk {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString(strconv.Quote(k))
		}
		b.WriteString("]")
		if b.Len() > limits.MaxExpressionBytes { // a single key longer than the limit
			return nil, fmt.Errorf("%w: %s is too long for one condition (%d bytes)", ErrTooLarge, chunk[0], b.Len())
		}
		total += b.Len()
		conditions = append(conditions, admissionregistrationv1.MatchCondition{Name: conditionBrokers + strconv.Itoa(i), Expression: b.String()})
	}
	if len(conditions) > limits.MaxConditions || total > limits.MaxTotalBytes {
		return nil, fmt.Errorf("%w: %d StatefulSets need %d conditions and %d bytes, over the limits of %d and %d",
			ErrTooLarge, len(keys), len(conditions), total, limits.MaxConditions, limits.MaxTotalBytes)
	}
	return conditions, nil
}
