package charttest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/release"
	"k8s.io/apimachinery/pkg/util/yaml"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/brokerport/brokerport/manifests"
)

const chartDir = ".."

// object is one decoded manifest, keyed by what identifies it in a cluster.
type object = map[string]any

func key(o object) string {
	meta, _ := o["metadata"].(map[string]any)
	return fmt.Sprintf("%v %v %v/%v", o["apiVersion"], o["kind"], meta["namespace"], meta["name"])
}

// parse splits a multi-document YAML stream into objects by key. Comments and formatting go;
// values are compared as JSON (sigs.k8s.io/yaml), as the API server would receive them. Lists
// keep their order: both sides are the same YAML text, so a reordering would be a real change
// (args, containers, webhooks, matchConditions are ordered).
func parse(t *testing.T, stream string) map[string]object {
	t.Helper()
	objects := map[string]object{}
	reader := yaml.NewYAMLReader(bufio.NewReader(strings.NewReader(stream)))
	for {
		doc, err := reader.Read()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var o object
		require.NoError(t, sigsyaml.Unmarshal(doc, &o), "%s", doc)
		if o == nil { // a document of comments only
			continue
		}
		k := key(o)
		require.NotContains(t, objects, k, "two objects %s", k)
		objects[k] = o
	}
	return objects
}

// render is `helm template brokerport manifests/chart --namespace brokerport-system
// --kube-version 1.30.0 --set ...`: the oldest Kubernetes the chart accepts (Chart.yaml's
// kubeVersion).
func render(t *testing.T, values map[string]any) (string, error) {
	t.Helper()
	return renderFor(t, "v1.30.0", values)
}

func renderFor(t *testing.T, kubeVersion string, values map[string]any) (string, error) {
	t.Helper()
	chrt, err := loader.Load(chartDir)
	require.NoError(t, err)
	install := action.NewInstall(action.NewConfiguration(action.ConfigurationSetLogger(slog.DiscardHandler)))
	install.DryRunStrategy = action.DryRunClient
	install.Replace = true // no release store to check the name against
	install.ReleaseName = "brokerport"
	install.Namespace = "brokerport-system"
	install.KubeVersion, err = common.ParseKubeVersion(kubeVersion)
	require.NoError(t, err)
	rel, err := install.Run(chrt, values)
	if err != nil {
		return "", err
	}
	acc, err := release.NewAccessor(rel)
	require.NoError(t, err)
	require.Empty(t, acc.Hooks(), "the chart has no hooks: kustomize has nothing to compare them with")
	return acc.Manifest(), nil
}

func build(t *testing.T, overlay string, extraPatches ...string) map[string]object {
	t.Helper()
	out, err := manifests.Build(overlay, extraPatches...)
	require.NoError(t, err)
	return parse(t, string(out))
}

// celWhitespace compares CEL expressions with runs of whitespace as one space: kustomize
// re-emits a folded (>-) scalar whose continuation line is more indented with an extra blank line
// (kyaml's YAML v3 round trip), so `kubectl apply -k` sends "...'StatefulSet'\n\n  && r.name..."
// where the source, and helm, say "...'StatefulSet'\n  && r.name...". CEL ignores whitespace
// outside string literals, and no literal of brokerport's policies holds a run of it.
var celWhitespace = cmp.FilterPath(func(p cmp.Path) bool {
	if mi, ok := p.Last().(cmp.MapIndex); ok {
		k := mi.Key().String()
		return k == "expression" || k == "messageExpression"
	}
	return false
}, cmp.Transformer("cel", func(s any) any {
	if str, ok := s.(string); ok {
		return strings.Join(strings.Fields(str), " ")
	}
	return s
}))

// assertSame compares object sets: first which objects, then each object's content.
func assertSame(t *testing.T, want, got map[string]object) {
	t.Helper()
	if !assert.Equal(t, slices.Sorted(maps.Keys(want)), slices.Sorted(maps.Keys(got)), "objects (kustomize, helm)") {
		return
	}
	for k := range want {
		assert.Empty(t, cmp.Diff(want[k], got[k], celWhitespace), "%s (-kustomize +helm)", k)
	}
}

func TestChartRendersTheKustomizeManifests(t *testing.T) {
	for overlay, mode := range map[string]string{"default": "cert-manager", "standalone": "standalone"} {
		t.Run(overlay, func(t *testing.T) {
			values := map[string]any{}
			if mode != "cert-manager" { // cert-manager is the default
				values["tls"] = map[string]any{"mode": mode}
			}
			out, err := render(t, values)
			require.NoError(t, err)
			assertSame(t, build(t, overlay), parse(t, out))
		})
	}
}

// The namespace, image and replicas are values. The namespace appears in far more places than
// metadata (the webhook's Service and namespaceSelector, the policies' CEL, the certificate's DNS
// names, RBAC subjects): render with another one, check that brokerport-system is nowhere, then
// put it back by text and compare with kustomize, so every place that names it is covered.
func TestChartValues(t *testing.T) {
	const (
		namespace = "kafka-edge"
		image     = "registry.example.com/mirror/brokerport:v9.9.9"
	)
	replicas3 := "- target: {kind: Deployment, name: brokerport}\n  patch: '[{\"op\": \"replace\", \"path\": \"/spec/replicas\", \"value\": 3}]'\n"
	for overlay, mode := range map[string]string{"default": "cert-manager", "standalone": "standalone"} {
		t.Run(overlay, func(t *testing.T) {
			out, err := render(t, map[string]any{
				"tls":       map[string]any{"mode": mode},
				"namespace": namespace,
				"image":     map[string]any{"repository": "registry.example.com/mirror/brokerport", "tag": "v9.9.9"},
				"replicas":  3,
			})
			require.NoError(t, err)
			assert.NotContains(t, out, "brokerport-system")
			assert.NotContains(t, out, "ghcr.io/brokerport/brokerport")
			assert.Equal(t, 2, strings.Count(out, image), "the container's image and the gate image")
			out = strings.ReplaceAll(out, namespace, "brokerport-system")
			out = strings.ReplaceAll(out, image, "ghcr.io/brokerport/brokerport:v0.1.0")
			assertSame(t, build(t, overlay, replicas3), parse(t, out))
		})
	}
}

// One replica: no PodDisruptionBudget (minAvailable 1 of 1 would block every node drain).
func TestChartOneReplica(t *testing.T) {
	out, err := render(t, map[string]any{"replicas": 1})
	require.NoError(t, err)
	got := parse(t, out)
	want := build(t, "default", "- target: {kind: Deployment, name: brokerport}\n  patch: '[{\"op\": \"replace\", \"path\": \"/spec/replicas\", \"value\": 1}]'\n")
	pdb := "policy/v1 PodDisruptionBudget brokerport-system/brokerport"
	require.Contains(t, want, pdb)
	delete(want, pdb)
	assertSame(t, want, got)
}

// Installed into a namespace that exists (or that `helm install --create-namespace` creates),
// the chart must not render the Namespace: helm would refuse to adopt it.
func TestChartCreateNamespaceFalse(t *testing.T) {
	out, err := render(t, map[string]any{"createNamespace": false})
	require.NoError(t, err)
	got := parse(t, out)
	want := build(t, "default")
	ns := "v1 Namespace <nil>/brokerport-system"
	require.Contains(t, want, ns)
	delete(want, ns)
	assertSame(t, want, got)
}

func TestChartRefusesAnUnknownTLSMode(t *testing.T) {
	_, err := render(t, map[string]any{"tls": map[string]any{"mode": "cert-manger"}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `tls.mode: "cert-manger": must be cert-manager or standalone`)
}

// The namespace is written into YAML and into the policies' CEL string literals as is.
func TestChartRefusesABadNamespace(t *testing.T) {
	_, err := render(t, map[string]any{"namespace": "x', 'kube-system"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `namespace: "x', 'kube-system": must be a namespace name`)
}

// ValidatingAdmissionPolicy v1 and webhook matchConditions are GA since 1.30: refused before,
// rather than failing half-installed.
func TestChartRefusesKubernetes129(t *testing.T) {
	_, err := renderFor(t, "v1.29.9", nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "chart requires kubeVersion: >=1.30.0-0")
}

// `helm lint --strict`: Chart.yaml, values and templates, in both modes.
func TestChartLints(t *testing.T) {
	for _, mode := range []string{"cert-manager", "standalone"} {
		linter := lint.RunAll(chartDir, map[string]any{"tls": map[string]any{"mode": mode}}, "brokerport-system")
		for _, m := range linter.Messages {
			assert.Less(t, m.Severity, support.WarningSev, "%s: %s", mode, m) // --strict: warnings fail too
		}
	}
}

// networkPolicy.enabled adds a NetworkPolicy and nothing else: the webhook port admits only the
// CIDRs given, the metrics port only the namespaces given, both named as the Deployment names its
// container ports.
func TestChartNetworkPolicy(t *testing.T) {
	out, err := render(t, map[string]any{"networkPolicy": map[string]any{
		"enabled": true, "apiServerCIDRs": []any{"10.0.0.0/24", "fd00::/64"}, "metricsNamespaces": []any{"monitoring"},
	}})
	require.NoError(t, err)
	got := parse(t, out)
	np := "networking.k8s.io/v1 NetworkPolicy brokerport-system/brokerport"
	require.Contains(t, got, np)
	policy := got[np]
	delete(got, np)
	assertSame(t, build(t, "default"), got)

	want := map[string]any{
		"podSelector": map[string]any{"matchLabels": map[string]any{"app.kubernetes.io/name": "brokerport"}},
		"policyTypes": []any{"Ingress"},
		"ingress": []any{
			map[string]any{
				"ports": []any{map[string]any{"port": "webhook", "protocol": "TCP"}},
				"from":  []any{map[string]any{"ipBlock": map[string]any{"cidr": "10.0.0.0/24"}}, map[string]any{"ipBlock": map[string]any{"cidr": "fd00::/64"}}},
			},
			map[string]any{
				"ports": []any{map[string]any{"port": "metrics", "protocol": "TCP"}},
				"from":  []any{map[string]any{"namespaceSelector": map[string]any{"matchLabels": map[string]any{"kubernetes.io/metadata.name": "monitoring"}}}},
			},
		},
	}
	if diff := cmp.Diff(want, policy["spec"]); diff != "" {
		t.Errorf("NetworkPolicy spec (-want +got):\n%s", diff)
	}
	// The named ports are the container's.
	deployment := got["apps/v1 Deployment brokerport-system/brokerport"]
	require.NotNil(t, deployment)
	var names []string
	for _, c := range deployment["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any) {
		for _, p := range c.(map[string]any)["ports"].([]any) {
			names = append(names, p.(map[string]any)["name"].(string))
		}
	}
	assert.Subset(t, names, []string{"webhook", "metrics"})
}

func TestChartNetworkPolicyNeedsTheAPIServer(t *testing.T) {
	_, err := render(t, map[string]any{"networkPolicy": map[string]any{"enabled": true}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "networkPolicy.apiServerCIDRs")
}
