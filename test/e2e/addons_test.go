//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// lbPool is the IPAddressPool every scenario starts MetalLB with: loopback addresses, so that a
// test can listen where a Service is published (the nodes are 127.0.1.x).
var (
	lbPool                 = []string{"127.0.2.1-127.0.2.30"}
	lbPoolFirst, lbPoolEnd = netip.MustParseAddr("127.0.2.1"), netip.MustParseAddr("127.0.2.30")
)

// TestAddons proves the add-ons the loadbalancer strategy and per-broker TLS rely on: the real
// MetalLB controller publishes a LoadBalancer Service's address from the pool, and the real
// cert-manager controllers issue a CA from a SelfSigned ClusterIssuer and, from a CA Issuer, a
// leaf certificate with an IP and a DNS SAN that verifies against that CA.
func TestAddons(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	metallb, err := env.cp.StartMetalLB(ctx, env.admin, lbPool)
	require.NoError(t, err)
	certManager, err := env.cp.StartCertManager(ctx, env.admin)
	require.NoError(t, err)

	t.Run("started once", func(t *testing.T) {
		again, err := env.cp.StartMetalLB(ctx, env.admin, lbPool)
		require.NoError(t, err)
		assert.Same(t, metallb, again, "a second StartMetalLB returns the running controller")
		_, err = env.cp.StartMetalLB(ctx, env.admin, []string{"127.0.3.1/32"})
		assert.ErrorContains(t, err, "already runs", "another pool is refused, not silently ignored")
		againCM, err := env.cp.StartCertManager(ctx, env.admin)
		require.NoError(t, err)
		assert.Same(t, certManager, againCM, "a second StartCertManager returns the running controller")
	})

	t.Run("LoadBalancer Service gets an address from the pool", func(t *testing.T) {
		ns := addonsNamespace(t, ctx, "addons-lb")
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "broker-0"},
			Spec: corev1.ServiceSpec{
				Type:     corev1.ServiceTypeLoadBalancer,
				Selector: map[string]string{"app": "broker"},
				Ports:    []corev1.ServicePort{{Name: "kafka", Port: 9094, TargetPort: intstr.FromInt32(9094)}},
				// No nodePort taken from the range brokerport's port blocks come from.
				AllocateLoadBalancerNodePorts: ptrTo(false),
			},
		}
		require.NoError(t, env.admin.Create(ctx, svc))
		start := time.Now()
		require.NoError(t, waitFor(ctx, 30*time.Second, "status.loadBalancer.ingress of Service "+ns+"/broker-0", func() error {
			if err := env.admin.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
				return err
			}
			if len(svc.Status.LoadBalancer.Ingress) == 0 {
				return fmt.Errorf("Service %s/%s: status.loadBalancer.ingress is empty", ns, svc.Name)
			}
			return nil
		}))
		t.Logf("Service %s/%s published at %s in %s", ns, svc.Name, svc.Status.LoadBalancer.Ingress[0].IP, time.Since(start).Round(10*time.Millisecond))
		ip, err := netip.ParseAddr(svc.Status.LoadBalancer.Ingress[0].IP)
		require.NoError(t, err, "status.loadBalancer.ingress[0].ip")
		assert.True(t, ip.Compare(lbPoolFirst) >= 0 && ip.Compare(lbPoolEnd) <= 0, "ingress IP %s is in the pool %v", ip, lbPool)
	})

	t.Run("CA and leaf certificates issued", func(t *testing.T) {
		ns := addonsNamespace(t, ctx, "addons-tls")
		const (
			dnsName = "broker-0.kafka.example.test"
			ipSAN   = "127.0.2.1"
		)
		objects := []string{`
apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata: {name: addons-selfsigned}
spec: {selfSigned: {}}`, `
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: ca, namespace: ` + ns + `}
spec:
  isCA: true
  commonName: brokerport-e2e-ca
  secretName: ca
  privateKey: {algorithm: ECDSA, size: 256}
  issuerRef: {group: cert-manager.io, kind: ClusterIssuer, name: addons-selfsigned}`, `
apiVersion: cert-manager.io/v1
kind: Issuer
metadata: {name: ca, namespace: ` + ns + `}
spec: {ca: {secretName: ca}}`, `
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: broker-0, namespace: ` + ns + `}
spec:
  secretName: broker-0-tls
  dnsNames: [` + dnsName + `]
  ipAddresses: ["` + ipSAN + `"]
  usages: [server auth, digital signature]
  privateKey: {algorithm: ECDSA, size: 256}
  issuerRef: {group: cert-manager.io, kind: Issuer, name: ca}`}
		var created []*unstructured.Unstructured
		for _, doc := range objects {
			u := &unstructured.Unstructured{}
			require.NoError(t, yaml.Unmarshal([]byte(doc), &u.Object))
			require.NoError(t, env.admin.Create(ctx, u), "creating %s %s", u.GetKind(), u.GetName())
			created = append(created, u)
		}
		t.Cleanup(func() { _ = env.admin.Delete(context.Background(), created[0]) })
		start := time.Now()
		for _, u := range created {
			require.NoError(t, waitFor(ctx, 60*time.Second, fmt.Sprintf("%s %s Ready", u.GetKind(), objectName(u)), func() error {
				return readyCondition(ctx, u)
			}))
		}
		t.Logf("ClusterIssuer, CA Certificate, CA Issuer and leaf Certificate Ready in %s", time.Since(start).Round(10*time.Millisecond))

		caSecret, leafSecret := &corev1.Secret{}, &corev1.Secret{}
		require.NoError(t, env.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: "ca"}, caSecret))
		require.NoError(t, env.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: "broker-0-tls"}, leafSecret))
		ca := parseCert(t, caSecret.Data[corev1.TLSCertKey], "Secret "+ns+"/ca tls.crt")
		require.True(t, ca.IsCA, "Secret %s/ca holds a CA certificate", ns)
		leaf := parseCert(t, leafSecret.Data[corev1.TLSCertKey], "Secret "+ns+"/broker-0-tls tls.crt")
		_, err := tls.X509KeyPair(leafSecret.Data[corev1.TLSCertKey], leafSecret.Data[corev1.TLSPrivateKeyKey])
		require.NoError(t, err, "Secret %s/broker-0-tls: tls.key matches tls.crt", ns)
		assert.Equal(t, []string{dnsName}, leaf.DNSNames)
		assert.True(t, slices.ContainsFunc(leaf.IPAddresses, func(ip net.IP) bool { return ip.Equal(net.ParseIP(ipSAN)) }), "IP SANs %v hold %s", leaf.IPAddresses, ipSAN)
		assert.Equal(t, caSecret.Data[corev1.TLSCertKey], leafSecret.Data["ca.crt"], "the leaf's ca.crt is the CA")
		roots := x509.NewCertPool()
		roots.AddCert(ca)
		for _, name := range []string{dnsName, ipSAN} {
			_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			assert.NoError(t, err, "the leaf certificate verifies against the CA for %s", name)
		}
		// And not for a name it was not issued for: the check above can fail.
		_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "broker-1.kafka.example.test"})
		assert.Error(t, err)
	})
}

// addonsNamespace creates a namespace for one scenario and deletes it afterwards.
func addonsNamespace(t *testing.T, ctx context.Context, name string) string {
	t.Helper()
	namespace := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	require.NoError(t, env.admin.Create(ctx, namespace))
	t.Cleanup(func() { _ = env.admin.Delete(context.Background(), namespace) })
	return name
}

// readyCondition fetches a cert-manager object and says why it is not Ready yet.
func readyCondition(ctx context.Context, u *unstructured.Unstructured) error {
	if err := env.admin.Get(ctx, client.ObjectKeyFromObject(u), u); err != nil {
		return err
	}
	conditions, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conditions {
		m, _ := c.(map[string]any)
		if m["type"] == "Ready" {
			if m["status"] == "True" {
				return nil
			}
			return fmt.Errorf("%s %s: Ready %v: %v: %.300v", u.GetKind(), objectName(u), m["status"], m["reason"], m["message"])
		}
	}
	return fmt.Errorf("%s %s: no Ready condition yet", u.GetKind(), objectName(u))
}

// objectName is namespace/name, or the name of a cluster-scoped object.
func objectName(u *unstructured.Unstructured) string {
	if u.GetNamespace() == "" {
		return u.GetName()
	}
	return u.GetNamespace() + "/" + u.GetName()
}

func parseCert(t *testing.T, data []byte, what string) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(data)
	require.NotNil(t, block, "%s is PEM", what)
	require.True(t, strings.HasSuffix(block.Type, "CERTIFICATE"), "%s: PEM type %s", what, block.Type)
	cert, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err, what)
	return cert
}
