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
// pods are gone. A host brokerport did not derive (a host template's) is named only where the
// admin allowed it for the issuer (Reconciler.CertificateHosts): otherwise no Certificate names it and
// the broker's problem says so. It returns what is known of each broker's certificate; one
// broker's failure does not stop the others'.
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
		source, err := r.hostSource(ctx, cfg, brokers[ordinal], state.Host)
		if err != nil || source == patches.HostSourceUnknown {
			// The node changed while this reconcile read it (its update reconciles again), or
			// could not be read: nothing is decided on a host of unknown origin.
			errs = append(errs, err)
			facts[ordinal] = f
			continue
		}
		if err := patches.CertificateHostAllowed(sts.Namespace, *cfg.TLSIssuer, state.Host, source, r.CertificateHosts); err != nil {
			f.Problem = fmt.Sprintf("StatefulSet %s/%s: %v", sts.Namespace, sts.Name, err)
			errs = append(errs, r.withoutHost(ctx, sts, cfg, ordinal, state, current))
			facts[ordinal] = f
			continue
		}
		want := patches.BrokerCertificate(sts, cfg, ordinal, state.Host)
		switch {
		case current == nil:
			if f.Problem = r.createCertificate(ctx, sts, cfg, state, want); f.Problem != "" {
				errs = append(errs, errors.New(f.Problem))
			}
		case current.Spec.IssuerRef != want.Spec.IssuerRef:
			// Another issuer: the Certificate is replaced, never pointed at another issuer in
			// place (the policy brokerport-certificate-writes refuses that).
			if err := r.deleteCertificate(ctx, current); err != nil {
				f.Problem = err.Error()
			} else {
				f.Problem = r.createCertificate(ctx, sts, cfg, state, want)
			}
			if f.Problem != "" {
				errs = append(errs, errors.New(f.Problem))
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

// createCertificate creates a broker's Certificate, returning what went wrong ("" when it is
// made, or was made a moment ago).
func (r *Reconciler) createCertificate(ctx context.Context, sts *appsv1.StatefulSet, cfg patches.Config, state patches.BrokerState, want *cmapi.Certificate) string {
	switch err := r.Client.Create(ctx, want); {
	case apierrors.IsAlreadyExists(err):
		// Made a moment ago (or still going away); the cache shows it at the next reconcile.
	case err != nil:
		return fmt.Sprintf("creating Certificate %s: %v", want.Name, err)
	default:
		r.Events.Eventf(sts, nil, corev1.EventTypeNormal, "CertificateRequested", "Certificate", "broker %s: Certificate %s asks %s for a certificate naming %s", state.Pod, want.Name, cfg.TLSIssuer, state.Host)
	}
	return ""
}

// hostSource tells where a broker's host came from, reading its node from the cache only when a
// host template may have given the host.
func (r *Reconciler) hostSource(ctx context.Context, cfg patches.Config, pod *corev1.Pod, host string) (patches.HostSource, error) {
	var node *corev1.Node
	if cfg.HostTemplate != nil && !cfg.LoadBalanced() && pod != nil {
		node = &corev1.Node{}
		switch err := r.Client.Get(ctx, client.ObjectKey{Name: pod.Spec.NodeName}, node); {
		case apierrors.IsNotFound(err):
			node = nil
		case err != nil:
			return patches.HostSourceUnknown, fmt.Errorf("getting node %s: %w", pod.Spec.NodeName, err)
		}
	}
	return patches.AdvertisedHostSource(cfg, node, host), nil
}

// withoutHost brings the Certificate of a broker whose host brokerport may not ask the issuer
// for back to the broker's in-cluster names: no Certificate is made for such a host, and one made
// before (by an earlier brokerport, or for an earlier host) stops naming anything else, rather
// than being renewed by cert-manager for ever. Its reissued Secret no longer names the host, so
// the broker's gate holds it. Deleted when there is nothing left to name, or when it asks another
// issuer.
func (r *Reconciler) withoutHost(ctx context.Context, sts *appsv1.StatefulSet, cfg patches.Config, ordinal int, state patches.BrokerState, current *cmapi.Certificate) error {
	if current == nil {
		return nil
	}
	keep := patches.BrokerCertificate(sts, cfg, ordinal, "")
	if sameCertificate(current, keep) {
		return nil
	}
	var dropped []string
	for _, n := range slices.Concat(current.Spec.DNSNames, current.Spec.IPAddresses) {
		if !slices.Contains(keep.Spec.DNSNames, n) {
			dropped = append(dropped, n)
		}
	}
	why := fmt.Sprintf("brokerport asks %s only for hosts it derived or %s allows", cfg.TLSIssuer, patches.FlagTLSAllowedHosts)
	if len(keep.Spec.DNSNames) == 0 || current.Spec.IssuerRef != keep.Spec.IssuerRef {
		if err := r.deleteCertificate(ctx, current); err != nil {
			return err
		}
		if len(dropped) > 0 {
			r.Events.Eventf(sts, nil, corev1.EventTypeWarning, "CertificateHostDropped", "Certificate", "broker %s: Certificate %s deleted: it named %s, and %s", state.Pod, current.Name, strings.Join(dropped, ", "), why)
		}
		return nil
	}
	update := current.DeepCopy()
	update.Spec = keep.Spec
	update.Labels = keep.Labels
	if err := r.Client.Update(ctx, update); err != nil {
		return fmt.Errorf("updating Certificate %s: %w", current.Name, err)
	}
	if len(dropped) > 0 {
		r.Events.Eventf(sts, nil, corev1.EventTypeWarning, "CertificateHostDropped", "Certificate", "broker %s: Certificate %s no longer names %s: %s; cert-manager reissues it with the broker's in-cluster names only", state.Pod, current.Name, strings.Join(dropped, ", "), why)
	}
	return nil
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
