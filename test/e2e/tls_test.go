//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/brokerport/brokerport/patches"
)

// TestTLS has cert-manager's real controllers (built from its Go module) issue every broker of an
// Apache Kafka StatefulSet a certificate from a CA Issuer, through brokerport.io/tls-issuer:
// each certificate must name the address the broker advertises (its node's ExternalIP, known only
// at binding), and franz-go and kcat, verifying hostnames against the CA, must reach every broker
// at the published address over TLS (each fake broker serves its own pod's certificate Secret).
// brokerport started before cert-manager's CRDs existed (StartCertManager installs them): it must
// find cert-manager when the StatefulSet asks for certificates, as on a cluster where cert-manager
// is installed after brokerport.
func TestTLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	_, err := env.cp.StartCertManager(ctx, env.admin)
	require.NoError(t, err)

	const ns = "tls"
	convergeNamespace(t, ctx, ns, nil)
	caPEM := brokersCA(t, ctx, ns)

	sts := kafkaStatefulSet()
	sts.Namespace = ns
	sts.Annotations[patches.AnnotationTLSIssuer] = "Issuer/brokers-ca"
	require.NoError(t, env.admin.Create(ctx, sts))
	require.NoError(t, waitFor(ctx, 3*time.Minute, "every broker's certificate issued and the brokers published", func() error {
		cm := &corev1.ConfigMap{}
		if err := env.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: sts.Name + "-external"}, cm); err != nil {
			return err
		}
		if strings.Count(cm.Data["status"], " exposed") != 3 {
			return fmt.Errorf("status=%q", cm.Data["status"])
		}
		return published(ctx, ns, sts.Name, 3)
	}))

	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(caPEM))
	for i := range 3 {
		pod := &corev1.Pod{}
		require.NoError(t, env.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: fmt.Sprintf("kafka-%d", i)}, pod))
		host := pod.Annotations[patches.AnnotationHost]
		secret := &corev1.Secret{}
		require.NoError(t, env.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: patches.TLSSecretName(sts.Name, i)}, secret))
		block, _ := pem.Decode(secret.Data["tls.crt"])
		require.NotNil(t, block, "Secret %s: tls.crt", secret.Name)
		leaf, err := x509.ParseCertificate(block.Bytes)
		require.NoError(t, err)
		_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: host, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		assert.NoError(t, err, "broker %s's certificate verified for its host %s", pod.Name, host)
		assert.Contains(t, leaf.DNSNames, fmt.Sprintf("kafka-%d.kafka-headless.tls.svc", i))
		assert.NotEmpty(t, secret.Data["tls-combined.pem"], "the PEM keystore Kafka reads")

		resolved, err := resolveEnv(pod, "kafka")
		require.NoError(t, err)
		assert.Contains(t, strings.Split(resolved["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"], ","), "EXTERNAL:SSL")
		assert.Equal(t, "/etc/brokerport-tls/tls-combined.pem", resolved["KAFKA_LISTENER_NAME_EXTERNAL_SSL_KEYSTORE_LOCATION"])
	}

	servePodCertificate := func(ctx context.Context, pod *corev1.Pod) (*tls.Config, error) {
		ordinal, _ := patches.OrdinalOf(pod.Name, sts.Name)
		secret := &corev1.Secret{}
		if err := env.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: patches.TLSSecretName(sts.Name, ordinal)}, secret); err != nil {
			return nil, err
		}
		pair, err := tls.X509KeyPair(secret.Data["tls.crt"], secret.Data["tls.key"])
		if err != nil {
			return nil, fmt.Errorf("Secret %s: %w", secret.Name, err)
		}
		return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
	}
	require.NoError(t, checkKafkaWith(ctx, ns, sts.Name, "kafka", 3, externalListener, nil, kafkaCheck{serverTLS: servePodCertificate, caPEM: caPEM}))

	t.Run("a certificate for another address fails hostname verification", func(t *testing.T) {
		other := func(ctx context.Context, pod *corev1.Pod) (*tls.Config, error) {
			if pod.Name != "kafka-1" {
				return servePodCertificate(ctx, pod)
			}
			zero := pod.DeepCopy()
			zero.Name = "kafka-0" // broker 0's certificate, which names broker 0's node
			return servePodCertificate(ctx, zero)
		}
		err := checkKafkaWith(ctx, ns, sts.Name, "kafka", 3, externalListener, nil, kafkaCheck{serverTLS: other, caPEM: caPEM})
		require.Error(t, err)
		t.Logf("as expected: %v", err)
	})

	t.Run("brokerport's identity asks only for what it makes", func(t *testing.T) {
		certificateWritesPolicy(t, ctx, sts)
	})
}

// certificateWritesPolicy: the policy brokerport-certificate-writes type-checks against
// cert-manager's CRD with no warning, lets a Certificate as brokerport makes it through and
// refuses, to brokerport's identity, one that asks for more (a CA naming two hosts), all dry runs.
func certificateWritesPolicy(t *testing.T, ctx context.Context, sts *appsv1.StatefulSet) {
	const name = "brokerport-certificate-writes"
	typeChecked(t, ctx, name)
	cfg, errs := patches.ParseConfig(sts.Annotations, nil, patches.DefaultOptions())
	require.Empty(t, errs)
	bp := asBrokerport(t)
	made := patches.BrokerCertificate(sts, cfg, 5, "203.0.113.5") // no broker 5: nothing of that name exists
	require.NoError(t, bp.Create(ctx, made, client.DryRunAll), "a Certificate as brokerport makes it")
	more := patches.BrokerCertificate(sts, cfg, 6, "login.bank.example")
	more.Spec.IsCA = true
	more.Spec.IPAddresses = []string{"203.0.113.6"}
	require.NoError(t, waitFor(ctx, 30*time.Second, name+" enforced", func() error {
		if err := bp.Create(ctx, more.DeepCopy(), client.DryRunAll); err == nil || !strings.Contains(err.Error(), "ValidatingAdmissionPolicy '"+name+"'") {
			return fmt.Errorf("not refused by the policy: %v", err)
		}
		return nil
	}))
}

// brokersCA makes, in namespace ns, a self-signed Issuer, a CA Certificate issued by it and the CA
// Issuer "brokers-ca" that signs with it, as cert-manager's documentation sets up a private CA;
// it returns the CA certificate clients trust.
func brokersCA(t *testing.T, ctx context.Context, ns string) []byte {
	t.Helper()
	selfSigned := &cmapi.Issuer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "selfsigned"},
		Spec: cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{SelfSigned: &cmapi.SelfSignedIssuer{}}}}
	ca := &cmapi.Certificate{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "brokers-ca"},
		Spec: cmapi.CertificateSpec{IsCA: true, CommonName: "brokers-ca", SecretName: "brokers-ca",
			PrivateKey: &cmapi.CertificatePrivateKey{Algorithm: cmapi.ECDSAKeyAlgorithm, Size: 256},
			IssuerRef:  cmmeta.IssuerReference{Kind: cmapi.IssuerKind, Name: "selfsigned"}}}
	caIssuer := &cmapi.Issuer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "brokers-ca"},
		Spec: cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{CA: &cmapi.CAIssuer{SecretName: "brokers-ca"}}}}
	for _, obj := range []client.Object{selfSigned, ca, caIssuer} {
		require.NoError(t, env.admin.Create(ctx, obj))
	}
	var caPEM []byte
	require.NoError(t, waitFor(ctx, time.Minute, "the brokers' CA issued", func() error {
		secret := &corev1.Secret{}
		if err := env.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: "brokers-ca"}, secret); err != nil {
			return err
		}
		if caPEM = secret.Data["tls.crt"]; len(caPEM) == 0 {
			return fmt.Errorf("Secret brokers-ca has no tls.crt yet")
		}
		return nil
	}))
	return caPEM
}
