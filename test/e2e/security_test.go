//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/brokerport/brokerport/patches"
	"github.com/brokerport/brokerport/webhook"
	"github.com/brokerport/brokerport/webhook/controller"
)

const (
	securityNS     = "security"
	brokerportUser = "system:serviceaccount:brokerport-system:brokerport"
)

// Least privilege, enforced by the API server: the port band cannot be squatted, brokerport's
// own identity writes only its own objects, metrics need an authorized token.
func TestSecurity(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := env.admin
	// Removed as every scenario's: its opted-in StatefulSet first, then the namespace.
	convergeNamespace(t, ctx, securityNS, nil)
	require.NoError(t, waitFor(ctx, 30*time.Second, "the namespace's default ServiceAccount", func() error {
		return c.Get(ctx, client.ObjectKey{Namespace: securityNS, Name: "default"}, &corev1.ServiceAccount{})
	}))
	// A StatefulSet (not opted in, no pods) for brokerport's test objects to be owned by: the
	// garbage collector deletes objects whose owner does not exist.
	owner := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "owner", Namespace: securityNS},
		Spec: appsv1.StatefulSetSpec{
			Replicas: ptrTo(int32(0)), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "owner"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "owner"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "owner:e2e"}}}},
		},
	}
	require.NoError(t, c.Create(ctx, owner))

	steps := []struct {
		name string
		run  func(*testing.T, context.Context, *appsv1.StatefulSet)
	}{
		{"policies are accepted by the API server", policiesAccepted},
		{"a Service squatting the port band is refused", squatRefused},
		{"brokerport's identity writes only its own objects", brokerportBounded},
		{"metrics need a token authorized for /metrics", metricsAuthorized},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) { s.run(t, ctx, owner) })
	}
}

// policiesAccepted: the policies are in place, type-check against their kinds' schemas with no
// warning, and are enforced (the API server loads them asynchronously, about a second after they
// are created): dry-run requests, which admission sees, are refused.
func policiesAccepted(t *testing.T, ctx context.Context, owner *appsv1.StatefulSet) {
	block := assignedBlock(t, ctx)
	for _, name := range []string{"brokerport-port-band", "brokerport-writes", "brokerport-pod-writes", "brokerport-statefulset-writes"} {
		typeChecked(t, ctx, name)
	}
	bp := asBrokerport(t)
	probes := map[string]func() error{
		"brokerport-port-band": func() error {
			return env.admin.Create(ctx, nodePortService("probe", block.Last), client.DryRunAll)
		},
		"brokerport-writes": func() error {
			return bp.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "probe", Namespace: securityNS}}, client.DryRunAll)
		},
		"brokerport-statefulset-writes": func() error {
			return bp.Patch(ctx, owner.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(`{"spec":{"replicas":1}}`)), client.DryRunAll)
		},
	}
	for name, probe := range probes {
		require.NoError(t, waitFor(ctx, 30*time.Second, name+" enforced", func() error {
			if err := probe(); err == nil || !strings.Contains(err.Error(), "ValidatingAdmissionPolicy '"+name+"'") {
				return fmt.Errorf("probe not refused by the policy: %v", err)
			}
			return nil
		}))
	}
}

// typeChecked waits until the API server has type-checked policy name against the schemas of
// the kinds it matches, and fails the test for each warning.
func typeChecked(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	policies := env.clientset.AdmissionregistrationV1().ValidatingAdmissionPolicies()
	require.NoError(t, waitFor(ctx, 30*time.Second, "type checking of "+name, func() error {
		p, err := policies.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.TypeChecking == nil || p.Status.ObservedGeneration != p.Generation {
			return fmt.Errorf("not type-checked yet")
		}
		for _, w := range p.Status.TypeChecking.ExpressionWarnings {
			t.Errorf("%s %s: %s", name, w.FieldRef, w.Warning)
		}
		return nil
	}))
}

// assignedBlock opts in StatefulSet "blocked" of the security namespace, with no brokers, once,
// and returns its port block as soon as brokerport has published it in the parameters of the
// port-band policy (ConfigMap brokerport-system/brokerport-port-blocks).
func assignedBlock(t *testing.T, ctx context.Context) patches.PortRange {
	t.Helper()
	sts := brokerStatefulSet(securityNS, "blocked", 0)
	if err := env.admin.Create(ctx, sts); err != nil && !apierrors.IsAlreadyExists(err) {
		require.NoError(t, err)
	}
	var block patches.PortRange
	require.NoError(t, waitFor(ctx, 30*time.Second, "the block of security/blocked among the port-band policy's parameters", func() error {
		cfg, err := stsConfig(ctx, securityNS, "blocked")
		if err != nil {
			return err
		}
		block = cfg.Block()
		cm := &corev1.ConfigMap{}
		if err := env.admin.Get(ctx, client.ObjectKey{Namespace: "brokerport-system", Name: controller.PortBlocksConfigMap}, cm); err != nil {
			return err
		}
		if want := fmt.Sprintf("%d-%d", block.First, block.Last); cm.Data[securityNS+".blocked"] != want {
			return fmt.Errorf("%s lists %q for security/blocked, want %q", controller.PortBlocksConfigMap, cm.Data[securityNS+".blocked"], want)
		}
		return nil
	}))
	return block
}

func nodePortService(name string, nodePort int32) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: securityNS},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: map[string]string{"app": name},
			Ports: []corev1.ServicePort{{Name: "kafka", Port: 9092, NodePort: nodePort}}},
	}
}

// ownedBy labels and owns obj as brokerport's controller does.
func ownedBy[T client.Object](obj T, sts *appsv1.StatefulSet) T {
	labels := obj.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	labels[patches.LabelManagedBy] = patches.ManagedByValue
	labels[patches.LabelCluster] = sts.Name
	obj.SetLabels(labels)
	obj.SetOwnerReferences([]metav1.OwnerReference{*metav1.NewControllerRef(sts, appsv1.SchemeGroupVersion.WithKind("StatefulSet"))})
	return obj
}

// asBrokerport is a client that acts as brokerport's ServiceAccount (impersonated by the admin),
// so that both its RBAC and the policies bound to it apply.
func asBrokerport(t *testing.T) client.Client {
	cfg, err := clientcmd.BuildConfigFromFlags("", env.cp.AdminKubeconfig)
	require.NoError(t, err)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: brokerportUser, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:brokerport-system", "system:authenticated"}}
	c, err := client.New(cfg, client.Options{Scheme: webhook.Scheme()})
	require.NoError(t, err)
	return c
}

func squatRefused(t *testing.T, ctx context.Context, owner *appsv1.StatefulSet) {
	c := env.admin
	block := assignedBlock(t, ctx)
	port := block.Last // the block's StatefulSet has no brokers: no Service holds it
	inBlock := fmt.Sprintf("is in port block %d-%d, which brokerport assigned", block.First, block.Last)

	err := c.Create(ctx, nodePortService("squatter", port))
	require.Error(t, err, "a Service from another namespace took nodePort %d of block %s", port, block)
	assert.Contains(t, err.Error(), "ValidatingAdmissionPolicy 'brokerport-port-band'")
	assert.Contains(t, err.Error(), fmt.Sprintf("spec.ports[].nodePort %d %s", port, inBlock))

	// Outside the band: none of brokerport's business.
	outside := nodePortService("outside", patches.DefaultPortRange.Last+100)
	require.NoError(t, c.Create(ctx, outside))
	require.NoError(t, c.Delete(ctx, outside))

	// Inside the band but in no block: the Redpanda chart's default external Service (schema
	// registry 30081, HTTP proxy 30082, with externalTrafficPolicy Local), in a namespace that
	// never opted in, is admitted, and the next block assigned skips its ports.
	chart := redpandaChartService()
	for _, p := range chart.Spec.Ports {
		if p.NodePort >= block.First && p.NodePort <= block.Last {
			t.Fatalf("the test's block %s overlaps the chart's nodePort %d: the band is more crowded than the test expects", block, p.NodePort)
		}
	}
	require.NoError(t, c.Create(ctx, chart), "the Redpanda chart's default Service, with brokerport installed")
	defer func() { _ = c.Delete(ctx, chart) }()

	// A Service that already holds a port of a block (here brokerport's own) keeps it through
	// an update, and cannot move to another.
	held := ownedBy(nodePortService("held", port), owner)
	require.NoError(t, asBrokerport(t).Create(ctx, held))
	defer func() { _ = c.Delete(ctx, held) }()
	require.NoError(t, c.Patch(ctx, held, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"annotations":{"edited":"by a user"}}}`))))
	err = c.Patch(ctx, held, client.RawPatch(types.MergePatchType, []byte(fmt.Sprintf(`{"spec":{"ports":[{"name":"kafka","port":9092,"nodePort":%d}]}}`, port-1))))
	require.Error(t, err)
	assert.Contains(t, err.Error(), fmt.Sprintf("spec.ports[].nodePort %d is in port block", port-1))
}

// redpandaChartService is the external NodePort Service the Redpanda chart (and operator) make by
// default, as `helm template redpanda/redpanda` renders it.
func redpandaChartService() *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "redpanda-external", Namespace: securityNS},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
			Selector: map[string]string{"app.kubernetes.io/name": "redpanda"},
			Ports: []corev1.ServicePort{
				{Name: "admin-default", Port: 9645, NodePort: 31644},
				{Name: "kafka-default", Port: 9094, NodePort: 31092},
				{Name: "http-default", Port: 8083, NodePort: 30082},
				{Name: "schema-default", Port: 8084, NodePort: 30081},
			}},
	}
}

func brokerportBounded(t *testing.T, ctx context.Context, owner *appsv1.StatefulSet) {
	admin, bp := env.admin, asBrokerport(t)
	// Other people's objects, and broker-like ones.
	teamConfig := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "team-config", Namespace: securityNS}, Data: map[string]string{"k": "v"}}
	teamService := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "team-svc", Namespace: securityNS},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}
	victim := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "brokerport-e2e-victim", Namespace: "kube-system"}, Data: map[string]string{"k": "v"}}
	pod := func(name string, labels map[string]string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: securityNS, Labels: labels, Annotations: map[string]string{"team": "a"}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "app:e2e"}}},
		}
	}
	plain := pod("plain", map[string]string{"app": "plain"})
	broker := pod("broker", map[string]string{"app": "broker", patches.LabelCluster: owner.Name})
	for _, o := range []client.Object{teamConfig, teamService, victim, plain, broker} {
		require.NoError(t, admin.Create(ctx, o), "%T %s", o, o.GetName())
	}
	defer func() { _ = admin.Delete(ctx, victim) }()

	refused := func(what, want string, err error) {
		t.Helper()
		if assert.Error(t, err, "brokerport's identity could %s", what) {
			assert.Contains(t, err.Error(), "ValidatingAdmissionPolicy 'brokerport-", what)
			assert.Contains(t, err.Error(), want, what)
		}
	}
	merge := func(patch string) client.Patch { return client.RawPatch(types.MergePatchType, []byte(patch)) }
	// RBAC gives brokerport update, not patch, on ConfigMaps and Services.
	update := func(obj client.Object, change func(client.Object)) error {
		obj = obj.DeepCopyObject().(client.Object)
		require.NoError(t, admin.Get(ctx, client.ObjectKeyFromObject(obj), obj))
		change(obj)
		return bp.Update(ctx, obj)
	}
	setData := func(o client.Object) { o.(*corev1.ConfigMap).Data = map[string]string{"k": "stolen"} }

	// What is not brokerport's, RBAC allows it and the policy refuses it.
	refused("delete another's ConfigMap", "brokerport writes only configmaps it owns", bp.Delete(ctx, teamConfig))
	refused("update another's ConfigMap", "configmaps it owns", update(teamConfig, setData))
	refused("adopt another's ConfigMap", "before and after the update", update(teamConfig, func(o client.Object) { ownedBy(o, owner) }))
	refused("delete another's Service", "brokerport writes only services it owns", bp.Delete(ctx, teamService))
	refused("update another's Service", "services it owns", update(teamService, func(o client.Object) { o.(*corev1.Service).Spec.Ports[0].Port = 81 }))
	refused("create a Service without its labels", "services it owns", bp.Create(ctx, nodePortService("unlabeled", 0)))
	podRule := "brokerport may change only the brokerport.io/ annotations of a broker pod"
	refused("patch a pod's labels", podRule, bp.Patch(ctx, broker.DeepCopy(), merge(`{"metadata":{"labels":{"app":"stolen"}}}`)))
	refused("patch a pod's spec", podRule, bp.Patch(ctx, broker.DeepCopy(), merge(`{"spec":{"activeDeadlineSeconds":10}}`)))
	refused("patch another annotation", podRule, bp.Patch(ctx, broker.DeepCopy(), merge(`{"metadata":{"annotations":{"team":"b"}}}`)))
	refused("annotate a pod that is not a broker", podRule, bp.Patch(ctx, plain.DeepCopy(), merge(`{"metadata":{"annotations":{"brokerport.io/host":"attacker.example.com"}}}`)))
	refused("delete a pod that is not a broker", "brokerport deletes only broker pods", bp.Delete(ctx, plain))
	inKubeSystem := ownedBy(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "brokerport-e2e", Namespace: "kube-system"}}, owner)
	refused("create in kube-system", "brokerport may not write configmaps in namespace kube-system", bp.Create(ctx, inKubeSystem))
	refused("update in kube-system", "in namespace kube-system", update(victim, setData))
	refused("delete in kube-system", "in namespace kube-system", bp.Delete(ctx, victim))
	refused("create another Secret in its namespace", "brokerport writes only one Secret",
		bp.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "brokerport-e2e", Namespace: "brokerport-system"}}))

	// What is brokerport's own: allowed.
	svc := ownedBy(nodePortService("own", 0), owner)
	require.NoError(t, bp.Create(ctx, svc))
	require.NoError(t, update(svc, func(o client.Object) { o.(*corev1.Service).Spec.Ports[0].Port = 9093 }))
	require.NoError(t, bp.Delete(ctx, svc))
	// Not named <sts>-external: brokerport's controller would remove that one, its StatefulSet
	// not being opted in.
	cm := ownedBy(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "owned-config", Namespace: securityNS}, Data: map[string]string{"k": "v"}}, owner)
	require.NoError(t, bp.Create(ctx, cm))
	require.NoError(t, update(cm, func(o client.Object) { o.(*corev1.ConfigMap).Data["k"] = "w" }))
	require.NoError(t, bp.Delete(ctx, cm))
	require.NoError(t, bp.Patch(ctx, broker.DeepCopy(), merge(`{"metadata":{"annotations":{"brokerport.io/host":"203.0.113.7"}}}`)))
	require.NoError(t, bp.Delete(ctx, broker))

	// Nothing changed on the objects it was refused.
	got := &corev1.ConfigMap{}
	require.NoError(t, admin.Get(ctx, client.ObjectKeyFromObject(victim), got))
	assert.Equal(t, "v", got.Data["k"])
	gotPod := &corev1.Pod{}
	require.NoError(t, admin.Get(ctx, client.ObjectKeyFromObject(plain), gotPod))
	assert.Equal(t, "plain", gotPod.Labels["app"])
	assert.Empty(t, gotPod.Annotations[patches.AnnotationHost])
}

func metricsAuthorized(t *testing.T, ctx context.Context, _ *appsv1.StatefulSet) {
	url, err := env.cp.BrokerportMetricsURL()
	require.NoError(t, err)
	// The certificate is self-signed: what is tested here is who may read, not the server's name.
	httpClient := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	scrape := func(token string) (int, string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return 0, "", err
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), err
	}
	token := func(name string) string {
		_, err := env.clientset.CoreV1().ServiceAccounts(securityNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		require.NoError(t, err)
		tr, err := env.clientset.CoreV1().ServiceAccounts(securityNS).CreateToken(ctx, name, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptrTo(int64(600))}}, metav1.CreateOptions{})
		require.NoError(t, err)
		return tr.Status.Token
	}

	code, _, err := scrape("")
	require.NoError(t, err, "metrics are served over HTTPS at %s", url)
	assert.Equal(t, http.StatusUnauthorized, code, "no token")
	// controller-runtime's filter answers an invalid token with 500 ("Authentication failed"):
	// refused all the same.
	code, body, err := scrape("not-a-token")
	require.NoError(t, err)
	assert.NotEqual(t, http.StatusOK, code, "an invalid token")
	assert.NotContains(t, body, "brokerport_")
	code, _, err = scrape(token("nobody"))
	require.NoError(t, err)
	assert.Equal(t, http.StatusForbidden, code, "a ServiceAccount not bound to brokerport-metrics-reader")

	scraper := token("scraper")
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "brokerport-e2e-metrics-reader"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "brokerport-metrics-reader"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "scraper", Namespace: securityNS}},
	}
	require.NoError(t, env.admin.Create(ctx, binding))
	defer func() { _ = env.admin.Delete(context.Background(), binding) }()
	// Within brokerport's cache of authorization decisions (30 s for a denial).
	require.NoError(t, waitFor(ctx, 60*time.Second, "an authorized scrape", func() error {
		code, body, err := scrape(scraper)
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("status %d", code)
		}
		if !strings.Contains(body, "# TYPE brokerport_") {
			return fmt.Errorf("no brokerport_ metric in %d bytes", len(body))
		}
		return nil
	}))
}
