//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/brokerport/brokerport/certs"
	"github.com/brokerport/brokerport/patches"
)

// TestRenewal is issue 13's CA renewal under load: brokerport restarted with a 60 s lifetime for
// its self-managed CA and serving certificate (renewed at 2/3 of it, so from about 38 s on, each
// new CA published for a 5 s grace before it signs) while a dry-run StatefulSet create is
// admitted every 100 ms for 90 s, past two CA renewals and several serving-certificate
// renewals. Not one admission may fail, the caBundle must change, and every certificate served
// must verify against the caBundle of 2 s before; one signed by a renewed CA must be served.
// The shared brokerport is then restarted as it was, with the Secret it had.
func TestRenewal(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	const load = 90 * time.Second
	secretKey := client.ObjectKey{Namespace: "brokerport-system", Name: "brokerport-webhook-tls"}
	original := &corev1.Secret{}
	require.NoError(t, env.admin.Get(ctx, secretKey, original))

	env.brokerport.Stop()
	t.Cleanup(func() { restartShared(t, original) })
	// Without its Secret, brokerport issues a CA and certificate of the new lifetime at once;
	// with it, the shared ones (10 years, 1 year) would not be due for renewal.
	require.NoError(t, env.admin.Delete(ctx, original.DeepCopy()))
	logOffset := fileSize(t, env.brokerport.Log)
	p, err := env.cp.StartBrokerport(ctx, env.admin, env.clientset, env.binary, env.port, append([]string{"--cert-lifetime=60s", "--cert-grace=5s"}, brokerportArgs...)...)
	if p != nil {
		env.brokerport = p
	}
	require.NoError(t, err)
	// The API servers load the new CA within moments of brokerport's start; the load starts
	// once they have (that is a start, not a renewal).
	require.NoError(t, waitFor(ctx, 30*time.Second, "a dry-run create admitted", func() error { return dryRunStatefulSet(ctx) }))

	first, err := currentBundle(ctx)
	require.NoError(t, err)
	startSecret := &corev1.Secret{}
	require.NoError(t, env.admin.Get(ctx, secretKey, startSecret))

	var admitted, failed int
	var failures, unverified []string
	// The caBundles seen, once a second, oldest first.
	type seen struct {
		at     time.Time
		bundle []byte
	}
	history := []seen{{time.Now(), first}}
	bundles := map[string]bool{string(first): true}
	served := map[string]bool{}  // leaf serial numbers
	signers := map[string]bool{} // the leaves' authority key IDs: one per CA that signed
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for i, end := 0, time.Now().Add(load); time.Now().Before(end); i++ {
		<-tick.C
		if err := dryRunStatefulSet(ctx); err != nil {
			failed++
			if len(failures) < 5 {
				failures = append(failures, time.Now().Format("15:04:05.000 ")+err.Error())
			}
		} else {
			admitted++
		}
		if i%10 != 0 {
			continue
		}
		// Once a second: what is served must verify against the caBundle of at least 2 s ago.
		// A new CA is in the bundle for the 5 s grace before anything it signed is served, so
		// an API server that loads the bundle late still verifies it; served the moment it is
		// published, it would fail here.
		bundle, err := currentBundle(ctx)
		require.NoError(t, err)
		bundles[string(bundle)] = true
		history = append(history, seen{time.Now(), bundle})
		before := history[0]
		for _, h := range history {
			if time.Since(h.at) >= verifyAge {
				before = h
			}
		}
		leaf, err := servedCertificate(before.bundle)
		if err != nil {
			if len(unverified) < 5 {
				unverified = append(unverified, fmt.Sprintf("%s against the caBundle of %s: %v", time.Now().Format("15:04:05.000"), before.at.Format("15:04:05.000"), err))
			}
			continue
		}
		served[leaf.SerialNumber.String()] = true
		signers[hex.EncodeToString(leaf.AuthorityKeyId)] = true
	}
	t.Logf("%d admitted, %d failed; %d caBundles, %d serving certificates from %d CAs seen", admitted, failed, len(bundles), len(served), len(signers))

	assert.Zero(t, failed, "admissions failed during the renewals: %v", failures)
	assert.Greater(t, admitted, int(load/time.Second)*3, "the load was not steady")
	assert.Empty(t, unverified, "a served certificate did not verify against the caBundle of %s before", verifyAge)
	assert.Greater(t, len(bundles), 1, "the caBundle never changed: no CA was renewed")
	assert.Greater(t, len(signers), 1, "no certificate signed by a renewed CA was served")
	assert.Greater(t, len(served), 1, "the serving certificate was never renewed")
	endSecret := &corev1.Secret{}
	require.NoError(t, env.admin.Get(ctx, secretKey, endSecret))
	assert.NotEqual(t, startSecret.Data[certs.KeyCACert], endSecret.Data[certs.KeyCACert], "the CA was not renewed")
	logged, err := readFrom(env.brokerport.Log, logOffset)
	require.NoError(t, err)
	assert.NotContains(t, logged, "keeping the webhook certificates current", "a renewal step failed")
}

// verifyAge is how old the caBundle is that a served certificate is verified against: less than
// the grace (5 s) by a margin for the once-a-second sampling.
const verifyAge = 2 * time.Second

// restartShared stops the short-lived brokerport, gives the Secret back the certificates the
// shared brokerport was started with (a restart with the default flags would otherwise renew a
// 60 s CA with a 2 minute grace, after it expired), and starts brokerport as TestMain did; later
// tests start once it admits again.
func restartShared(t *testing.T, original *corev1.Secret) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env.brokerport.Stop()
	secret := original.DeepCopy()
	if err := env.admin.Delete(ctx, secret); client.IgnoreNotFound(err) != nil {
		t.Errorf("deleting the short-lived certificates: %v", err)
	}
	secret.ResourceVersion, secret.UID, secret.ManagedFields = "", "", nil
	if err := env.admin.Create(ctx, secret); err != nil {
		t.Errorf("restoring Secret %s/%s: %v", secret.Namespace, secret.Name, err)
	}
	p, err := env.cp.StartBrokerport(ctx, env.admin, env.clientset, env.binary, env.port, brokerportArgs...)
	if p != nil {
		env.brokerport = p
	}
	if err != nil {
		t.Errorf("restarting the shared brokerport: %v", err)
		return
	}
	assert.NoError(t, waitFor(ctx, 30*time.Second, "a dry-run create admitted by the shared brokerport", func() error { return dryRunStatefulSet(ctx) }))
}

// dryRunStatefulSet has a labeled StatefulSet admitted without persisting it: brokerport's
// StatefulSet webhook is called (sideEffects None), and assigns it a one-port block.
func dryRunStatefulSet(ctx context.Context) error {
	sts := brokerSet("default", "renewal-load", 1, true)
	sts.Annotations[patches.AnnotationMaxBrokers] = "1"
	if err := env.admin.Create(ctx, sts, client.DryRunAll); err != nil {
		return err
	}
	if sts.Annotations[patches.AnnotationPortBase] == "" {
		return fmt.Errorf("StatefulSet %s/%s admitted without brokerport's port block", sts.Namespace, sts.Name)
	}
	return nil
}

// currentBundle is the caBundle of brokerport's MutatingWebhookConfiguration, the same in
// every webhook.
func currentBundle(ctx context.Context) ([]byte, error) {
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := env.admin.Get(ctx, client.ObjectKey{Name: "brokerport"}, mwc); err != nil {
		return nil, err
	}
	bundle := mwc.Webhooks[0].ClientConfig.CABundle
	for _, w := range mwc.Webhooks[1:] {
		if !bytes.Equal(w.ClientConfig.CABundle, bundle) {
			return nil, fmt.Errorf("webhook %s has another caBundle than %s", w.Name, mwc.Webhooks[0].Name)
		}
	}
	return bundle, nil
}

// servedCertificate is the certificate brokerport serves now, verified as the API server
// verifies it: against bundle, for 127.0.0.1.
func servedCertificate(bundle []byte) (*x509.Certificate, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(bundle) {
		return nil, fmt.Errorf("no certificate in the caBundle")
	}
	conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", env.port), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		return nil, fmt.Errorf("TLS to brokerport: %w", err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0], nil
}
