package manifests

import (
	"bufio"
	"bytes"
	"slices"
	"testing"

	certmanagerv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
)

// decode builds an overlay and strictly decodes every object into its typed API: an unknown or
// misspelt field fails, as `kubectl apply --validate=strict` would.
func decode(t *testing.T, overlay string) []runtime.Object {
	t.Helper()
	out, err := Build(overlay)
	require.NoError(t, err)
	scheme := runtime.NewScheme()
	require.NoError(t, clientgoscheme.AddToScheme(scheme))
	require.NoError(t, certmanagerv1.AddToScheme(scheme))
	strict := json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme, scheme, json.SerializerOptions{Yaml: true, Strict: true})

	var objects []runtime.Object
	reader := yaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(out)))
	for {
		doc, err := reader.Read()
		if err != nil {
			break
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, gvk, err := strict.Decode(doc, nil, nil)
		require.NoError(t, err, "%s:\n%s", overlay, doc)
		require.NotNil(t, gvk)
		objects = append(objects, obj)
	}
	return objects
}

func TestOverlaysDecodeStrictly(t *testing.T) {
	for _, overlay := range []string{"default", "standalone"} {
		t.Run(overlay, func(t *testing.T) {
			objects := decode(t, overlay)
			kinds := map[string]int{}
			for _, o := range objects {
				kinds[o.GetObjectKind().GroupVersionKind().Kind]++
			}
			assert.Equal(t, 1, kinds["Deployment"])
			assert.Equal(t, 1, kinds["MutatingWebhookConfiguration"])
			assert.Equal(t, 1, kinds["PodDisruptionBudget"])
			assert.Equal(t, 5, kinds["ValidatingAdmissionPolicy"], "the port band, brokerport's writes to three kinds of object, and what its Certificates ask for")
			assert.Equal(t, 5, kinds["ValidatingAdmissionPolicyBinding"])
			assert.Equal(t, 2, kinds["Service"], "the webhook's and the metrics'")
			if overlay == "default" {
				assert.Equal(t, 2, kinds["Certificate"])
				assert.Equal(t, 2, kinds["Issuer"])
			} else {
				assert.Zero(t, kinds["Certificate"])
			}
		})
	}
}

func TestWebhookConfiguration(t *testing.T) {
	for _, overlay := range []string{"default", "standalone"} {
		for _, o := range decode(t, overlay) {
			mwc, ok := o.(*admissionregistrationv1.MutatingWebhookConfiguration)
			if !ok {
				continue
			}
			if overlay == "default" {
				assert.Equal(t, "brokerport-system/brokerport-webhook", mwc.Annotations["cert-manager.io/inject-ca-from"])
			}
			require.Len(t, mwc.Webhooks, 5)
			for _, w := range mwc.Webhooks {
				assert.Equal(t, []string{"v1"}, w.AdmissionReviewVersions, w.Name)
				require.NotNil(t, w.NamespaceSelector, w.Name)
				assert.Equal(t, []string{"brokerport-system", "kube-system"}, w.NamespaceSelector.MatchExpressions[0].Values, w.Name)
				require.NotNil(t, w.ReinvocationPolicy, w.Name)
				require.NotNil(t, w.TimeoutSeconds, w.Name)
				if w.Name == "scale.brokerport.io" {
					assert.Equal(t, admissionregistrationv1.Ignore, *w.FailurePolicy, "the pod entry still guards max-brokers")
					assert.Nil(t, w.ObjectSelector, "a Scale has no labels to select on")
					assert.Equal(t, []string{"statefulsets/scale"}, w.Rules[0].Resources)
					continue
				}
				if w.Name == "bindings.brokerport.io" {
					assert.Equal(t, admissionregistrationv1.Ignore, *w.FailurePolicy)
					assert.Equal(t, int32(2), *w.TimeoutSeconds)
					assert.Nil(t, w.ObjectSelector, "a Binding has no labels to select on")
					assert.Equal(t, []string{"pods/binding", "bindings"}, w.Rules[0].Resources)
					continue
				}
				assert.Equal(t, admissionregistrationv1.Fail, *w.FailurePolicy, w.Name)
				wantSideEffects := admissionregistrationv1.SideEffectClassNone
				if w.Name == "statefulsets.brokerport.io" {
					// It records Events, never on a dry run.
					wantSideEffects = admissionregistrationv1.SideEffectClassNoneOnDryRun
				}
				assert.Equal(t, wantSideEffects, *w.SideEffects, w.Name)
				assert.Equal(t, "true", w.ObjectSelector.MatchLabels["brokerport.io/expose"], w.Name)
			}
		}
	}
}

func TestDeploymentIsHardened(t *testing.T) {
	for _, overlay := range []string{"default", "standalone"} {
		for _, o := range decode(t, overlay) {
			d, ok := o.(*appsv1.Deployment)
			if !ok {
				continue
			}
			assert.Equal(t, int32(2), *d.Spec.Replicas)
			c := d.Spec.Template.Spec.Containers[0]
			assert.True(t, *c.SecurityContext.ReadOnlyRootFilesystem)
			assert.False(t, *c.SecurityContext.AllowPrivilegeEscalation)
			assert.Equal(t, "ALL", string(c.SecurityContext.Capabilities.Drop[0]))
			assert.True(t, *d.Spec.Template.Spec.SecurityContext.RunAsNonRoot)
			assert.NotNil(t, c.ReadinessProbe)
			assert.NotNil(t, c.LivenessProbe)
			assert.False(t, c.Resources.Requests.Cpu().IsZero())
			assert.Equal(t, c.Image, c.Env[0].Value, "the gate image is brokerport's own")
			metrics := c.Ports[slices.IndexFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == "metrics" })]
			assert.Equal(t, int32(8443), metrics.ContainerPort, "metrics over HTTPS on brokerport's default --metrics-bind-address")
			assert.NotContains(t, c.Args, "--metrics-secure=false")
			if overlay == "standalone" {
				assert.Contains(t, c.Args, "--self-managed-certs")
				assert.NotNil(t, d.Spec.Template.Spec.Volumes[0].EmptyDir, "a writable cert directory")
			}
		}
	}
}

// Metrics are for callers bound to brokerport-metrics-reader, which the manifests bind to nobody;
// brokerport itself may ask the API server who a caller is and what it may do.
func TestMetricsRBAC(t *testing.T) {
	var reader *rbacv1.ClusterRole
	for _, o := range decode(t, "default") {
		switch o := o.(type) {
		case *rbacv1.ClusterRole:
			if o.Name == "brokerport-metrics-reader" {
				reader = o
			}
		case *rbacv1.ClusterRoleBinding:
			assert.NotEqual(t, "brokerport-metrics-reader", o.RoleRef.Name, "bound by the cluster's admin to its scraper")
		}
	}
	require.NotNil(t, reader)
	assert.Equal(t, []rbacv1.PolicyRule{{Verbs: []string{"get"}, NonResourceURLs: []string{"/metrics"}}}, reader.Rules)
	calls := map[string]bool{}
	for _, r := range rules(t, "default") {
		for _, res := range r.Resources {
			for _, v := range r.Verbs {
				calls[v+" "+res] = true
			}
		}
	}
	assert.True(t, calls["create tokenreviews"])
	assert.True(t, calls["create subjectaccessreviews"])
}
