// Package certs is brokerport's self-managed TLS, for clusters without cert-manager: a CA and a
// serving certificate (ECDSA P-256) kept in one Secret shared by every replica, written to the
// cert directory that controller-runtime's certwatcher reloads, with the CA patched into
// brokerport's own MutatingWebhookConfiguration, and renewed before they expire.
//
// A CA is renewed in steps, so that the API server can verify every certificate a replica serves
// at every moment:
//  1. the new CA is staged: added to the caBundle beside the current one, signing nothing yet;
//  2. once the webhook configuration has carried that bundle for Options.Grace (time for every
//     API server to load it), the new CA signs a new serving certificate, which only then is
//     written to the cert directory;
//  3. the previous CA stays in the bundle until it expires, as certificates it signed may still
//     be served by a replica that has not picked up the new one: after, nothing it signed verifies.
package certs

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// Keys of the Secret.
const (
	KeyCACert   = "ca.crt"
	KeyCAKey    = "ca.key"
	KeyCABundle = "ca-bundle.crt" // the staged CA, the current one, and previous ones until they expire
	KeyCert     = "tls.crt"
	KeyKey      = "tls.key"
	// The staged CA: in the bundle, not yet signing.
	KeyNextCACert = "next-ca.crt"
	KeyNextCAKey  = "next-ca.key"
)

// AnnotationNextCAPublished on the Secret is when the webhook configuration was first seen
// carrying the staged CA (RFC 3339): the grace period counts from there.
const AnnotationNextCAPublished = "brokerport.io/next-ca-published"

// Options say what to issue and where to keep it.
type Options struct {
	Namespace     string   // of the Secret
	SecretName    string   // e.g. brokerport-webhook-tls
	WebhookConfig string   // the MutatingWebhookConfiguration whose caBundle brokerport keeps
	Hosts         []string // DNS names and IP addresses of the serving certificate
	CertDir       string   // where tls.crt and tls.key are written for the webhook server
	CALifetime    time.Duration
	Lifetime      time.Duration // of the serving certificate
	// RenewAt is the fraction of a certificate's lifetime after which it is renewed.
	RenewAt float64
	// Grace is how long the caBundle carries a new CA before a certificate it signed is served:
	// the API servers watch the webhook configuration and load a new bundle within seconds.
	Grace time.Duration
	Now   func() time.Time
}

// Defaults fills in lifetimes (CA 10 years, serving 1 year), renewal at 2/3, a grace of two
// minutes, and the clock.
func (o Options) Defaults() Options {
	if o.CALifetime == 0 {
		o.CALifetime = 10 * 365 * 24 * time.Hour
	}
	if o.Lifetime == 0 {
		o.Lifetime = 365 * 24 * time.Hour
	}
	if o.RenewAt == 0 {
		o.RenewAt = 2.0 / 3
	}
	if o.Grace == 0 {
		o.Grace = 2 * time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Manager keeps the certificates current. It is a controller-runtime Runnable that runs in every
// replica (each has its own cert directory); the Secret is shared and safe under conflicts.
type Manager struct {
	client client.Client
	opts   Options
}

func NewManager(c client.Client, opts Options) *Manager {
	return &Manager{client: c, opts: opts.Defaults()}
}

// NeedLeaderElection is false: every replica serves, so every replica needs its files.
func (m *Manager) NeedLeaderElection() bool { return false }

// Start renews the certificates until ctx ends, checking again at the next renewal time (at
// least every minute, so that a renewal by another replica is picked up soon).
func (m *Manager) Start(ctx context.Context) error {
	log := logf.FromContext(ctx).WithName("certs")
	for {
		next, err := m.Ensure(ctx)
		wait := time.Minute
		if err != nil {
			log.Error(err, "keeping the webhook certificates current; retrying")
			wait = 5 * time.Second
		} else if until := next.Sub(m.opts.Now()); until < wait {
			wait = max(until, 100*time.Millisecond)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// Ensure makes the Secret, the caBundle and the cert directory current, in that order, and
// returns when it is next due: the bundle is patched before the files are written, so that the
// CA of what this replica serves is in the bundle first.
func (m *Manager) Ensure(ctx context.Context) (time.Time, error) {
	secret, published, err := m.currentSecret(ctx)
	if err != nil {
		return time.Time{}, err
	}
	if err := m.patchCABundle(ctx); err != nil {
		return time.Time{}, err
	}
	if secret.Data[KeyNextCACert] != nil && published.IsZero() {
		if published, err = m.markPublished(ctx, secret); err != nil {
			return time.Time{}, err
		}
	}
	if err := m.writeFiles(secret.Data); err != nil {
		return time.Time{}, err
	}
	return m.nextRenewal(secret.Data, published)
}

// currentSecret returns the shared Secret, creating it or taking the next renewal step when one
// is due, and when the webhook configuration has carried its staged CA since (zero: it has not,
// or there is none). When another replica wins a race, its Secret is used.
func (m *Manager) currentSecret(ctx context.Context) (*corev1.Secret, time.Time, error) {
	key := client.ObjectKey{Namespace: m.opts.Namespace, Name: m.opts.SecretName}
	for attempt := 0; attempt < 3; attempt++ {
		secret := &corev1.Secret{}
		err := m.client.Get(ctx, key, secret)
		if apierrors.IsNotFound(err) {
			data, err := m.issue(nil)
			if err != nil {
				return nil, time.Time{}, err
			}
			secret = &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name, Labels: map[string]string{"app.kubernetes.io/name": "brokerport"}},
				Type:       corev1.SecretTypeTLS,
				Data:       data,
			}
			if err := m.client.Create(ctx, secret); apierrors.IsAlreadyExists(err) {
				continue // another replica created it first: use theirs
			} else if err != nil {
				return nil, time.Time{}, fmt.Errorf("creating Secret %s: %w", key, err)
			}
			return secret, time.Time{}, nil
		}
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("getting Secret %s: %w", key, err)
		}
		published, err := m.published(ctx, secret)
		if err != nil {
			return nil, time.Time{}, err
		}
		data, changed, err := m.renew(secret.Data, published)
		if err != nil {
			return nil, time.Time{}, err
		}
		if !changed {
			return secret, published, nil
		}
		secret.Data = data
		if data[KeyNextCACert] == nil {
			delete(secret.Annotations, AnnotationNextCAPublished)
			published = time.Time{}
		}
		if err := m.client.Update(ctx, secret); apierrors.IsConflict(err) {
			continue // another replica renewed it first: use theirs
		} else if err != nil {
			return nil, time.Time{}, fmt.Errorf("updating Secret %s: %w", key, err)
		}
		return secret, published, nil
	}
	return nil, time.Time{}, fmt.Errorf("Secret %s kept changing under brokerport's feet", key)
}

// published is when the webhook configuration was first seen carrying the Secret's staged CA,
// zero when there is none, it was never seen, or the configuration no longer carries it (it was
// re-applied): then the grace period starts again once the bundle is patched back.
func (m *Manager) published(ctx context.Context, secret *corev1.Secret) (time.Time, error) {
	next := secret.Data[KeyNextCACert]
	at, err := time.Parse(time.RFC3339Nano, secret.Annotations[AnnotationNextCAPublished])
	if next == nil || err != nil {
		return time.Time{}, nil
	}
	if m.opts.WebhookConfig == "" {
		return at, nil
	}
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := m.client.Get(ctx, client.ObjectKey{Name: m.opts.WebhookConfig}, mwc); err != nil {
		return time.Time{}, fmt.Errorf("getting MutatingWebhookConfiguration %s: %w", m.opts.WebhookConfig, err)
	}
	for _, w := range mwc.Webhooks {
		if !bytes.Contains(w.ClientConfig.CABundle, next) {
			return time.Time{}, nil
		}
	}
	return at, nil
}

// markPublished records that the webhook configuration carries the staged CA from now on: the
// bundle was just patched from a Secret at least as new as this one.
func (m *Manager) markPublished(ctx context.Context, secret *corev1.Secret) (time.Time, error) {
	now := m.opts.Now()
	if secret.Annotations == nil {
		secret.Annotations = map[string]string{}
	}
	secret.Annotations[AnnotationNextCAPublished] = now.UTC().Format(time.RFC3339Nano)
	if err := m.client.Update(ctx, secret); err != nil {
		return time.Time{}, fmt.Errorf("recording the caBundle's publication on Secret %s/%s: %w", secret.Namespace, secret.Name, err)
	}
	return now, nil
}

// renew takes the renewal step that is due, if any, and says whether the data changed: stage a
// new CA when the current one is due; promote the staged CA once the bundle carrying it was
// published Grace ago; renew the serving certificate when it is due, no longer matches the hosts
// or the signing CA; drop expired CAs from the bundle. Data that cannot be read is issued anew.
func (m *Manager) renew(old map[string][]byte, published time.Time) (map[string][]byte, bool, error) {
	now := m.opts.Now()
	ca, err := parseCert(old[KeyCACert])
	if _, keyErr := parseKey(old[KeyCAKey]); err != nil || keyErr != nil || !now.Before(ca.NotAfter) {
		data, err := m.issue(old)
		return data, true, err
	}
	data := maps.Clone(old)
	next, nextErr := parseCert(old[KeyNextCACert])
	if _, keyErr := parseKey(old[KeyNextCAKey]); nextErr != nil || keyErr != nil {
		next = nil
		delete(data, KeyNextCACert)
		delete(data, KeyNextCAKey)
	}
	switch {
	case next != nil && !published.IsZero() && !now.Before(published.Add(m.opts.Grace)):
		data[KeyCACert], data[KeyCAKey] = old[KeyNextCACert], old[KeyNextCAKey]
		delete(data, KeyNextCACert)
		delete(data, KeyNextCAKey)
		ca = next
	case next == nil && !now.Before(m.renewalTime(ca)):
		caCert, caKey, err := newCA(now, m.opts.CALifetime)
		if err != nil {
			return nil, false, fmt.Errorf("issuing the next CA: %w", err)
		}
		data[KeyNextCACert], data[KeyNextCAKey] = caCert, caKey
	}
	if m.servingDue(data[KeyCert], ca) {
		cert, key, err := newServing(now, m.opts.Lifetime, m.opts.Hosts, data[KeyCACert], data[KeyCAKey])
		if err != nil {
			return nil, false, fmt.Errorf("issuing the serving certificate: %w", err)
		}
		data[KeyCert], data[KeyKey] = cert, key
	}
	data[KeyCABundle] = m.bundle(now, data[KeyNextCACert], data[KeyCACert], old[KeyCABundle])
	changed := !maps.EqualFunc(old, data, bytes.Equal)
	return data, changed, nil
}

// servingDue tells whether the serving certificate is past its renewal time, does not parse, was
// not signed by ca, or does not cover the configured hosts.
func (m *Manager) servingDue(certPEM []byte, ca *x509.Certificate) bool {
	cert, err := parseCert(certPEM)
	return err != nil || !m.opts.Now().Before(m.renewalTime(cert)) || cert.CheckSignatureFrom(ca) != nil ||
		!slices.Equal(hostsOf(cert), slices.Sorted(slices.Values(m.opts.Hosts)))
}

// bundle is what clients must trust: the staged CA, the current one, and the previous ones until
// they expire, each once.
func (m *Manager) bundle(now time.Time, next, current []byte, previous ...[]byte) []byte {
	out := slices.Concat(next, current)
	seen := [][]byte{bytes.TrimSpace(next), bytes.TrimSpace(current)}
	for _, pemData := range previous {
		for rest := pemData; ; {
			var block *pem.Block
			if block, rest = pem.Decode(rest); block == nil {
				break
			}
			cert, err := x509.ParseCertificate(block.Bytes)
			encoded := pem.EncodeToMemory(block)
			if err != nil || !now.Before(cert.NotAfter) || slices.ContainsFunc(seen, func(s []byte) bool { return bytes.Equal(s, bytes.TrimSpace(encoded)) }) {
				continue
			}
			seen = append(seen, bytes.TrimSpace(encoded))
			out = append(out, encoded...)
		}
	}
	return out
}

// nextRenewal is when Ensure has something to do next: a certificate's renewal, the promotion of
// the staged CA, or the expiry of a previous CA that then leaves the bundle.
func (m *Manager) nextRenewal(data map[string][]byte, published time.Time) (time.Time, error) {
	ca, err := parseCert(data[KeyCACert])
	if err != nil {
		return time.Time{}, fmt.Errorf("CA certificate: %w", err)
	}
	cert, err := parseCert(data[KeyCert])
	if err != nil {
		return time.Time{}, fmt.Errorf("serving certificate: %w", err)
	}
	next := m.renewalTime(cert)
	if data[KeyNextCACert] == nil {
		next = earliest(next, m.renewalTime(ca))
	} else if !published.IsZero() {
		next = earliest(next, published.Add(m.opts.Grace))
	}
	for rest := data[KeyCABundle]; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if c, err := x509.ParseCertificate(block.Bytes); err == nil && !c.Equal(ca) {
			next = earliest(next, c.NotAfter)
		}
	}
	return next, nil
}

func (m *Manager) renewalTime(c *x509.Certificate) time.Time {
	life := c.NotAfter.Sub(c.NotBefore)
	return c.NotBefore.Add(time.Duration(float64(life) * m.opts.RenewAt))
}

// issue makes a new CA and serving certificate at once: for a new Secret (or one that cannot be
// read), where no client trusts anything yet. The previous CA stays in the bundle while valid.
func (m *Manager) issue(old map[string][]byte) (map[string][]byte, error) {
	now := m.opts.Now()
	caCert, caKey, err := newCA(now, m.opts.CALifetime)
	if err != nil {
		return nil, fmt.Errorf("issuing the CA: %w", err)
	}
	cert, key, err := newServing(now, m.opts.Lifetime, m.opts.Hosts, caCert, caKey)
	if err != nil {
		return nil, fmt.Errorf("issuing the serving certificate: %w", err)
	}
	bundle := m.bundle(now, nil, caCert, old[KeyCACert], old[KeyCABundle])
	return map[string][]byte{KeyCACert: caCert, KeyCAKey: caKey, KeyCABundle: bundle, KeyCert: cert, KeyKey: key}, nil
}

// writeFiles writes tls.crt and tls.key where the webhook server reads them, each atomically
// (a rename), key first: certwatcher reloads on the certificate's change.
func (m *Manager) writeFiles(data map[string][]byte) error {
	if err := os.MkdirAll(m.opts.CertDir, 0o700); err != nil {
		return fmt.Errorf("creating the cert directory: %w", err)
	}
	for _, name := range []string{KeyKey, KeyCert} {
		path := filepath.Join(m.opts.CertDir, name)
		if current, err := os.ReadFile(path); err == nil && bytes.Equal(current, data[name]) {
			continue
		}
		tmp, err := os.CreateTemp(m.opts.CertDir, "."+name+"-*")
		if err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
		_, werr := tmp.Write(data[name])
		cerr := tmp.Close()
		if err := errors.Join(werr, cerr); err != nil {
			os.Remove(tmp.Name())
			return fmt.Errorf("writing %s: %w", path, err)
		}
		if err := os.Rename(tmp.Name(), path); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
	}
	return nil
}

// patchCABundle sets the caBundle of every webhook of brokerport's MutatingWebhookConfiguration
// to the Secret's bundle, again when another replica changed it meanwhile. The configuration is
// read before the Secret and patched with its resourceVersion: a replica holding an older Secret
// can then never put back a bundle without a CA that another replica staged and published.
func (m *Manager) patchCABundle(ctx context.Context) error {
	if m.opts.WebhookConfig == "" {
		return nil
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error { return m.tryPatchCABundle(ctx) })
}

func (m *Manager) tryPatchCABundle(ctx context.Context) error {
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := m.client.Get(ctx, client.ObjectKey{Name: m.opts.WebhookConfig}, mwc); err != nil {
		return fmt.Errorf("getting MutatingWebhookConfiguration %s: %w", m.opts.WebhookConfig, err)
	}
	secret := &corev1.Secret{}
	if err := m.client.Get(ctx, client.ObjectKey{Namespace: m.opts.Namespace, Name: m.opts.SecretName}, secret); err != nil {
		return fmt.Errorf("getting Secret %s/%s: %w", m.opts.Namespace, m.opts.SecretName, err)
	}
	bundle := secret.Data[KeyCABundle]
	patch := client.MergeFromWithOptions(mwc.DeepCopy(), client.MergeFromWithOptimisticLock{})
	changed := false
	for i := range mwc.Webhooks {
		if !bytes.Equal(mwc.Webhooks[i].ClientConfig.CABundle, bundle) {
			mwc.Webhooks[i].ClientConfig.CABundle = bundle
			changed = true
		}
	}
	if !changed {
		return nil
	}
	if err := m.client.Patch(ctx, mwc, patch); err != nil {
		return fmt.Errorf("patching the caBundle of MutatingWebhookConfiguration %s: %w", m.opts.WebhookConfig, err)
	}
	return nil
}

func newCA(now time.Time, lifetime time.Duration) (certPEM, keyPEM []byte, err error) {
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "brokerport-ca"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	return sign(tmpl, now, lifetime, nil, nil)
}

func newServing(now time.Time, lifetime time.Duration, hosts []string, caCertPEM, caKeyPEM []byte) ([]byte, []byte, error) {
	ca, err := parseCert(caCertPEM)
	if err != nil {
		return nil, nil, err
	}
	caKey, err := parseKey(caKeyPEM)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "brokerport-webhook"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return sign(tmpl, now, lifetime, ca, caKey)
}

// sign issues tmpl for lifetime from now (backdated a little for clock skew), self-signed when
// parent is nil.
func sign(tmpl *x509.Certificate, now time.Time, lifetime time.Duration, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) ([]byte, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = now.Add(-min(time.Hour, lifetime/10))
	tmpl.NotAfter = now.Add(lifetime)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}

func parseCert(data []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

func parseKey(data []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM key")
	}
	return x509.ParseECPrivateKey(block.Bytes)
}

func hostsOf(c *x509.Certificate) []string {
	hosts := slices.Clone(c.DNSNames)
	for _, ip := range c.IPAddresses {
		hosts = append(hosts, ip.String())
	}
	slices.Sort(hosts)
	return hosts
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// WriteSelfSigned issues a CA and a serving certificate for hosts, writes tls.crt and tls.key
// into dir, and returns the CA certificate: TLS for tools and tests that run a webhook server
// without a cluster.
func WriteSelfSigned(dir string, hosts []string, lifetime time.Duration) ([]byte, error) {
	m := &Manager{opts: Options{CertDir: dir, Hosts: hosts, Lifetime: lifetime, CALifetime: lifetime}.Defaults()}
	data, err := m.issue(nil)
	if err != nil {
		return nil, err
	}
	return data[KeyCACert], m.writeFiles(data)
}
