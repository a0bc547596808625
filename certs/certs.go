// Package certs is brokerport's self-managed TLS, for clusters without cert-manager: a CA and a
// serving certificate (ECDSA P-256) kept in one Secret shared by every replica, written to the
// cert directory that controller-runtime's certwatcher reloads, with the CA patched into
// brokerport's own MutatingWebhookConfiguration, and renewed before they expire.
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
	KeyCABundle = "ca-bundle.crt" // the current CA and, after a CA renewal, the previous one
	KeyCert     = "tls.crt"
	KeyKey      = "tls.key"
)

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
	Now     func() time.Time
}

// Defaults fills in lifetimes (CA 10 years, serving 1 year), renewal at 2/3, and the clock.
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

// Ensure makes the Secret, the cert directory and the caBundle current, and returns when the
// next renewal is due.
func (m *Manager) Ensure(ctx context.Context) (time.Time, error) {
	secret, err := m.currentSecret(ctx)
	if err != nil {
		return time.Time{}, err
	}
	if err := m.writeFiles(secret.Data); err != nil {
		return time.Time{}, err
	}
	if err := m.patchCABundle(ctx, secret.Data[KeyCABundle]); err != nil {
		return time.Time{}, err
	}
	return m.nextRenewal(secret.Data)
}

// currentSecret returns the shared Secret, creating or renewing it when needed. When another
// replica wins a race, its Secret is used.
func (m *Manager) currentSecret(ctx context.Context) (*corev1.Secret, error) {
	key := client.ObjectKey{Namespace: m.opts.Namespace, Name: m.opts.SecretName}
	for attempt := 0; attempt < 3; attempt++ {
		secret := &corev1.Secret{}
		err := m.client.Get(ctx, key, secret)
		if apierrors.IsNotFound(err) {
			data, err := m.issue(nil)
			if err != nil {
				return nil, err
			}
			secret = &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name, Labels: map[string]string{"app.kubernetes.io/name": "brokerport"}},
				Type:       corev1.SecretTypeTLS,
				Data:       data,
			}
			if err := m.client.Create(ctx, secret); apierrors.IsAlreadyExists(err) {
				continue // another replica created it first: use theirs
			} else if err != nil {
				return nil, fmt.Errorf("creating Secret %s: %w", key, err)
			}
			return secret, nil
		}
		if err != nil {
			return nil, fmt.Errorf("getting Secret %s: %w", key, err)
		}
		if !m.needsRenewal(secret.Data) {
			return secret, nil
		}
		data, err := m.issue(secret.Data)
		if err != nil {
			return nil, err
		}
		secret.Data = data
		if err := m.client.Update(ctx, secret); apierrors.IsConflict(err) {
			continue // another replica renewed it first: use theirs
		} else if err != nil {
			return nil, fmt.Errorf("updating Secret %s: %w", key, err)
		}
		return secret, nil
	}
	return nil, fmt.Errorf("Secret %s kept changing under brokerport's feet", key)
}

// needsRenewal tells whether the serving certificate (or the CA) is past its renewal time, does
// not parse, or does not cover the configured hosts.
func (m *Manager) needsRenewal(data map[string][]byte) bool {
	next, err := m.nextRenewal(data)
	if err != nil || !m.opts.Now().Before(next) {
		return true
	}
	cert, err := parseCert(data[KeyCert])
	return err != nil || !slices.Equal(hostsOf(cert), slices.Sorted(slices.Values(m.opts.Hosts)))
}

func (m *Manager) nextRenewal(data map[string][]byte) (time.Time, error) {
	ca, err := parseCert(data[KeyCACert])
	if err != nil {
		return time.Time{}, fmt.Errorf("CA certificate: %w", err)
	}
	cert, err := parseCert(data[KeyCert])
	if err != nil {
		return time.Time{}, fmt.Errorf("serving certificate: %w", err)
	}
	return earliest(m.renewalTime(ca), m.renewalTime(cert)), nil
}

func (m *Manager) renewalTime(c *x509.Certificate) time.Time {
	life := c.NotAfter.Sub(c.NotBefore)
	return c.NotBefore.Add(time.Duration(float64(life) * m.opts.RenewAt))
}

// issue makes a new serving certificate, and a new CA too when the old one is due; the previous
// CA stays in the bundle, so that clients keep trusting the replicas not yet renewed.
func (m *Manager) issue(old map[string][]byte) (map[string][]byte, error) {
	now := m.opts.Now()
	caCert, caKey, bundle := []byte(nil), []byte(nil), []byte(nil)
	if old != nil {
		if ca, err := parseCert(old[KeyCACert]); err == nil && now.Before(m.renewalTime(ca)) {
			caCert, caKey, bundle = old[KeyCACert], old[KeyCAKey], old[KeyCABundle]
		}
	}
	if caCert == nil {
		var err error
		if caCert, caKey, err = newCA(now, m.opts.CALifetime); err != nil {
			return nil, fmt.Errorf("issuing the CA: %w", err)
		}
		bundle = caCert
		if old != nil {
			if prev, err := parseCert(old[KeyCACert]); err == nil && now.Before(prev.NotAfter) {
				bundle = append(slices.Clone(caCert), old[KeyCACert]...)
			}
		}
	}
	cert, key, err := newServing(now, m.opts.Lifetime, m.opts.Hosts, caCert, caKey)
	if err != nil {
		return nil, fmt.Errorf("issuing the serving certificate: %w", err)
	}
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

// patchCABundle sets the caBundle of every webhook of brokerport's MutatingWebhookConfiguration,
// again when another replica changed it meanwhile.
func (m *Manager) patchCABundle(ctx context.Context, bundle []byte) error {
	if m.opts.WebhookConfig == "" {
		return nil
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error { return m.tryPatchCABundle(ctx, bundle) })
}

func (m *Manager) tryPatchCABundle(ctx context.Context, bundle []byte) error {
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := m.client.Get(ctx, client.ObjectKey{Name: m.opts.WebhookConfig}, mwc); err != nil {
		return fmt.Errorf("getting MutatingWebhookConfiguration %s: %w", m.opts.WebhookConfig, err)
	}
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
