package patches

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
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
	assert.Equal(t, []string{"kafka-2.kafka-headless.ns.svc", "kafka-2.kafka-headless.ns.svc.cluster.local"}, cert.Spec.DNSNames, "only names of the cluster domain: the short forms are names a tenant could choose")
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

func TestParseCertificateHosts(t *testing.T) {
	brokersCA := AllowedIssuer{Kind: "ClusterIssuer", Name: "brokers-ca"}
	teamCA := AllowedIssuer{Kind: "Issuer", Namespace: "team-a", Name: "team-ca"}
	tests := map[string]struct {
		value string
		want  CertificateHosts
		err   string
	}{
		"empty: no template host": {value: "", want: CertificateHosts{}},
		"suffixes and CIDRs per issuer": {
			value: "ClusterIssuer/brokers-ca=.kafka.example.com,10.0.0.0/8,2001:db8::/32;Issuer/team-a/team-ca=.Team-A.example.com",
			want: CertificateHosts{
				brokersCA: {Suffixes: []string{".kafka.example.com"}, Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")}},
				teamCA:    {Suffixes: []string{".team-a.example.com"}},
			},
		},
		"spaces and a trailing separator": {
			value: " ClusterIssuer/brokers-ca = .kafka.example.com , 203.0.113.7/32, ; ",
			want:  CertificateHosts{brokersCA: {Suffixes: []string{".kafka.example.com"}, Prefixes: []netip.Prefix{netip.MustParsePrefix("203.0.113.7/32")}}},
		},
		"no =":                          {value: "ClusterIssuer/brokers-ca", err: `"ClusterIssuer/brokers-ca": no "="; want ISSUER=ENTRY`},
		"an Issuer needs its namespace": {value: "Issuer/team-ca=.example.com", err: `"Issuer/team-ca": an Issuer is namespaced: write Issuer/<namespace>/team-ca`},
		"no kind":                       {value: "brokers-ca=.example.com", err: `"brokers-ca" is not an issuer: write ClusterIssuer/<name> or Issuer/<namespace>/<name>`},
		"another kind":                  {value: "VaultIssuer/v=.example.com", err: `"VaultIssuer/v" is not an issuer`},
		"bad issuer name":               {value: "ClusterIssuer/Brokers_CA=.example.com", err: `"Brokers_CA" is not the name of a cert-manager ClusterIssuer`},
		"bad namespace":                 {value: "Issuer/Team/team-ca=.example.com", err: `"Team" is not a namespace name`},
		"twice":                         {value: "ClusterIssuer/brokers-ca=.a.example;ClusterIssuer/brokers-ca=.b.example", err: "ClusterIssuer/brokers-ca is given twice"},
		"nothing allowed":               {value: "ClusterIssuer/brokers-ca=", err: "ClusterIssuer/brokers-ca allows no host"},
		"a name, not a suffix":          {value: "ClusterIssuer/brokers-ca=kafka.example.com", err: `ClusterIssuer/brokers-ca: "kafka.example.com": neither a DNS suffix nor a CIDR: a suffix starts with "." (".kafka.example.com" allows`},
		"a wildcard":                    {value: "ClusterIssuer/brokers-ca=*.kafka.example.com", err: `"*.kafka.example.com": neither a DNS suffix nor a CIDR: a suffix starts with "." (".kafka.example.com"`},
		"an IP address":                 {value: "ClusterIssuer/brokers-ca=10.0.0.1", err: `"10.0.0.1": one IP address is written as a CIDR: 10.0.0.1/32`},
		"a suffix of an address":        {value: "ClusterIssuer/brokers-ca=.10.0.0.1", err: `".10.0.0.1": not a DNS suffix`},
		"the root":                      {value: "ClusterIssuer/brokers-ca=.", err: `".": not a DNS suffix`},
		"a bad label":                   {value: "ClusterIssuer/brokers-ca=.kafka..example.com", err: "not a DNS suffix"},
		"not a CIDR":                    {value: "ClusterIssuer/brokers-ca=10.0.0.0/33", err: `"10.0.0.0/33": not a CIDR`},
		"bits past the prefix":          {value: "ClusterIssuer/brokers-ca=10.1.2.3/8", err: `"10.1.2.3/8": has bits set past its prefix length: 10.0.0.0/8?`},
		"the bad entry is named":        {value: "ClusterIssuer/brokers-ca=.ok.example;Issuer/team-a/team-ca=.ok.example,bad", err: `Issuer/team-a/team-ca: "bad": neither`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ParseCertificateHosts(tc.value)
			if tc.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

// Issue 27: only a host brokerport derived, or one an admin allowed for that issuer.
func TestCertificateHostAllowed(t *testing.T) {
	allow, err := ParseCertificateHosts("ClusterIssuer/brokers-ca=.kafka.example.com,10.0.0.0/8,2001:db8::/32;Issuer/team-a/team-ca=.team-a.example.com")
	require.NoError(t, err)
	brokersCA := IssuerRef{Kind: "ClusterIssuer", Name: "brokers-ca"}
	teamCA := IssuerRef{Kind: "Issuer", Name: "team-ca"}
	tests := map[string]struct {
		namespace string
		issuer    IssuerRef
		host      string
		source    HostSource
		allow     CertificateHosts
		err       string // "" for allowed
	}{
		"a node's address, no list":           {issuer: brokersCA, host: "login.bank.example", source: HostFromNodeAddress},
		"a load balancer's ingress, no list":  {issuer: brokersCA, host: "a1b2.elb.example.com", source: HostFromLoadBalancer},
		"the seen case: a template, no list":  {namespace: "kafka", issuer: brokersCA, host: "login.bank.example", source: HostFromTemplate, err: "brokerport.io/host-template gives host login.bank.example, which brokerport asks ClusterIssuer/brokers-ca to certify only if --tls-allowed-hosts allows it, and no DNS suffix or CIDR of ClusterIssuer/brokers-ca there holds it"},
		"an IP literal, no list":              {issuer: brokersCA, host: "10.1.2.3", source: HostFromTemplate, err: "gives host 10.1.2.3"},
		"under an allowed suffix":             {issuer: brokersCA, host: "b0.kafka.example.com", source: HostFromTemplate, allow: allow},
		"in any case":                         {issuer: brokersCA, host: "B0.Kafka.Example.COM", source: HostFromTemplate, allow: allow},
		"deeper under it":                     {issuer: brokersCA, host: "b0.zone-a.kafka.example.com", source: HostFromTemplate, allow: allow},
		"the suffix itself":                   {issuer: brokersCA, host: "kafka.example.com", source: HostFromTemplate, allow: allow, err: "gives host kafka.example.com"},
		"a name ending like it":               {issuer: brokersCA, host: "evilkafka.example.com", source: HostFromTemplate, allow: allow, err: "evilkafka.example.com"},
		"outside it":                          {issuer: brokersCA, host: "login.bank.example", source: HostFromTemplate, allow: allow, err: "login.bank.example"},
		"in an allowed CIDR":                  {issuer: brokersCA, host: "10.200.0.1", source: HostFromTemplate, allow: allow},
		"an IPv4-mapped address in it":        {issuer: brokersCA, host: "::ffff:10.200.0.1", source: HostFromTemplate, allow: allow},
		"IPv6 in an allowed CIDR":             {issuer: brokersCA, host: "2001:db8::7", source: HostFromTemplate, allow: allow},
		"outside the CIDRs":                   {issuer: brokersCA, host: "192.0.2.1", source: HostFromTemplate, allow: allow, err: "192.0.2.1"},
		"an address is no DNS name":           {issuer: brokersCA, host: "10.kafka.example.com", source: HostFromTemplate, allow: allow},
		"allowed for another issuer only":     {namespace: "team-a", issuer: teamCA, host: "b0.kafka.example.com", source: HostFromTemplate, allow: allow, err: "no DNS suffix or CIDR of Issuer/team-a/team-ca there"},
		"the Issuer of its namespace":         {namespace: "team-a", issuer: teamCA, host: "b0.team-a.example.com", source: HostFromTemplate, allow: allow},
		"an Issuer of that name elsewhere":    {namespace: "team-b", issuer: teamCA, host: "b0.team-a.example.com", source: HostFromTemplate, allow: allow, err: "Issuer/team-b/team-ca"},
		"a ClusterIssuer of an Issuer's name": {issuer: IssuerRef{Kind: "ClusterIssuer", Name: "team-ca"}, host: "b0.team-a.example.com", source: HostFromTemplate, allow: allow, err: "ClusterIssuer/team-ca"},
		"unknown":                             {issuer: brokersCA, host: "b0.kafka.example.com", source: HostSourceUnknown, allow: allow, err: "not known yet"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := CertificateHostAllowed(tc.namespace, tc.issuer, tc.host, tc.source, tc.allow)
			if tc.err == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.err)
			if tc.source == HostFromTemplate {
				assert.Contains(t, err.Error(), FlagTLSAllowedHosts, "names the flag that allows it")
			}
		})
	}
}

// Where a host comes from is decided as ObserveBroker decides the host.
func TestAdvertisedHostSource(t *testing.T) {
	zoned := node("n1", "zone-a", addr(corev1.NodeExternalIP, "203.0.113.1"))
	zoneLess := node("n2", "", addr(corev1.NodeExternalIP, "203.0.113.2"))
	parse := func(annotations map[string]string) Config {
		cfg, errs := ParseConfig(annotations, nil, DefaultOptions())
		require.Empty(t, errs)
		return cfg
	}
	withTemplate := parse(map[string]string{AnnotationHostTemplate: "{{.Node}}.{{.Zone}}.kafka.example.com"})
	tests := map[string]struct {
		cfg  Config
		node *corev1.Node
		host string
		want HostSource
	}{
		"no template":                       {cfg: parse(nil), node: zoned, host: "203.0.113.1", want: HostFromNodeAddress},
		"the template's host":               {cfg: withTemplate, node: zoned, host: "n1.zone-a.kafka.example.com", want: HostFromTemplate},
		"the template's fallback":           {cfg: withTemplate, node: zoneLess, host: "203.0.113.2", want: HostFromNodeAddress},
		"the node changed as it was read":   {cfg: withTemplate, node: zoned, host: "n1.zone-b.kafka.example.com", want: HostSourceUnknown},
		"no node":                           {cfg: withTemplate, host: "n1.zone-a.kafka.example.com", want: HostSourceUnknown},
		"a load balancer, template or none": {cfg: parse(map[string]string{AnnotationStrategy: "loadbalancer"}), host: "a1b2.elb.example.com", want: HostFromLoadBalancer},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, tc.want, AdvertisedHostSource(tc.cfg, tc.node, tc.host))
		})
	}
}

// The in-cluster names are derived: a Certificate for no external host names only them.
func TestBrokerCertificateInClusterNamesOnly(t *testing.T) {
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "kafka", Namespace: "ns"}, Spec: appsv1.StatefulSetSpec{ServiceName: "kafka-headless"}}
	cfg, errs := ParseConfig(map[string]string{AnnotationTLSIssuer: "brokers"}, nil, DefaultOptions())
	require.Empty(t, errs)
	cert := BrokerCertificate(sts, cfg, 1, "")
	assert.Equal(t, []string{"kafka-1.kafka-headless.ns.svc", "kafka-1.kafka-headless.ns.svc.cluster.local"}, cert.Spec.DNSNames)
	assert.Empty(t, cert.Spec.IPAddresses)
}
