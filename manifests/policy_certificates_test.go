package manifests

import (
	"testing"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/admission"
	"k8s.io/utils/ptr"

	"github.com/brokerport/brokerport/patches"
)

// brokerCertificate is broker ordinal's Certificate exactly as brokerport's controller makes it
// (patches.BrokerCertificate), for StatefulSet kafka of namespace team-a with governing Service
// kafka-headless ("" for none), asked of ClusterIssuer brokers-ca.
func brokerCertificate(t *testing.T, service string, ordinal int, host string) *cmapi.Certificate {
	t.Helper()
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "kafka", Namespace: "team-a", UID: "u"}, Spec: appsv1.StatefulSetSpec{ServiceName: service, Replicas: ptr.To[int32](3)}}
	cfg, errs := patches.ParseConfig(map[string]string{patches.AnnotationTLSIssuer: "ClusterIssuer/brokers-ca"}, nil, patches.DefaultOptions())
	require.Empty(t, errs)
	return patches.BrokerCertificate(sts, cfg, ordinal, host)
}

func TestCertificateWritesPolicy(t *testing.T) {
	all := policies(t)
	p := all["brokerport-certificate-writes"]
	require.NotNil(t, p)
	for _, op := range []admission.Operation{admission.Create, admission.Update} {
		assert.True(t, p.matches(resources["Certificate"], op), "matches %s of certificates.cert-manager.io", op)
	}
	assert.False(t, p.matches(resources["Certificate"], admission.Delete), "deleting its Certificates is brokerport-writes' to bound")
	for _, kind := range []string{"Service", "ConfigMap", "Secret", "Pod", "StatefulSet"} {
		assert.False(t, p.matches(resources[kind], admission.Create), "only Certificates: %s", kind)
	}

	cert := func(host string) *cmapi.Certificate { return brokerCertificate(t, "kafka-headless", 0, host) }
	with := func(c *cmapi.Certificate, change func(*cmapi.Certificate)) *cmapi.Certificate {
		c = c.DeepCopy()
		change(c)
		return c
	}
	today := cert("203.0.113.1")
	tests := map[string]struct {
		req  req
		deny string // a part of the message; "" for allowed
	}{
		// What brokerport makes today passes.
		"a node's IP address":          {req: req{op: admission.Create, obj: today}},
		"a DNS name":                   {req: req{op: admission.Create, obj: cert("b0.kafka.example.com")}},
		"an IPv6 address":              {req: req{op: admission.Create, obj: cert("2001:db8::1")}},
		"a node's Hostname, one label": {req: req{op: admission.Create, obj: cert("node-0")}},
		"in-cluster names only":        {req: req{op: admission.Create, obj: cert("")}},
		"no governing Service":         {req: req{op: admission.Create, obj: brokerCertificate(t, "", 7, "a1b2.elb.example.com")}},
		"a broker of two digits":       {req: req{op: admission.Create, obj: brokerCertificate(t, "kafka-headless", 12, "203.0.113.12")}},
		"reissued for a new host":      {req: req{op: admission.Update, obj: cert("203.0.113.9"), old: today}},
		"brought to in-cluster names":  {req: req{op: admission.Update, obj: cert(""), old: cert("login.bank.example")}},
		"others are not bound":         {req: req{op: admission.Create, user: "alice", obj: with(today, func(c *cmapi.Certificate) { c.Spec.IsCA, c.Spec.CommonName = true, "ca" })}},

		// Every other shape is refused.
		"a commonName":     {req: req{op: admission.Create, obj: with(today, func(c *cmapi.Certificate) { c.Spec.CommonName = "login.bank.example" })}, deny: "brokerport's Certificates name hosts only"},
		"a subject":        {req: req{op: admission.Create, obj: with(today, func(c *cmapi.Certificate) { c.Spec.Subject = &cmapi.X509Subject{Organizations: []string{"Bank"}} })}, deny: "no commonName, subject"},
		"a literalSubject": {req: req{op: admission.Create, obj: with(today, func(c *cmapi.Certificate) { c.Spec.LiteralSubject = "CN=login.bank.example" })}, deny: "name hosts only"},
		"uris":             {req: req{op: admission.Create, obj: with(today, func(c *cmapi.Certificate) { c.Spec.URIs = []string{"spiffe://cluster.local/ns/kube-system/sa/admin"} })}, deny: "name hosts only"},
		"emailAddresses":   {req: req{op: admission.Create, obj: with(today, func(c *cmapi.Certificate) { c.Spec.EmailAddresses = []string{"ceo@bank.example"} })}, deny: "name hosts only"},
		"otherNames": {req: req{op: admission.Create, obj: with(today, func(c *cmapi.Certificate) {
			c.Spec.OtherNames = []cmapi.OtherName{{OID: "1.3.6.1.4.1.311.20.2.3", UTF8Value: "admin@bank.example"}}
		})}, deny: "name hosts only"},
		"a CA":             {req: req{op: admission.Create, obj: with(today, func(c *cmapi.Certificate) { c.Spec.IsCA = true })}, deny: "brokerport's Certificates are not CAs"},
		"name constraints": {req: req{op: admission.Create, obj: with(today, func(c *cmapi.Certificate) { c.Spec.NameConstraints = &cmapi.NameConstraints{Critical: true} })}, deny: "not CAs"},
		"client auth":      {req: req{op: admission.Create, obj: with(today, func(c *cmapi.Certificate) { c.Spec.Usages = append(c.Spec.Usages, cmapi.UsageClientAuth) })}, deny: "spec.usages among server auth, digital signature, key encipherment"},
		"cert sign":        {req: req{op: admission.Create, obj: with(today, func(c *cmapi.Certificate) { c.Spec.Usages = []cmapi.KeyUsage{cmapi.UsageCertSign} })}, deny: "spec.usages among"},
		"another Secret":   {req: req{op: admission.Create, obj: with(today, func(c *cmapi.Certificate) { c.Spec.SecretName = "brokers-ca" })}, deny: "spec.secretName must be the Certificate's own name, kafka-0-external-tls"},
		"an external issuer": {req: req{op: admission.Create, obj: with(today, func(c *cmapi.Certificate) {
			c.Spec.IssuerRef = cmmeta.IssuerReference{Group: "awspca.cert-manager.io", Kind: "AWSPCAClusterIssuer", Name: "root"}
		})}, deny: "brokerport asks only a cert-manager.io Issuer or ClusterIssuer"},
		"no issuer group": {req: req{op: admission.Create, obj: with(today, func(c *cmapi.Certificate) { c.Spec.IssuerRef.Group = "" })}, deny: "cert-manager.io Issuer or ClusterIssuer"},
		"issuer changed": {req: req{op: admission.Update, obj: with(today, func(c *cmapi.Certificate) { c.Spec.IssuerRef.Name = "letsencrypt-prod" }), old: today},
			deny: "brokerport never changes a Certificate's spec.issuerRef; it replaces the Certificate"},
		"issuer kind changed": {req: req{op: admission.Update, obj: with(today, func(c *cmapi.Certificate) { c.Spec.IssuerRef.Kind = "Issuer" }), old: today}, deny: "never changes a Certificate's spec.issuerRef"},
		"two external names": {req: req{op: admission.Create, obj: with(brokerCertificate(t, "", 0, "b0.kafka.example.com"), func(c *cmapi.Certificate) {
			c.Spec.DNSNames = append(c.Spec.DNSNames, "login.bank.example")
		})}, deny: "brokerport's Certificates name a broker's in-cluster names in namespace team-a and at most one other host; here 2 hosts are not in-cluster names"},
		"a name and an address": {req: req{op: admission.Create, obj: with(today, func(c *cmapi.Certificate) { c.Spec.DNSNames = append(c.Spec.DNSNames, "login.bank.example") })}, deny: "here 2 hosts"},
		"two addresses":         {req: req{op: admission.Create, obj: with(today, func(c *cmapi.Certificate) { c.Spec.IPAddresses = append(c.Spec.IPAddresses, "10.0.0.1") })}, deny: "brokerport's Certificates have at most 3 dnsNames (a broker's 2 in-cluster names and its host) and 1 ipAddress"},
		"four names": {req: req{op: admission.Create, obj: with(cert(""), func(c *cmapi.Certificate) {
			c.Spec.DNSNames = append(c.Spec.DNSNames, "kafka-1.kafka-headless.team-a.svc", "kafka-2.kafka-headless.team-a.svc")
		})}, deny: "at most 3 dnsNames"},
		"a wildcard": {req: req{op: admission.Create, obj: cert("*.bank.example")}, deny: "dnsName *.bank.example is a wildcard or a cluster name not of a broker of namespace team-a"},
		"another namespace's Service": {req: req{op: admission.Create, obj: with(cert(""), func(c *cmapi.Certificate) { c.Spec.DNSNames[1] = "kafka-0.kafka-headless.team-b.svc" })},
			deny: "dnsName kafka-0.kafka-headless.team-b.svc is a wildcard or a cluster name"},
		"the webhook's Service": {req: req{op: admission.Create, obj: cert("brokerport-webhook.brokerport-system.svc")}, deny: "dnsName brokerport-webhook.brokerport-system.svc is a wildcard or a cluster name"},
		"a cluster.local name":  {req: req{op: admission.Create, obj: cert("kubernetes.default.svc.cluster.local")}, deny: "dnsName kubernetes.default.svc.cluster.local"},
		"a name of no pod": {req: req{op: admission.Create, obj: with(cert("203.0.113.1"), func(c *cmapi.Certificate) { c.Spec.DNSNames[1] = "api.kafka-headless.team-a.svc" })},
			deny: "here 2 hosts are not in-cluster names"},
		"a short form, a public name a tenant could choose": {req: req{op: admission.Create, obj: with(cert("203.0.113.1"), func(c *cmapi.Certificate) {
			c.Spec.DNSNames = append(c.Spec.DNSNames, "paypal-0.com")
		})}, deny: "here 2 hosts"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if tc.req.user == "" {
				tc.req.user = brokerportUser
			}
			msg := p.admit(t, tc.req)
			if tc.deny == "" {
				assert.Empty(t, msg)
				if tc.req.user == brokerportUser {
					assert.Empty(t, all["brokerport-writes"].admit(t, tc.req), "and brokerport-writes lets it through")
				}
				return
			}
			assert.Contains(t, msg, tc.deny)
		})
	}
}
