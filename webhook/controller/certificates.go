package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/brokerport/brokerport/patches"
)

// CertManagerInstalled tells whether the API server serves cert-manager's Certificates: brokerport
// runs without cert-manager, and watches Certificates only where there are some to watch.
func CertManagerInstalled(mapper meta.RESTMapper) bool {
	_, err := mapper.RESTMapping(cmapi.SchemeGroupVersion.WithKind(cmapi.CertificateKind).GroupKind(), cmapi.SchemeGroupVersion.Version)
	return err == nil
}

// certificates keeps one cert-manager Certificate per broker whose host is known, naming that
// host (states, by ordinal from first), and removes those of brokers past the replicas once their
// pods are gone. It returns what is known of each broker's certificate; one broker's failure does
// not stop the others'.
func (r *Reconciler) certificates(ctx context.Context, sts *appsv1.StatefulSet, cfg patches.Config, first int, states []patches.BrokerState, brokers map[int]*corev1.Pod) (map[int]patches.CertificateFacts, error) {
	facts := map[int]patches.CertificateFacts{}
	if !r.CertManager {
		for i := range states {
			facts[first+i] = patches.CertificateFacts{Problem: fmt.Sprintf("%s is set, but cert-manager is not installed (the API server serves no certificates.cert-manager.io): install it", patches.AnnotationTLSIssuer)}
		}
		return facts, nil
	}
	var list cmapi.CertificateList
	if err := r.Client.List(ctx, &list, client.InNamespace(sts.Namespace), client.MatchingLabels{patches.LabelCluster: sts.Name, patches.LabelManagedBy: patches.ManagedByValue}); err != nil {
		return nil, fmt.Errorf("listing Certificates: %w", err)
	}
	existing := map[string]*cmapi.Certificate{}
	for i := range list.Items {
		existing[list.Items[i].Name] = &list.Items[i]
	}
	var errs []error
	for i, state := range states {
		ordinal := first + i
		name := patches.TLSSecretName(sts.Name, ordinal)
		current := existing[name]
		delete(existing, name)
		f := patches.CertificateFacts{Name: name}
		if state.Host == "" {
			// Not bound, or no address yet: the Certificate waits for one (and keeps its last).
			facts[ordinal] = f
			continue
		}
		want := patches.BrokerCertificate(sts, cfg, ordinal, state.Host)
		switch {
		case current == nil:
			switch err := r.Client.Create(ctx, want); {
			case apierrors.IsAlreadyExists(err):
				// Made a moment ago; the cache shows it at the next reconcile.
			case err != nil:
				f.Problem = fmt.Sprintf("creating Certificate %s: %v", name, err)
				errs = append(errs, errors.New(f.Problem))
			default:
				r.Events.Eventf(sts, nil, corev1.EventTypeNormal, "CertificateRequested", "Certificate", "broker %s: Certificate %s asks %s for a certificate naming %s", state.Pod, name, cfg.TLSIssuer, state.Host)
			}
		case !sameCertificate(current, want):
			update := current.DeepCopy()
			update.Spec = want.Spec
			update.Labels = want.Labels
			if err := r.Client.Update(ctx, update); err != nil {
				f.Problem = fmt.Sprintf("updating Certificate %s: %v", name, err)
				errs = append(errs, errors.New(f.Problem))
			} else {
				r.Events.Eventf(sts, nil, corev1.EventTypeNormal, "CertificateReissued", "Certificate", "broker %s: Certificate %s now names %s; cert-manager reissues it", state.Pod, name, state.Host)
			}
		default:
			f.Named, f.Issued = patches.CertificateNames(current, state.Host)
			// An issuer that never answers (cert-manager's controller not running, an Issuer
			// not ready) is said, as a late load balancer is.
			f.Overdue = !f.Issued && r.now().Sub(current.CreationTimestamp.Time) > certificatePatience
		}
		facts[ordinal] = f
	}
	for name, cert := range existing {
		service, ok := strings.CutSuffix(name, "-tls")
		if !ok {
			continue // not a name brokerport gives: not brokerport's to delete
		}
		ordinal, ok := patches.BrokerServiceOrdinal(service, sts.Name)
		if ok && brokers[ordinal] != nil {
			continue // its broker is still going away
		}
		if err := r.deleteCertificate(ctx, cert); err != nil {
			errs = append(errs, err)
		}
	}
	return facts, errors.Join(errs...)
}

// certificatePatience is how long an issuer may take before a broker waiting for its certificate
// is said not exposed (a Warning Event) rather than still coming.
const certificatePatience = 5 * time.Minute

// sameCertificate tells whether a Certificate asks for what brokerport wants: every field
// brokerport sets (cert-manager's own defaults, set elsewhere, are not compared).
func sameCertificate(current, want *cmapi.Certificate) bool {
	c, w := current.Spec, want.Spec
	return slices.Equal(c.DNSNames, w.DNSNames) && slices.Equal(c.IPAddresses, w.IPAddresses) &&
		c.IssuerRef == w.IssuerRef && c.SecretName == w.SecretName &&
		apiequality.Semantic.DeepEqual(c.SecretTemplate, w.SecretTemplate) && apiequality.Semantic.DeepEqual(c.PrivateKey, w.PrivateKey) &&
		slices.Equal(c.Usages, w.Usages) && slices.Equal(c.AdditionalOutputFormats, w.AdditionalOutputFormats)
}

// deleteCertificate deletes a broker's Certificate. Its Secret stays, as cert-manager leaves it
// (labeled by the Certificate's secretTemplate): deleting Secrets in every namespace is a right
// brokerport does not ask for.
func (r *Reconciler) deleteCertificate(ctx context.Context, cert *cmapi.Certificate) error {
	if err := client.IgnoreNotFound(r.Client.Delete(ctx, cert)); err != nil {
		return fmt.Errorf("deleting Certificate %s: %w", cert.Name, err)
	}
	return nil
}

// removeCertificates deletes every Certificate brokerport made for StatefulSet name.
func (r *Reconciler) removeCertificates(ctx context.Context, namespace, name string) error {
	if !r.CertManager {
		return nil
	}
	var list cmapi.CertificateList
	if err := r.Client.List(ctx, &list, client.InNamespace(namespace), client.MatchingLabels{patches.LabelCluster: name, patches.LabelManagedBy: patches.ManagedByValue}); err != nil {
		return fmt.Errorf("listing Certificates: %w", err)
	}
	for i := range list.Items {
		if err := r.deleteCertificate(ctx, &list.Items[i]); err != nil {
			return err
		}
	}
	return nil
}
