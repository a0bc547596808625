package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

// clock is a settable clock shared by the managers of a test.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newCluster(t *testing.T) client.Client { return newClusterWith(t, interceptor.Funcs{}) }

func options(dir string, c *clock) Options {
	return Options{
		Namespace: "brokerport-system", SecretName: "brokerport-webhook-tls", WebhookConfig: "brokerport",
		Hosts: []string{"brokerport-webhook.brokerport-system.svc", "127.0.0.1"}, CertDir: dir,
		CALifetime: 100 * time.Hour, Lifetime: 3 * time.Hour, Grace: grace, Now: c.Now,
	}
}

func TestEnsureIssuesWritesAndPatches(t *testing.T) {
	c := newCluster(t)
	clk := &clock{now: time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)}
	dir := t.TempDir()
	next, err := NewManager(c, options(dir, clk)).Ensure(context.Background())
	require.NoError(t, err)
	assert.Equal(t, clk.Now().Add(-18*time.Minute).Add(2*time.Hour+12*time.Minute), next, "renewal at 2/3 of the serving lifetime (3h, backdated 18m)")

	secret := &corev1.Secret{}
	require.NoError(t, c.Get(context.Background(), client.ObjectKey{Namespace: "brokerport-system", Name: "brokerport-webhook-tls"}, secret))
	for _, name := range []string{KeyCert, KeyKey} {
		onDisk, err := os.ReadFile(filepath.Join(dir, name))
		require.NoError(t, err)
		assert.Equal(t, secret.Data[name], onDisk)
	}
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	require.NoError(t, c.Get(context.Background(), client.ObjectKey{Name: "brokerport"}, mwc))
	for _, w := range mwc.Webhooks {
		assert.Equal(t, secret.Data[KeyCABundle], w.ClientConfig.CABundle, w.Name)
	}

	cert, err := parseCert(secret.Data[KeyCert])
	require.NoError(t, err)
	assert.Equal(t, []string{"brokerport-webhook.brokerport-system.svc"}, cert.DNSNames)
	assert.Equal(t, "127.0.0.1", cert.IPAddresses[0].String())
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(secret.Data[KeyCABundle]))
	_, err = cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "brokerport-webhook.brokerport-system.svc", CurrentTime: clk.Now()})
	assert.NoError(t, err)

	// Nothing is due: a second Ensure changes nothing.
	rv := secret.ResourceVersion
	_, err = NewManager(c, options(dir, clk)).Ensure(context.Background())
	require.NoError(t, err)
	require.NoError(t, c.Get(context.Background(), client.ObjectKeyFromObject(secret), secret))
	assert.Equal(t, rv, secret.ResourceVersion)
}

// Replicas starting together share one Secret: whoever loses the create uses the winner's.
func TestReplicasRacingShareOneSecret(t *testing.T) {
	c := newCluster(t)
	clk := &clock{now: time.Now()}
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir(), t.TempDir()}
	var wg sync.WaitGroup
	for _, dir := range dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := NewManager(c, options(dir, clk)).Ensure(context.Background())
			assert.NoError(t, err)
		}()
	}
	wg.Wait()
	first, err := os.ReadFile(filepath.Join(dirs[0], KeyCert))
	require.NoError(t, err)
	for _, dir := range dirs[1:] {
		got, err := os.ReadFile(filepath.Join(dir, KeyCert))
		require.NoError(t, err)
		assert.Equal(t, first, got)
	}
}

// grace is the tests' Options.Grace, in fake time.
const grace = 30 * time.Minute

// bundleCerts parses every certificate of a PEM bundle.
func bundleCerts(t *testing.T, bundle []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for rest := bundle; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			return out
		}
		c, err := x509.ParseCertificate(block.Bytes)
		require.NoError(t, err)
		out = append(out, c)
	}
}

func webhookBundle(t *testing.T, c client.Client) []byte {
	t.Helper()
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	require.NoError(t, c.Get(context.Background(), client.ObjectKey{Name: "brokerport"}, mwc))
	return mwc.Webhooks[0].ClientConfig.CABundle
}

// The serving certificate is renewed every 2h, and the CA (at ~66h) too, while the server keeps
// serving: every bundle an API server may still hold (any the webhook configuration carried
// within the grace period) verifies what is served, at every step. The steps are driven one by
// one: the clock, Ensure and the certificate reload are the test's, so nothing races.
func TestRotationDropsNoRequest(t *testing.T) {
	c := newCluster(t)
	clk := &clock{now: time.Now()}
	dir := t.TempDir()
	m := NewManager(c, options(dir, clk))
	_, err := m.Ensure(context.Background())
	require.NoError(t, err)

	watcher, err := certwatcher.New(filepath.Join(dir, KeyCert), filepath.Join(dir, KeyKey))
	require.NoError(t, err)
	listener, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: watcher.GetCertificate, MinVersion: tls.VersionTLS12})
	require.NoError(t, err)
	server := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })}
	go server.Serve(listener)
	defer server.Close()
	addr := listener.Addr().String()

	// request is what the API server does: a TLS handshake verifying the served certificate
	// against the bundle, at the test's time.
	request := func(bundle []byte) (*x509.Certificate, error) {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(bundle)
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", Time: clk.Now})
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0], nil
	}
	type held struct {
		since  time.Time
		bundle []byte
	}
	bundles := []held{{clk.Now(), webhookBundle(t, c)}}
	serials, issuers := map[string]bool{}, map[string]bool{}
	for range 110 * 4 { // 110h in steps of 15m: the CA is renewed once, and its predecessor expires
		clk.Advance(15 * time.Minute)
		_, err := m.Ensure(context.Background())
		require.NoError(t, err)
		require.NoError(t, watcher.ReadCertificate())
		if b := webhookBundle(t, c); !bytes.Equal(b, bundles[len(bundles)-1].bundle) {
			bundles = append(bundles, held{clk.Now(), b})
		}
		for i, h := range bundles {
			if i+1 < len(bundles) && !bundles[i+1].since.Add(grace).After(clk.Now()) {
				continue // replaced more than the grace period ago: no API server holds it
			}
			served, err := request(h.bundle)
			require.NoError(t, err, "at %s, with the bundle of %s", clk.Now(), h.since)
			serials[served.SerialNumber.String()] = true
			issuers[string(served.AuthorityKeyId)] = true
		}
	}
	assert.GreaterOrEqual(t, len(serials), 50, "the serving certificate was renewed")
	assert.Len(t, issuers, 2, "the CA was renewed")
}

// The order of a CA renewal: at every moment (before each caBundle patch and after each Ensure)
// the certificate in the cert directory verifies against the webhook configuration's bundle; the
// first certificate signed by the new CA is written only when the bundle carries both the old
// and the new CA, and has carried the new one for the grace period.
func TestCARenewalOrder(t *testing.T) {
	clk := &clock{now: time.Now()}
	dir := t.TempDir()
	served := func() *x509.Certificate {
		data, err := os.ReadFile(filepath.Join(dir, KeyCert))
		if os.IsNotExist(err) {
			return nil
		}
		require.NoError(t, err)
		cert, err := parseCert(data)
		require.NoError(t, err)
		return cert
	}
	// inBundleSince is when each CA (by subject key) was first seen in the webhook configuration.
	inBundleSince := map[string]time.Time{}
	verify := func(when string, bundle []byte) {
		cert := served()
		if cert == nil {
			return
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(bundle)
		_, err := cert.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: clk.Now()})
		require.NoError(t, err, "%s at %s: the served certificate does not verify against the caBundle", when, clk.Now())
	}
	var c client.Client
	c = newClusterWith(t, interceptor.Funcs{Patch: func(ctx context.Context, cl client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
		if _, ok := obj.(*admissionregistrationv1.MutatingWebhookConfiguration); ok {
			verify("before a caBundle patch", webhookBundle(t, cl))
		}
		if err := cl.Patch(ctx, obj, patch, opts...); err != nil {
			return err
		}
		if _, ok := obj.(*admissionregistrationv1.MutatingWebhookConfiguration); ok {
			for _, ca := range bundleCerts(t, webhookBundle(t, cl)) {
				if _, seen := inBundleSince[string(ca.SubjectKeyId)]; !seen {
					inBundleSince[string(ca.SubjectKeyId)] = clk.Now()
				}
			}
		}
		return nil
	}})
	m := NewManager(c, options(dir, clk))
	_, err := m.Ensure(context.Background())
	require.NoError(t, err)
	first := served()

	switched := false
	for range 80 * 12 { // 80h in steps of 5m: the CA (100h) is renewed at ~66h
		clk.Advance(5 * time.Minute)
		_, err := m.Ensure(context.Background())
		require.NoError(t, err)
		bundle := webhookBundle(t, c)
		verify("after Ensure", bundle)
		cert := served()
		if switched || bytes.Equal(cert.AuthorityKeyId, first.AuthorityKeyId) {
			continue
		}
		switched = true
		cas := bundleCerts(t, bundle)
		require.Len(t, cas, 2, "the bundle carries the old and the new CA when the new CA's first certificate is served")
		assert.Equal(t, cert.AuthorityKeyId, cas[0].SubjectKeyId, "the new CA")
		assert.Equal(t, first.AuthorityKeyId, cas[1].SubjectKeyId, "the old CA")
		since := inBundleSince[string(cert.AuthorityKeyId)]
		assert.False(t, since.IsZero())
		assert.GreaterOrEqual(t, clk.Now().Sub(since), grace, "the new CA was in the bundle for the grace period before it signed what is served")
	}
	assert.True(t, switched, "the CA was renewed")
}

func newClusterWith(t *testing.T, funcs interceptor.Funcs) client.Client {
	scheme := runtime.NewScheme()
	require.NoError(t, clientgoscheme.AddToScheme(scheme))
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "brokerport"},
		Webhooks:   []admissionregistrationv1.MutatingWebhook{{Name: "pods.brokerport.io"}, {Name: "bindings.brokerport.io"}},
	}
	return fake.NewClientBuilder().WithScheme(scheme).WithObjects(mwc).WithInterceptorFuncs(funcs).Build()
}

// The steps of a CA renewal, one Ensure at a time: staged (in the bundle, not signing), promoted
// after the grace period (the previous CA kept), and the previous CA dropped once it expires.
func TestCARenewalSteps(t *testing.T) {
	c := newCluster(t)
	clk := &clock{now: time.Now()}
	m := NewManager(c, options(t.TempDir(), clk))
	_, err := m.Ensure(context.Background())
	require.NoError(t, err)
	before := secretData(t, c)

	clk.Advance(70 * time.Hour) // past 2/3 of the CA's 100h (backdated 1h)
	next, err := m.Ensure(context.Background())
	require.NoError(t, err)
	staged := secretData(t, c)
	assert.Equal(t, before[KeyCACert], staged[KeyCACert], "the current CA still signs")
	require.NotNil(t, staged[KeyNextCACert], "a new CA is staged")
	assert.Equal(t, slices.Concat(staged[KeyNextCACert], before[KeyCACert]), staged[KeyCABundle])
	assert.Equal(t, staged[KeyCABundle], webhookBundle(t, c), "and published")
	cert, err := parseCert(staged[KeyCert])
	require.NoError(t, err)
	require.NoError(t, cert.CheckSignatureFrom(mustParse(t, before[KeyCACert])), "the serving certificate is still the old CA's")
	assert.Equal(t, clk.Now().Add(grace), next, "Ensure is due again when the grace period ends")

	clk.Advance(grace - time.Second)
	_, err = m.Ensure(context.Background())
	require.NoError(t, err)
	assert.Equal(t, before[KeyCACert], secretData(t, c)[KeyCACert], "not promoted before the grace period ends")

	clk.Advance(time.Second)
	_, err = m.Ensure(context.Background())
	require.NoError(t, err)
	promoted := secretData(t, c)
	assert.Equal(t, staged[KeyNextCACert], promoted[KeyCACert], "promoted")
	assert.Nil(t, promoted[KeyNextCACert])
	assert.Equal(t, staged[KeyCABundle], promoted[KeyCABundle], "the previous CA stays in the bundle")
	cert, err = parseCert(promoted[KeyCert])
	require.NoError(t, err)
	require.NoError(t, cert.CheckSignatureFrom(mustParse(t, promoted[KeyCACert])), "a new serving certificate from the new CA")

	clk.Advance(31 * time.Hour) // past the previous CA's NotAfter (start + 100h)
	_, err = m.Ensure(context.Background())
	require.NoError(t, err)
	assert.Equal(t, promoted[KeyCACert], secretData(t, c)[KeyCABundle], "the expired CA left the bundle")
	assert.Equal(t, promoted[KeyCACert], webhookBundle(t, c))
}

// When the webhook configuration loses the staged CA (re-applied from the manifests), the bundle
// is patched back and the grace period starts again.
func TestCARenewalWaitsForTheBundleAgain(t *testing.T) {
	c := newCluster(t)
	clk := &clock{now: time.Now()}
	m := NewManager(c, options(t.TempDir(), clk))
	_, err := m.Ensure(context.Background())
	require.NoError(t, err)
	clk.Advance(70 * time.Hour)
	_, err = m.Ensure(context.Background())
	require.NoError(t, err)
	current := secretData(t, c)[KeyCACert]

	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	require.NoError(t, c.Get(context.Background(), client.ObjectKey{Name: "brokerport"}, mwc))
	for i := range mwc.Webhooks {
		mwc.Webhooks[i].ClientConfig.CABundle = nil
	}
	require.NoError(t, c.Update(context.Background(), mwc))

	clk.Advance(grace)
	_, err = m.Ensure(context.Background())
	require.NoError(t, err)
	assert.Equal(t, current, secretData(t, c)[KeyCACert], "not promoted: the bundle was just patched back")
	assert.Equal(t, secretData(t, c)[KeyCABundle], webhookBundle(t, c))

	clk.Advance(grace)
	_, err = m.Ensure(context.Background())
	require.NoError(t, err)
	assert.NotEqual(t, current, secretData(t, c)[KeyCACert], "promoted a grace period after")
}

func mustParse(t *testing.T, data []byte) *x509.Certificate {
	t.Helper()
	c, err := parseCert(data)
	require.NoError(t, err)
	return c
}

func secretData(t *testing.T, c client.Client) map[string][]byte {
	secret := &corev1.Secret{}
	require.NoError(t, c.Get(context.Background(), client.ObjectKey{Namespace: "brokerport-system", Name: "brokerport-webhook-tls"}, secret))
	return secret.Data
}
