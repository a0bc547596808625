package webhook

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/brokerport/brokerport/patches"
)

// RBAC is in force as soon as it is applied; a ValidatingAdmissionPolicy only once the API server
// has loaded it, asynchronously, about a second later. Until then brokerport's identity could
// write what its policies forbid (a ConfigMap of kube-system, another team's pod), so its
// controller does not start, and it does not say ready, until each policy is seen refusing a
// write brokerport must never make.

// policyCheckName names the objects of the checks' dry-run writes: nothing is stored.
const policyCheckName = "brokerport-policy-check"

// policyCheck is one dry-run write that the named policy must refuse to brokerport's identity,
// though RBAC grants it: a refusal that names the policy proves the policy in force. write returns
// errNothingToCheck when the cluster has no object to make the write on.
type policyCheck struct {
	policy string
	write  func(ctx context.Context, c client.Client) error
}

// errNothingToCheck: RBAC lets brokerport update pods and StatefulSets, not create them, so their
// policies are checked on an existing object; where there is none, there is nothing the policy
// would protect yet.
var errNothingToCheck = errors.New("no object to check on")

// policyChecks: a ConfigMap created in kube-system (brokerport-writes), a CA Certificate where
// cert-manager is installed (brokerport-certificate-writes), a pod annotation that is
// not brokerport's (brokerport-pod-writes) and a label added to a StatefulSet
// (brokerport-statefulset-writes), each on an object firstToCheck picks, all dry runs.
var policyChecks = []policyCheck{
	{policy: "brokerport-writes", write: func(ctx context.Context, c client.Client) error {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: policyCheckName, Namespace: metav1.NamespaceSystem}}
		return c.Create(ctx, cm, client.DryRunAll)
	}},
	// Where cert-manager is installed: a CA certificate, labeled and owned as brokerport's own
	// (so that brokerport-writes admits it), in namespace default, which every cluster has.
	{policy: "brokerport-certificate-writes", write: func(ctx context.Context, c client.Client) error {
		// As controller.CertManagerInstalled (which this package cannot import: the
		// controller's tests import this package).
		if _, err := c.RESTMapper().RESTMapping(cmapi.SchemeGroupVersion.WithKind(cmapi.CertificateKind).GroupKind(), cmapi.SchemeGroupVersion.Version); err != nil {
			return errNothingToCheck
		}
		owner := "brokerport-policy-check"
		cert := &cmapi.Certificate{
			ObjectMeta: metav1.ObjectMeta{Name: policyCheckName, Namespace: metav1.NamespaceDefault,
				Labels:          map[string]string{patches.LabelManagedBy: patches.ManagedByValue, patches.LabelCluster: owner},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: owner, UID: "policy-check", Controller: ptr.To(true)}}},
			Spec: cmapi.CertificateSpec{SecretName: policyCheckName, IsCA: true, DNSNames: []string{"policy-check.invalid"},
				IssuerRef: cmmeta.IssuerReference{Kind: cmapi.IssuerKind, Name: policyCheckName}},
		}
		return c.Create(ctx, cert, client.DryRunAll)
	}},
	{policy: "brokerport-pod-writes", write: func(ctx context.Context, c client.Client) error {
		pod, err := firstToCheck(ctx, c, &corev1.PodList{})
		if err != nil {
			return err
		}
		return c.Patch(ctx, pod, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"annotations":{"`+policyCheckName+`":"dry-run"}}}`)), client.DryRunAll)
	}},
	{policy: "brokerport-statefulset-writes", write: func(ctx context.Context, c client.Client) error {
		sts, err := firstToCheck(ctx, c, &appsv1.StatefulSetList{})
		if err != nil {
			return err
		}
		return c.Patch(ctx, sts, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"`+policyCheckName+`":"dry-run"}}}`)), client.DryRunAll)
	}},
}

// firstToCheck is the first object of list's kind to make a check's write on: in kube-system
// first (the policies refuse every write of brokerport's there, its webhooks exclude it, and no
// tenant's object is touched), else anywhere, but never an opted-in one: brokerport's own webhook
// is called for those (objectSelector), and is not reachable while no replica is ready.
func firstToCheck(ctx context.Context, c client.Client, list client.ObjectList) (client.Object, error) {
	notOptedIn, err := labels.NewRequirement(patches.LabelExpose, selection.NotEquals, []string{patches.ExposeValue})
	if err != nil {
		return nil, err
	}
	for _, opts := range [][]client.ListOption{
		{client.InNamespace(metav1.NamespaceSystem), client.Limit(1)},
		{client.MatchingLabelsSelector{Selector: labels.NewSelector().Add(*notOptedIn)}, client.Limit(1)},
	} {
		if err := c.List(ctx, list, opts...); err != nil {
			return nil, fmt.Errorf("listing an object to check on: %w", err)
		}
		items, err := meta.ExtractList(list)
		if err != nil {
			return nil, err
		}
		for _, item := range items {
			if o, ok := item.(client.Object); ok && !patches.IsExposed(o.GetLabels()) {
				return o, nil
			}
		}
	}
	return nil, errNothingToCheck
}

// CheckPolicies makes each check's dry-run write and returns, joined, an error for every policy
// not seen refusing it (naming the policy and what the API server answered instead), and the
// policies that could not be checked for want of an object.
func CheckPolicies(ctx context.Context, c client.Client) (unchecked []string, err error) {
	var errs []error
	for _, check := range policyChecks {
		err := check.write(ctx, c)
		switch {
		case errors.Is(err, errNothingToCheck):
			unchecked = append(unchecked, check.policy)
		case err == nil:
			errs = append(errs, fmt.Errorf("ValidatingAdmissionPolicy %s is not in force: a dry-run write it forbids was admitted", check.policy))
		case !strings.Contains(err.Error(), "ValidatingAdmissionPolicy '"+check.policy+"'"):
			errs = append(errs, fmt.Errorf("ValidatingAdmissionPolicy %s is not seen in force: a dry-run write it forbids was answered: %w", check.policy, err))
		}
	}
	return unchecked, errors.Join(errs...)
}

// PolicyGate holds brokerport's controllers and readiness until its policies are in force.
type PolicyGate struct {
	Client client.Client // acts as brokerport's identity, whose writes the policies hold
	Every  time.Duration // between checks while one is not in force (default 1 s)

	inForce atomic.Bool
	last    atomic.Pointer[error]
}

// InForce tells whether every policy has been seen in force.
func (g *PolicyGate) InForce() bool { return g.inForce.Load() }

// Ready is a readiness check: it fails, naming the policies, until they are in force.
func (g *PolicyGate) Ready() error {
	if g.InForce() {
		return nil
	}
	if err := g.last.Load(); err != nil {
		return *err
	}
	return errors.New("brokerport's ValidatingAdmissionPolicies have not been checked yet")
}

// Start checks until every policy is in force, logging what is missing (each distinct answer
// once), then returns: a manager Runnable of every replica.
func (g *PolicyGate) Start(ctx context.Context) error {
	log := logf.FromContext(ctx).WithName("policies")
	every := g.Every
	if every <= 0 {
		every = time.Second
	}
	said := ""
	for {
		unchecked, err := CheckPolicies(ctx, g.Client)
		if err == nil {
			g.inForce.Store(true)
			log.Info("brokerport's ValidatingAdmissionPolicies are in force; its controller starts", "notCheckedForWantOfAnObject", unchecked)
			return nil
		}
		g.last.Store(&err)
		if err.Error() != said {
			log.Error(err, "waiting for brokerport's ValidatingAdmissionPolicies before the controller starts (kubectl get validatingadmissionpolicies,validatingadmissionpolicybindings: install manifests/base/policy.yaml)")
			said = err.Error()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(every):
		}
	}
}

// NeedLeaderElection: every replica checks, for its own readiness.
func (g *PolicyGate) NeedLeaderElection() bool { return false }
