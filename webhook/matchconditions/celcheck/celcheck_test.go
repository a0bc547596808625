// Package celcheck proves brokerport's binding matchConditions in the API server's CEL
// environment: each condition compiles as the API server validates it when the webhook
// configuration is written, and each Binding of the golden cases is sent to brokerport exactly
// when brokerport's own handler (patches.BrokerCandidate) would act on it, within the runtime cost
// budget of a webhook's matchConditions.
package celcheck

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/admission"
	plugincel "k8s.io/apiserver/pkg/admission/plugin/cel"
	"k8s.io/apiserver/pkg/admission/plugin/webhook/matchconditions"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/apiserver/pkg/cel/environment"
)

type golden struct {
	Conditions []admissionregistrationv1.MatchCondition `json:"conditions"`
	Cases      []struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
		Send      bool   `json:"send"`
	} `json:"cases"`
}

func readGoldens(t testing.TB) map[string]golden {
	files, err := filepath.Glob(filepath.Join("..", "testdata", "cel", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files in ../testdata/cel (%v)", err)
	}
	out := map[string]golden{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var g golden
		if err := json.Unmarshal(raw, &g); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out[strings.TrimSuffix(filepath.Base(f), ".json")] = g
	}
	return out
}

// The options the API server uses: validation compiles new expressions (NewExpressions), the
// dispatcher evaluates stored ones, both with the authorizer declared, strict cost as the
// StrictCostEnforcementForWebhooks gate (on since 1.32) sets it.
var (
	compiler = plugincel.NewConditionCompiler(environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion(), true))
	decls    = plugincel.OptionalVariableDeclarations{HasAuthorizer: true, StrictCost: true}
)

func evaluator(t testing.TB, conditions []admissionregistrationv1.MatchCondition, mode environment.Type) plugincel.ConditionEvaluator {
	accessors := make([]plugincel.ExpressionAccessor, len(conditions))
	for i, c := range conditions {
		accessors[i] = &matchconditions.MatchCondition{Name: c.Name, Expression: c.Expression}
	}
	single := plugincel.NewCompiler(environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion(), true))
	for _, a := range accessors {
		if res := single.CompileCELExpression(a, decls, mode); res.Error != nil {
			t.Fatalf("condition %s does not compile: %v", a.(*matchconditions.MatchCondition).Name, res.Error)
		}
	}
	return compiler.CompileCondition(accessors, decls, mode)
}

// binding is what the API server matches for POST pods/NAME/binding.
func binding(namespace, name string) *admission.VersionedAttributes {
	b := &corev1.Binding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Binding"},
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Target:     corev1.ObjectReference{Kind: "Node", Name: "node-1"},
	}
	kind := schema.GroupVersionKind{Version: "v1", Kind: "Binding"}
	attrs := admission.NewAttributesRecord(b, nil, kind, namespace, name,
		schema.GroupVersionResource{Version: "v1", Resource: "pods"}, "binding", admission.Create, &metav1.CreateOptions{}, false, nil)
	return &admission.VersionedAttributes{Attributes: attrs, VersionedObject: b, VersionedKind: kind}
}

func TestGoldenConditions(t *testing.T) {
	for name, g := range readGoldens(t) {
		t.Run(name, func(t *testing.T) {
			evaluator(t, g.Conditions, environment.NewExpressions)
			filter := evaluator(t, g.Conditions, environment.StoredExpressions)
			ignore := admissionregistrationv1.Ignore
			matcher := matchconditions.NewMatcher(filter, &ignore, "webhook", "admit", "bindings.brokerport.io")
			maxCost := int64(0)
			for _, c := range g.Cases {
				attrs := binding(c.Namespace, c.Name)
				// Any error counts in apiserver_admission_match_condition_evaluation_errors_total.
				results, remaining, err := filter.ForInput(context.Background(), attrs,
					plugincel.CreateAdmissionRequest(attrs.Attributes, metav1.GroupVersionResource{Version: "v1", Resource: "pods"}, metav1.GroupVersionKind(attrs.VersionedKind)),
					plugincel.OptionalVariableBindings{}, nil, celconfig.RuntimeCELCostBudgetMatchConditions)
				if err != nil {
					t.Fatalf("%s/%s: %v", c.Namespace, c.Name, err)
				}
				for _, r := range results {
					if r.Error != nil {
						t.Errorf("%s/%s: condition %s: %.300v", c.Namespace, c.Name, r.ExpressionAccessor.(*matchconditions.MatchCondition).Name, r.Error)
					}
				}
				maxCost = max(maxCost, celconfig.RuntimeCELCostBudgetMatchConditions-remaining)
				got := matcher.Match(context.Background(), attrs, nil, nil)
				if got.Error != nil || got.Matches != c.Send {
					t.Errorf("%s/%s: sent %v (error %v), want %v", c.Namespace, c.Name, got.Matches, got.Error, c.Send)
				}
			}
			t.Logf("%d conditions, %d bytes, highest cost %d of %d", len(g.Conditions), size(g.Conditions), maxCost, celconfig.RuntimeCELCostBudgetMatchConditions)
			if maxCost > celconfig.PerCallLimit/10 {
				t.Errorf("cost %d: a tenth of the per-expression limit %d is the budget brokerport allows itself", maxCost, celconfig.PerCallLimit)
			}
		})
	}
}

func size(conditions []admissionregistrationv1.MatchCondition) int {
	n := 0
	for _, c := range conditions {
		n += len(c.Expression)
	}
	return n
}

// BenchmarkForms compares the set lookup brokerport writes with the two forms the issue
// suggested: a regular expression per namespace, and startsWith per StatefulSet with a digit
// check. At 1,000 StatefulSets the startsWith form does not even parse (120,196 code points), so
// all three are measured at 500. Run: go test -bench . -run XXX
func BenchmarkForms(b *testing.B) {
	g := readGoldens(b)["thousand"]
	keys := regexp.MustCompile(`"([^"/]+)/([^"]+)-"`).FindAllStringSubmatch(g.Conditions[1].Expression, -1)[:500]
	set := strings.SplitN(g.Conditions[1].Expression, " in [", 2)[0] + " in ["
	for i, k := range keys {
		if i > 0 {
			set += ", "
		}
		set += k[0]
	}
	set += "]"
	byNS := map[string][]string{}
	var namespaces []string
	for _, k := range keys {
		if _, ok := byNS[k[1]]; !ok {
			namespaces = append(namespaces, k[1])
		}
		byNS[k[1]] = append(byNS[k[1]], k[2])
	}
	var regex, prefix []string
	for _, ns := range namespaces {
		regex = append(regex, fmt.Sprintf(`request.namespace == %q && object.metadata.name.matches(%q)`, ns, "^(?:"+strings.Join(byNS[ns], "|")+")-[0-9]+$"))
		var p []string
		for _, sts := range byNS[ns] {
			p = append(p, fmt.Sprintf(`object.metadata.name.startsWith(%q) && object.metadata.name.substring(%d).matches("^[0-9]+$")`, sts+"-", len(sts)+1))
		}
		prefix = append(prefix, fmt.Sprintf(`request.namespace == %q && (%s)`, ns, strings.Join(p, " || ")))
	}
	last := keys[len(keys)-1]
	forms := map[string][]admissionregistrationv1.MatchCondition{
		"set":        {g.Conditions[0], {Name: "brokers-0", Expression: set}},
		"regex":      {{Name: "brokers", Expression: strings.Join(regex, " || ")}},
		"startsWith": {{Name: "brokers", Expression: strings.Join(prefix, " || ")}},
	}
	for name, conditions := range forms {
		filter := evaluator(b, conditions, environment.StoredExpressions)
		for pod, attrs := range map[string]*admission.VersionedAttributes{
			"broker":     binding(last[1], last[2]+"-3"),
			"not-broker": binding(last[1], "web-7d9f8c6b5-x2x7q"),
		} {
			b.Run(name+"/"+pod, func(b *testing.B) {
				req := plugincel.CreateAdmissionRequest(attrs.Attributes, metav1.GroupVersionResource{Version: "v1", Resource: "pods"}, metav1.GroupVersionKind(attrs.VersionedKind))
				var cost int64
				for b.Loop() {
					_, remaining, err := filter.ForInput(context.Background(), attrs, req, plugincel.OptionalVariableBindings{}, nil, celconfig.RuntimeCELCostBudgetMatchConditions)
					if err != nil {
						b.Fatal(err)
					}
					cost = celconfig.RuntimeCELCostBudgetMatchConditions - remaining
				}
				b.ReportMetric(float64(cost), "cel-cost")
				b.ReportMetric(float64(size(conditions)), "bytes")
			})
		}
	}
}
