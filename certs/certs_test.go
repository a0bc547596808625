package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
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

func newCluster(t *testing.T) client.Client {
	scheme := runtime.NewScheme()
	require.NoError(t, clientgoscheme.AddToScheme(scheme))
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "brokerport"},
		Webhooks:   []admissionregistrationv1.MutatingWebhook{{Name: "pods.brokerport.io"}, {Name: "bindings.brokerport.io"}},
	}
	return fake.NewClientBuilder().WithScheme(scheme).WithObjects(mwc).Build()
}

func options(dir string, c *clock) Options {
	return Options{
		Namespace: "brokerport-system", SecretName: "brokerport-webhook-tls", WebhookConfig: "brokerport",
		Hosts: []string{"brokerport-webhook.brokerport-system.svc", "127.0.0.1"}, CertDir: dir,
		CALifetime: 100 * time.Hour, Lifetime: 3 * time.Hour, Now: c.Now,
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

// The serving certificate is renewed, and the CA too, while requests keep flowing: none fails.
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

	// The client trusts what the API server would: the caBundle of the webhook configuration,
	// refreshed on every request, as the API server does when the configuration changes.
	bundle := func() *x509.CertPool {
		mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
		require.NoError(t, c.Get(context.Background(), client.ObjectKey{Name: "brokerport"}, mwc))
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(mwc.Webhooks[0].ClientConfig.CABundle)
		return pool
	}
	addr := listener.Addr().(*net.TCPAddr).String()
	var ok, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				httpClient := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: bundle(), ServerName: "127.0.0.1", Time: clk.Now}}}
				resp, err := httpClient.Get("https://" + addr + "/")
				if err != nil {
					failed.Add(1)
					t.Logf("request failed: %v", err)
					continue
				}
				resp.Body.Close()
				ok.Add(1)
			}
		}()
	}

	served := func() string {
		conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
		require.NoError(t, err)
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	serials := map[string]bool{served(): true}
	for range 40 { // 40 × 1h: serving renewed every 2h, the CA (100h) once
		clk.Advance(time.Hour)
		_, err := m.Ensure(context.Background())
		require.NoError(t, err)
		require.NoError(t, watcher.ReadCertificate())
		serials[served()] = true
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	assert.Zero(t, failed.Load(), "requests failed during rotation")
	assert.Positive(t, ok.Load(), "requests flowed during the rotation")
	assert.GreaterOrEqual(t, len(serials), 15, "the serving certificate was renewed")
}

func TestCARenewalKeepsThePreviousCAInTheBundle(t *testing.T) {
	c := newCluster(t)
	clk := &clock{now: time.Now()}
	m := NewManager(c, options(t.TempDir(), clk))
	_, err := m.Ensure(context.Background())
	require.NoError(t, err)
	before := secretData(t, c)

	clk.Advance(70 * time.Hour) // past 2/3 of the CA's 100h (backdated 10h)
	_, err = m.Ensure(context.Background())
	require.NoError(t, err)
	after := secretData(t, c)
	assert.NotEqual(t, before[KeyCACert], after[KeyCACert], "CA renewed")
	assert.Equal(t, append(append([]byte{}, after[KeyCACert]...), before[KeyCACert]...), after[KeyCABundle])
}

func secretData(t *testing.T, c client.Client) map[string][]byte {
	secret := &corev1.Secret{}
	require.NoError(t, c.Get(context.Background(), client.ObjectKey{Namespace: "brokerport-system", Name: "brokerport-webhook-tls"}, secret))
	return secret.Data
}
