package manifests

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/admission"
	"k8s.io/apiserver/pkg/admission/plugin/cel"
	"k8s.io/apiserver/pkg/admission/plugin/policy/validating"
	"k8s.io/apiserver/pkg/admission/plugin/webhook/matchconditions"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/cel/environment"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/brokerport/brokerport/patches"
	"github.com/brokerport/brokerport/webhook/controller"
)

const brokerportUser = "system:serviceaccount:brokerport-system:brokerport"

// compiledPolicy is a ValidatingAdmissionPolicy compiled the way kube-apiserver compiles it
// (k8s.io/apiserver's validating plugin, compilePolicy), so that these tests evaluate the
// manifests' CEL exactly as the API server will.
type compiledPolicy struct {
	*admissionregistrationv1.ValidatingAdmissionPolicy
	validator validating.Validator
	// paramRef is its binding's, for a policy with parameters.
	paramRef *admissionregistrationv1.ParamRef
}

func compilePolicy(t *testing.T, p *admissionregistrationv1.ValidatingAdmissionPolicy) *compiledPolicy {
	t.Helper()
	compiler, err := cel.NewCompositedCompiler(environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion()))
	require.NoError(t, err)
	hasParams := p.Spec.ParamKind != nil
	vars := cel.OptionalVariableDeclarations{HasParams: hasParams, HasAuthorizer: true}
	// The API server refuses a policy whose expressions do not compile; so does this test.
	compiles := func(what string, e cel.ExpressionAccessor) {
		if e != nil {
			require.Nil(t, compiler.CompileCELExpression(e, vars, environment.StoredExpressions).Error, "%s %s: %s", p.Name, what, e.GetExpression())
		}
	}
	for _, v := range p.Spec.Variables {
		result := compiler.CompileAndStoreVariable(&validating.Variable{Name: v.Name, Expression: v.Expression}, vars, environment.StoredExpressions)
		require.Nil(t, result.Error, "%s variable %s", p.Name, v.Name)
	}
	var matcher matchconditions.Matcher
	if len(p.Spec.MatchConditions) > 0 {
		var conditions []cel.ExpressionAccessor
		for i := range p.Spec.MatchConditions {
			conditions = append(conditions, (*matchconditions.MatchCondition)(&p.Spec.MatchConditions[i]))
			compiles("match condition", conditions[i])
		}
		matcher = matchconditions.NewMatcher(compiler.CompileCondition(conditions, vars, environment.StoredExpressions), p.Spec.FailurePolicy, "policy", "validate", p.Name)
	}
	validations := make([]cel.ExpressionAccessor, len(p.Spec.Validations))
	messages := make([]cel.ExpressionAccessor, len(p.Spec.Validations))
	for i, v := range p.Spec.Validations {
		validations[i] = &validating.ValidationCondition{Expression: v.Expression, Message: v.Message, Reason: v.Reason}
		compiles("validation", validations[i])
		if v.MessageExpression != "" {
			messages[i] = &validating.MessageExpressionCondition{MessageExpression: v.MessageExpression}
			compiles("messageExpression", messages[i])
		}
	}
	v := validating.NewValidator(
		compiler.CompileCondition(validations, vars, environment.StoredExpressions), matcher, compiler.CompileCondition(nil, vars, environment.StoredExpressions),
		compiler.CompileCondition(messages, cel.OptionalVariableDeclarations{HasParams: hasParams}, environment.StoredExpressions), p.Spec.FailurePolicy, nil)
	require.NoError(t, v.CompileError(), p.Name)
	return &compiledPolicy{ValidatingAdmissionPolicy: p, validator: v}
}

// policies are the standalone overlay's ValidatingAdmissionPolicies by name, each with a binding.
func policies(t *testing.T) map[string]*compiledPolicy {
	t.Helper()
	out := map[string]*compiledPolicy{}
	bound := map[string]*admissionregistrationv1.ValidatingAdmissionPolicyBinding{}
	for _, o := range decode(t, "standalone") {
		switch p := o.(type) {
		case *admissionregistrationv1.ValidatingAdmissionPolicy:
			out[p.Name] = compilePolicy(t, p)
		case *admissionregistrationv1.ValidatingAdmissionPolicyBinding:
			assert.Equal(t, []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny}, p.Spec.ValidationActions, p.Name)
			bound[p.Spec.PolicyName] = p
		}
	}
	for name, p := range out {
		require.NotNil(t, bound[name], "policy %s has no binding", name)
		p.paramRef = bound[name].Spec.ParamRef
		assert.Equal(t, p.Spec.ParamKind != nil, p.paramRef != nil, "policy %s: parameters and their reference go together", name)
	}
	return out
}

// req is one admission request: obj is nil on DELETE, old nil on CREATE.
type req struct {
	op       admission.Operation
	user     string
	obj, old client.Object
	params   *corev1.ConfigMap // the parameters of a policy that has them; nil: not found
}

var resources = map[string]schema.GroupVersionResource{
	"Service": {Version: "v1", Resource: "services"}, "ConfigMap": {Version: "v1", Resource: "configmaps"},
	"Pod": {Version: "v1", Resource: "pods"}, "Secret": {Version: "v1", Resource: "secrets"},
	"StatefulSet": {Group: "apps", Version: "v1", Resource: "statefulsets"},
	"Certificate": {Group: "cert-manager.io", Version: "v1", Resource: "certificates"},
}

// matches tells whether the policy's match constraints select this resource and operation.
func (p *compiledPolicy) matches(gvr schema.GroupVersionResource, op admission.Operation) bool {
	return slices.ContainsFunc(p.Spec.MatchConstraints.ResourceRules, func(rule admissionregistrationv1.NamedRuleWithOperations) bool {
		return slices.Contains(rule.APIGroups, gvr.Group) && slices.Contains(rule.APIVersions, gvr.Version) &&
			slices.Contains(rule.Resources, gvr.Resource) && slices.Contains(rule.Operations, admissionregistrationv1.OperationType(op))
	})
}

// admit runs the request through the policy as the API server would: the match constraints'
// rules, the match conditions, the validations. It returns the denial message, "" if allowed.
func (p *compiledPolicy) admit(t *testing.T, r req) string {
	t.Helper()
	some := r.obj
	if some == nil {
		some = r.old
	}
	kind := strings.TrimPrefix(fmt.Sprintf("%T", some), "*v1.")
	gvr, ok := resources[kind]
	require.True(t, ok, kind)
	if !p.matches(gvr, r.op) {
		return ""
	}
	var params runtime.Object
	if p.paramRef != nil {
		if r.params == nil {
			// As the API server does: with parameters not found, the binding says what to do.
			require.NotNil(t, p.paramRef.ParameterNotFoundAction, p.Name)
			if *p.paramRef.ParameterNotFoundAction == admissionregistrationv1.AllowAction {
				return ""
			}
			return "parameters not found"
		}
		params = r.params
	}
	var obj, old runtime.Object // a nil client.Object stays a nil runtime.Object
	if r.obj != nil {
		obj = r.obj
	}
	if r.old != nil {
		old = r.old
	}
	attrs := &admission.VersionedAttributes{
		Attributes: admission.NewAttributesRecord(obj, old, gvr.GroupVersion().WithKind(kind), some.GetNamespace(), some.GetName(),
			gvr, "", r.op, nil, false, &user.DefaultInfo{Name: r.user}),
		VersionedKind: gvr.GroupVersion().WithKind(kind),
	}
	attrs.VersionedObject = admission.NewLazyObject(attrs.GetObject())
	attrs.VersionedOldObject = admission.NewLazyObject(attrs.GetOldObject())
	namespace := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: some.GetNamespace()}}
	result := p.validator.Validate(context.Background(), gvr, attrs, params, namespace, celconfig.RuntimeCELCostBudget, nil)
	for _, d := range result.Decisions {
		require.NotEqual(t, validating.EvalError, d.Evaluation, "%s: %s", p.Name, d.Message)
		if d.Action == validating.ActionDeny {
			assert.Less(t, len(d.Message), 400, "a denial message stays short")
			return d.Message
		}
	}
	return ""
}

func nodePortService(namespace string, labels map[string]string, nodePorts ...int32) *corev1.Service {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "svc", Namespace: namespace, Labels: labels}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort}}
	for i, p := range nodePorts {
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: strconv.Itoa(i), Port: 9092, NodePort: p})
	}
	return svc
}

// portBlocks is the parameters ConfigMap as brokerport's controller writes it
// (controller.PortBlocks).
func portBlocks(blocks map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: controller.PortBlocksConfigMap, Namespace: "brokerport-system"}, Data: blocks}
}

// redpandaChartService is the external NodePort Service the Redpanda chart (and operator) make by
// default: its schema registry and HTTP proxy take 30081 and 30082, inside brokerport's band.
func redpandaChartService() *corev1.Service {
	svc := nodePortService("redpanda", nil, 31644, 31092, 30082, 30081)
	svc.Name = "redpanda-external"
	svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	return svc
}

func TestPortBandPolicy(t *testing.T) {
	p := policies(t)["brokerport-port-band"]
	require.NotNil(t, p)
	// Two StatefulSets hold blocks; the rest of the band is free.
	blocks := portBlocks(map[string]string{"team-a.kafka": "30000-30023", "team-c.logs": "30040-30047"})
	brokerLabels := map[string]string{patches.LabelExpose: patches.ExposeValue, patches.LabelCluster: "kafka"}
	denied := "is in port block 30000-30023, which brokerport assigned to the brokers of a StatefulSet labeled brokerport.io/expose=true"
	tests := map[string]struct {
		req  req
		deny string // a part of the message; "" for allowed
	}{
		"first port of a block":  {req: req{op: admission.Create, user: "alice", obj: nodePortService("team-b", nil, 30000)}, deny: "spec.ports[].nodePort 30000 " + denied},
		"last port of a block":   {req: req{op: admission.Create, user: "alice", obj: nodePortService("team-b", nil, 30023)}, deny: denied},
		"another block":          {req: req{op: admission.Create, user: "alice", obj: nodePortService("team-b", nil, 30041)}, deny: "nodePort 30041 is in port block 30040-30047"},
		"between blocks":         {req: req{op: admission.Create, user: "alice", obj: nodePortService("team-b", nil, 30024, 30039)}},
		"below the band":         {req: req{op: admission.Create, user: "alice", obj: nodePortService("team-b", nil, 29999)}},
		"above the band":         {req: req{op: admission.Create, user: "alice", obj: nodePortService("team-b", nil, 30086)}},
		"second port in a block": {req: req{op: admission.Create, user: "alice", obj: nodePortService("team-b", nil, 31000, 30003)}, deny: "nodePort 30003 is in"},
		"no nodePort":            {req: req{op: admission.Create, user: "alice", obj: nodePortService("team-b", nil, 0)}},
		"no ports":               {req: req{op: admission.Create, user: "alice", obj: &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "headless", Namespace: "team-b"}}}},
		"admins too":             {req: req{op: admission.Create, user: "system:admin", obj: nodePortService("team-b", nil, 30003)}, deny: denied},
		"brokerport itself":      {req: req{op: admission.Create, user: brokerportUser, obj: nodePortService("team-a", nil, 30003)}},
		"another ServiceAccount": {req: req{op: admission.Create, user: "system:serviceaccount:team-b:brokerport", obj: nodePortService("team-b", nil, 30003)}, deny: denied},
		"a broker Service":       {req: req{op: admission.Create, user: "alice", obj: nodePortService("team-a", brokerLabels, 30003)}},
		"opt-in label only":      {req: req{op: admission.Create, user: "alice", obj: nodePortService("team-a", map[string]string{patches.LabelExpose: patches.ExposeValue}, 30003)}, deny: denied},
		"the Redpanda chart's default external Service, in a namespace that never opted in": {req: req{op: admission.Create, user: "alice", obj: redpandaChartService()}},
		"broker labels, kube-system where no webhook looks":                                 {req: req{op: admission.Create, user: "alice", obj: nodePortService("kube-system", brokerLabels, 30003)}, deny: denied},
		"update keeping a port held before its block":                                       {req: req{op: admission.Update, user: "alice", obj: nodePortService("team-b", map[string]string{"edited": "yes"}, 30003), old: nodePortService("team-b", nil, 30003)}},
		"update moving to another port of a block":                                          {req: req{op: admission.Update, user: "alice", obj: nodePortService("team-b", nil, 30004), old: nodePortService("team-b", nil, 30003)}, deny: "nodePort 30004"},
		"update adding a port of a block":                                                   {req: req{op: admission.Update, user: "alice", obj: nodePortService("team-b", nil, 30003, 30004), old: nodePortService("team-b", nil, 30003)}, deny: "nodePort 30004"},
		"update moving out of the blocks":                                                   {req: req{op: admission.Update, user: "alice", obj: nodePortService("team-b", nil, 31000), old: nodePortService("team-b", nil, 30003)}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			tc.req.params = blocks
			msg := p.admit(t, tc.req)
			if tc.deny == "" {
				assert.Empty(t, msg)
				return
			}
			assert.Contains(t, msg, tc.deny)
		})
	}
	t.Run("before brokerport wrote its blocks nothing is refused", func(t *testing.T) {
		assert.Empty(t, p.admit(t, req{op: admission.Create, user: "alice", obj: nodePortService("team-b", nil, 30003)}))
	})
	t.Run("no block assigned", func(t *testing.T) {
		assert.Empty(t, p.admit(t, req{op: admission.Create, user: "alice", obj: nodePortService("team-b", nil, 30003), params: portBlocks(nil)}))
	})
	t.Run("a value brokerport did not write is ignored, not an error that would refuse every Service", func(t *testing.T) {
		bad := portBlocks(map[string]string{"x.y": "30000-", "x.z": "a-b", "x.w": "99999999-1", "team-a.kafka": "30000-30023"})
		assert.Contains(t, p.admit(t, req{op: admission.Create, user: "alice", obj: nodePortService("team-b", nil, 30001), params: bad}), "port block 30000-30023")
		assert.Empty(t, p.admit(t, req{op: admission.Create, user: "alice", obj: nodePortService("team-b", nil, 30030), params: bad}))
	})
}

// The policy reads the ConfigMap the controller writes; nothing in the Deployment may move the
// names the policies hold.
func TestPortBandParametersAreTheControllers(t *testing.T) {
	p := policies(t)["brokerport-port-band"]
	require.NotNil(t, p)
	require.NotNil(t, p.paramRef)
	assert.Equal(t, controller.PortBlocksConfigMap, p.paramRef.Name)
	assert.Equal(t, "brokerport-system", p.paramRef.Namespace)
	assert.Equal(t, &admissionregistrationv1.ParamKind{APIVersion: "v1", Kind: "ConfigMap"}, p.Spec.ParamKind)
	for _, overlay := range []string{"default", "standalone"} {
		for _, o := range decode(t, overlay) {
			if d, ok := o.(*appsv1.Deployment); ok {
				for _, arg := range d.Spec.Template.Spec.Containers[0].Args {
					assert.False(t, strings.HasPrefix(arg, "--cert-secret"), "%s: %s: the policy brokerport-writes names the Secret", overlay, arg)
					assert.False(t, strings.HasPrefix(arg, "--namespace"), "%s: %s: the policies name brokerport-system", overlay, arg)
				}
			}
		}
	}
}

// owned returns obj labeled and owned as brokerport's controller makes its objects.
func owned[T client.Object](obj T) T {
	labels := obj.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	labels[patches.LabelManagedBy] = patches.ManagedByValue
	labels[patches.LabelCluster] = "kafka"
	obj.SetLabels(labels)
	obj.SetOwnerReferences([]metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "kafka", UID: "u", Controller: ptr.To(true)}})
	return obj
}

func configMap(namespace string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "kafka-external", Namespace: namespace}, Data: map[string]string{"k": "v"}}
}

func brokerPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "kafka-0", Namespace: "team-a",
			Labels:      map[string]string{patches.LabelExpose: patches.ExposeValue, patches.LabelCluster: "kafka"},
			Annotations: map[string]string{patches.AnnotationHost: "203.0.113.1", "team": "a"}},
		Spec: corev1.PodSpec{NodeName: "node-0", Containers: []corev1.Container{{Name: "kafka", Image: "kafka:1"}}},
	}
}

// certificate is a broker's cert-manager Certificate as brokerport asks for it, but for the
// labels and owner (owned adds them).
func certificate(namespace string) *cmapi.Certificate {
	return &cmapi.Certificate{ObjectMeta: metav1.ObjectMeta{Name: "kafka-0-external-tls", Namespace: namespace},
		Spec: cmapi.CertificateSpec{SecretName: "kafka-0-external-tls", IPAddresses: []string{"203.0.113.1"},
			IssuerRef: cmmeta.IssuerReference{Group: "cert-manager.io", Kind: "ClusterIssuer", Name: "brokers-ca"}}}
}

func statefulSet(labels map[string]string) *appsv1.StatefulSet {
	return &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "kafka", Namespace: "team-a", Labels: labels}, Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](3)}}
}

// identityPolicies are the policies bound to brokerport's identity, by the resource each bounds.
func identityPolicies(t *testing.T) map[string]*compiledPolicy {
	t.Helper()
	all := policies(t)
	out := map[string]*compiledPolicy{}
	for name, resources := range map[string][]string{
		"brokerport-writes":             {"services", "configmaps", "secrets", "certificates"},
		"brokerport-pod-writes":         {"pods"},
		"brokerport-statefulset-writes": {"statefulsets"},
	} {
		require.NotNil(t, all[name], name)
		for _, r := range resources {
			out[r] = all[name]
		}
	}
	return out
}

// admitAsBrokerport runs a request by brokerport's identity through the policy that bounds its
// kind; "" for a kind no policy bounds.
func admitAsBrokerport(t *testing.T, policies map[string]*compiledPolicy, r req) string {
	t.Helper()
	some := r.obj
	if some == nil {
		some = r.old
	}
	p := policies[resources[strings.TrimPrefix(fmt.Sprintf("%T", some), "*v1.")].Resource]
	if p == nil {
		return ""
	}
	return p.admit(t, r)
}

func TestWritesPolicy(t *testing.T) {
	ps := identityPolicies(t)
	with := func(pod *corev1.Pod, change func(*corev1.Pod)) *corev1.Pod {
		pod = pod.DeepCopy()
		change(pod)
		return pod
	}
	svc := func(ns string) *corev1.Service { return nodePortService(ns, nil, 30000) }
	optedIn := map[string]string{patches.LabelExpose: patches.ExposeValue}
	tests := map[string]struct {
		req  req
		deny string
	}{
		"create its Service":                  {req: req{op: admission.Create, obj: owned(svc("team-a"))}},
		"create an unlabeled Service":         {req: req{op: admission.Create, obj: svc("team-a")}, deny: "brokerport writes only services it owns"},
		"create a Service with no owner":      {req: req{op: admission.Create, obj: func() *corev1.Service { s := owned(svc("team-a")); s.OwnerReferences = nil; return s }()}, deny: "services it owns"},
		"create owned by another StatefulSet": {req: req{op: admission.Create, obj: func() *corev1.Service { s := owned(svc("team-a")); s.OwnerReferences[0].Name = "other"; return s }()}, deny: "services it owns"},
		"update its Service":                  {req: req{op: admission.Update, obj: owned(svc("team-a")), old: owned(svc("team-a"))}},
		"adopt a Service by labeling it":      {req: req{op: admission.Update, obj: owned(svc("team-a")), old: svc("team-a")}, deny: "before and after the update"},
		"drop its labels from its Service":    {req: req{op: admission.Update, obj: svc("team-a"), old: owned(svc("team-a"))}, deny: "services it owns"},
		"delete its Service":                  {req: req{op: admission.Delete, old: owned(svc("team-a"))}},
		"delete another's Service":            {req: req{op: admission.Delete, old: svc("default")}, deny: "services it owns"},
		"create its Certificate":              {req: req{op: admission.Create, obj: owned(certificate("team-a"))}},
		"reissue its Certificate":             {req: req{op: admission.Update, obj: owned(certificate("team-a")), old: owned(certificate("team-a"))}},
		"delete its Certificate":              {req: req{op: admission.Delete, old: owned(certificate("team-a"))}},
		"create an unlabeled Certificate":     {req: req{op: admission.Create, obj: certificate("team-a")}, deny: "brokerport writes only certificates it owns"},
		"a Certificate in another StatefulSet's name": {req: req{op: admission.Create, obj: func() *cmapi.Certificate {
			c := owned(certificate("team-a"))
			c.OwnerReferences[0].Name = "other"
			return c
		}()}, deny: "certificates it owns"},
		"a Certificate labeled for another StatefulSet": {req: req{op: admission.Create, obj: func() *cmapi.Certificate {
			c := owned(certificate("team-a"))
			c.Labels[patches.LabelCluster] = "other"
			return c
		}()}, deny: "certificates it owns"},
		"a Certificate its StatefulSet does not control": {req: req{op: admission.Create, obj: func() *cmapi.Certificate {
			c := owned(certificate("team-a"))
			c.OwnerReferences[0].Controller = nil
			return c
		}()}, deny: "certificates it owns"},
		"update another's Certificate":       {req: req{op: admission.Update, obj: certificate("team-b"), old: certificate("team-b")}, deny: "certificates it owns"},
		"adopt a Certificate by labeling it": {req: req{op: admission.Update, obj: owned(certificate("team-b")), old: certificate("team-b")}, deny: "before and after the update"},
		"delete another's Certificate":       {req: req{op: admission.Delete, old: certificate("team-b")}, deny: "certificates it owns"},
		"its Certificate in kube-system":     {req: req{op: admission.Create, obj: owned(certificate("kube-system"))}, deny: "brokerport may not write certificates in namespace kube-system"},
		"the webhook's serving Certificate": {req: req{op: admission.Update, obj: &cmapi.Certificate{ObjectMeta: metav1.ObjectMeta{Name: "brokerport-webhook", Namespace: "brokerport-system"}},
			old: &cmapi.Certificate{ObjectMeta: metav1.ObjectMeta{Name: "brokerport-webhook", Namespace: "brokerport-system"}}}, deny: "may not write certificates in namespace brokerport-system"},
		"create its ConfigMap":               {req: req{op: admission.Create, obj: owned(configMap("team-a"))}},
		"update its ConfigMap":               {req: req{op: admission.Update, obj: owned(configMap("team-a")), old: owned(configMap("team-a"))}},
		"update another's ConfigMap":         {req: req{op: admission.Update, obj: configMap("team-a"), old: configMap("team-a")}, deny: "configmaps it owns"},
		"delete another's ConfigMap":         {req: req{op: admission.Delete, old: configMap("team-a")}, deny: "configmaps it owns"},
		"its ConfigMap in kube-system":       {req: req{op: admission.Create, obj: owned(configMap("kube-system"))}, deny: "brokerport may not write configmaps in namespace kube-system"},
		"delete in kube-system":              {req: req{op: admission.Delete, old: owned(configMap("kube-system"))}, deny: "in namespace kube-system"},
		"its ConfigMap in brokerport-system": {req: req{op: admission.Create, obj: owned(configMap("brokerport-system"))}, deny: "in namespace brokerport-system"},
		"the port blocks, created":           {req: req{op: admission.Create, obj: portBlocks(map[string]string{"team-a.kafka": "30000-30023"})}},
		"the port blocks, updated": {req: req{op: admission.Update, obj: portBlocks(map[string]string{"team-a.kafka": "30000-30023"}),
			old: portBlocks(nil)}},
		"the port blocks, deleted":                   {req: req{op: admission.Delete, old: portBlocks(nil)}, deny: "in namespace brokerport-system"},
		"the port blocks' name in another namespace": {req: req{op: admission.Create, obj: func() *corev1.ConfigMap { c := portBlocks(nil); c.Namespace = "team-a"; return c }()}, deny: "brokerport writes only configmaps it owns"},
		"its certificate Secret":                     {req: req{op: admission.Create, obj: &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "brokerport-webhook-tls", Namespace: "brokerport-system"}}}},
		"renew its certificate Secret": {req: req{op: admission.Update, obj: &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "brokerport-webhook-tls", Namespace: "brokerport-system"}},
			old: &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "brokerport-webhook-tls", Namespace: "brokerport-system"}}}},
		"another Secret":                      {req: req{op: admission.Create, obj: &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: "brokerport-system"}}}, deny: "brokerport writes only one Secret"},
		"a Secret in team-a":                  {req: req{op: admission.Create, obj: &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "brokerport-webhook-tls", Namespace: "team-a"}}}, deny: "only one Secret"},
		"repair a pod's address":              {req: req{op: admission.Update, obj: with(brokerPod(), func(p *corev1.Pod) { p.Annotations[patches.AnnotationHost] = "203.0.113.9" }), old: brokerPod()}},
		"add its annotations":                 {req: req{op: admission.Update, obj: with(brokerPod(), func(p *corev1.Pod) { p.Annotations = map[string]string{patches.AnnotationHost: "h"} }), old: with(brokerPod(), func(p *corev1.Pod) { p.Annotations = nil })}},
		"annotate a pod that is not a broker": {req: req{op: admission.Update, obj: with(brokerPod(), func(p *corev1.Pod) { p.Labels = nil; p.Annotations[patches.AnnotationHost] = "h" }), old: with(brokerPod(), func(p *corev1.Pod) { p.Labels = nil })}, deny: "of a broker pod"},
		"change another annotation":           {req: req{op: admission.Update, obj: with(brokerPod(), func(p *corev1.Pod) { p.Annotations["team"] = "b" }), old: brokerPod()}, deny: "only the brokerport.io/ annotations of a broker pod"},
		"add another annotation":              {req: req{op: admission.Update, obj: with(brokerPod(), func(p *corev1.Pod) { p.Annotations["x"] = "y" }), old: brokerPod()}, deny: "brokerport.io/ annotations"},
		"remove another annotation":           {req: req{op: admission.Update, obj: with(brokerPod(), func(p *corev1.Pod) { delete(p.Annotations, "team") }), old: brokerPod()}, deny: "brokerport.io/ annotations"},
		"change a pod's labels":               {req: req{op: admission.Update, obj: with(brokerPod(), func(p *corev1.Pod) { p.Labels["app"] = "x" }), old: brokerPod()}, deny: "brokerport.io/ annotations"},
		"change a pod's spec":                 {req: req{op: admission.Update, obj: with(brokerPod(), func(p *corev1.Pod) { p.Spec.Containers[0].Image = "evil:1" }), old: brokerPod()}, deny: "brokerport.io/ annotations"},
		"add a finalizer":                     {req: req{op: admission.Update, obj: with(brokerPod(), func(p *corev1.Pod) { p.Finalizers = []string{"x/y"} }), old: brokerPod()}, deny: "brokerport.io/ annotations"},
		"drop the owner":                      {req: req{op: admission.Update, obj: brokerPod(), old: owned(brokerPod())}, deny: "brokerport.io/ annotations"},
		"delete a broker pod":                 {req: req{op: admission.Delete, old: brokerPod()}},
		"delete another pod":                  {req: req{op: admission.Delete, old: with(brokerPod(), func(p *corev1.Pod) { p.Labels = nil })}, deny: "deletes only broker pods"},
		"a pod in kube-system":                {req: req{op: admission.Update, obj: with(brokerPod(), func(p *corev1.Pod) { p.Namespace = "kube-system" }), old: with(brokerPod(), func(p *corev1.Pod) { p.Namespace = "kube-system" })}, deny: "pods in namespace kube-system"},
		"create a pod":                        {req: req{op: admission.Create, obj: brokerPod()}, deny: "never creates pods"},
		"give up a port block":                {req: req{op: admission.Update, obj: statefulSet(optedIn), old: statefulSet(optedIn)}},
		"another StatefulSet":                 {req: req{op: admission.Update, obj: statefulSet(nil), old: statefulSet(nil)}, deny: "only update an opted-in StatefulSet"},
		"scale a StatefulSet":                 {req: req{op: admission.Update, obj: func() *appsv1.StatefulSet { s := statefulSet(optedIn); s.Spec.Replicas = ptr.To[int32](0); return s }(), old: statefulSet(optedIn)}, deny: "keeping its labels and replicas"},
		"opt a StatefulSet out":               {req: req{op: admission.Update, obj: statefulSet(nil), old: statefulSet(optedIn)}, deny: "keeping its labels"},
		"delete a StatefulSet":                {req: req{op: admission.Delete, old: statefulSet(optedIn)}, deny: "only update"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			tc.req.user = brokerportUser
			msg := admitAsBrokerport(t, ps, tc.req)
			if tc.deny == "" {
				assert.Empty(t, msg)
			} else {
				assert.Contains(t, msg, tc.deny)
			}
			// Anyone else is not this policy's business.
			tc.req.user = "alice"
			assert.Empty(t, admitAsBrokerport(t, ps, tc.req))
		})
	}
}
