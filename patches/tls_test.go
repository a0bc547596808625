package patches

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

func TestParseConfigTLSIssuer(t *testing.T) {
	for _, tc := range []struct {
		value, protocol string
		want            *IssuerRef
		err             string
	}{
		{value: "brokers", want: &IssuerRef{Kind: "Issuer", Name: "brokers"}},
		{value: "Issuer/brokers", want: &IssuerRef{Kind: "Issuer", Name: "brokers"}},
		{value: "ClusterIssuer/letsencrypt-prod", want: &IssuerRef{Kind: "ClusterIssuer", Name: "letsencrypt-prod"}},
		{value: "ClusterIssuer/brokers", protocol: "SASL_SSL", want: &IssuerRef{Kind: "ClusterIssuer", Name: "brokers"}},
		{value: "Vault/brokers", err: `kind "Vault": accepted`},
		{value: "Issuer/Not_A_Name", err: `"Not_A_Name" is not the name of a cert-manager Issuer`},
		{value: "", err: "is not the name of a cert-manager Issuer"},
		{value: "brokers", protocol: "PLAINTEXT", err: "the external listener serves TLS: SSL (the default then) or SASL_SSL"},
	} {
		t.Run(tc.value+tc.protocol, func(t *testing.T) {
			annotations := map[string]string{AnnotationTLSIssuer: tc.value}
			if tc.protocol != "" {
				annotations[AnnotationSecurityProtocol] = tc.protocol
			}
			cfg, errs := ParseConfig(annotations, field.NewPath("metadata", "annotations"), DefaultOptions())
			if tc.err != "" {
				require.Len(t, errs, 1)
				assert.Contains(t, errs.ToAggregate().Error(), tc.err)
				return
			}
			require.Empty(t, errs)
			assert.Equal(t, tc.want, cfg.TLSIssuer)
			want := "SSL"
			if tc.protocol != "" {
				want = tc.protocol
			}
			assert.Equal(t, want, cfg.SecurityProtocol)
		})
	}
}

// A load balancer's hostname is a DNS SAN, first; no governing Service, no in-cluster names.
func TestBrokerCertificateForAHostname(t *testing.T) {
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "kafka", Namespace: "ns"}}
	cfg, errs := ParseConfig(map[string]string{AnnotationTLSIssuer: "brokers", AnnotationStrategy: "loadbalancer"}, nil, DefaultOptions())
	require.Empty(t, errs)
	cert := BrokerCertificate(sts, cfg, 2, "b2.elb.example.com")
	assert.Equal(t, []string{"b2.elb.example.com"}, cert.Spec.DNSNames)
	assert.Empty(t, cert.Spec.IPAddresses)
	named, issued := CertificateNames(cert, "b2.elb.example.com")
	assert.True(t, named)
	assert.False(t, issued, "no Ready condition yet")
	named, _ = CertificateNames(cert, "203.0.113.2")
	assert.False(t, named)

	sts.Spec.ServiceName = "kafka-headless"
	cert = BrokerCertificate(sts, cfg, 2, "2001:db8::2")
	assert.Equal(t, []string{"2001:db8::2"}, cert.Spec.IPAddresses)
	assert.Equal(t, "kafka-2.kafka-headless.ns.svc", cert.Spec.DNSNames[2])
	named, _ = CertificateNames(cert, "2001:0db8::2")
	assert.True(t, named, "IP addresses compared as addresses")
}

// The images turn "_" into "." and "__" into "_" in variable names: a listener named with "_"
// keeps it in listener.name.<listener>.
func TestKafkaTLSEnvListenerWithUnderscore(t *testing.T) {
	cfg, errs := ParseConfig(map[string]string{AnnotationTLSIssuer: "brokers", AnnotationFlavor: "kafka", AnnotationListenerName: "EXTERNAL_TLS"}, nil, DefaultOptions())
	require.Empty(t, errs)
	env := kafkaTLSEnv(cfg)
	assert.Equal(t, "KAFKA_LISTENER_NAME_EXTERNAL__TLS_SSL_KEYSTORE_TYPE", env[0].Name)

	_, errs = ParseConfig(map[string]string{AnnotationTLSIssuer: "brokers", AnnotationFlavor: "bitnami"}, nil, DefaultOptions())
	require.Len(t, errs, 1)
	assert.Contains(t, errs[0].Error(), `flavor "bitnami" cannot serve brokerport's certificate yet`)
}
