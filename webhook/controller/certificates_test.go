package controller

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/brokerport/brokerport/patches"
)

// newTLSFixture is the fixture's StatefulSet with brokerport.io/tls-issuer, on a cluster with
// cert-manager.
func newTLSFixture(t *testing.T) *fixture {
	f := newFixture(t)
	f.sts.Annotations[patches.AnnotationTLSIssuer] = "ClusterIssuer/brokers-ca"
	f.sts.Spec.ServiceName = "redpanda"
	require.NoError(t, f.client.Update(context.Background(), f.sts))
	for i := range 3 { // admitted from the template, which carries the annotation
		pod := f.pod(i, "")
		require.NoError(t, f.client.Get(context.Background(), client.ObjectKeyFromObject(pod), pod))
		pod.Annotations[patches.AnnotationTLSIssuer] = f.sts.Annotations[patches.AnnotationTLSIssuer]
		require.NoError(t, f.client.Update(context.Background(), pod))
	}
	f.r.CertManager = true
	return f
}

func (f *fixture) certificate(i int) *cmapi.Certificate {
	f.t.Helper()
	cert := &cmapi.Certificate{}
	require.NoError(f.t, f.client.Get(context.Background(), client.ObjectKey{Namespace: "kafka", Name: fmt.Sprintf("redpanda-%d-external-tls", i)}, cert))
	return cert
}

// issue is cert-manager issuing broker i's Certificate as it now asks.
func (f *fixture) issue(i int) {
	f.t.Helper()
	cert := f.certificate(i)
	cert.Status.Conditions = []cmapi.CertificateCondition{{Type: cmapi.CertificateConditionReady, Status: cmmeta.ConditionTrue, ObservedGeneration: cert.Generation}}
	// No status subresource in the fake for a custom resource: an update writes the status.
	require.NoError(f.t, f.client.Update(context.Background(), cert))
}

func TestCertificatesNameEachBrokersHost(t *testing.T) {
	f := newTLSFixture(t)
	f.reconcile()
	cert := f.certificate(1)
	assert.Equal(t, []string{"127.0.1.2"}, cert.Spec.IPAddresses)
	assert.Equal(t, []string{"redpanda-1.redpanda.kafka.svc", "redpanda-1.redpanda.kafka.svc.cluster.local"}, cert.Spec.DNSNames)
	assert.Equal(t, "redpanda-1-external-tls", cert.Spec.SecretName)
	assert.Equal(t, cmmeta.IssuerReference{Group: "cert-manager.io", Kind: "ClusterIssuer", Name: "brokers-ca"}, cert.Spec.IssuerRef)
	assert.Equal(t, "redpanda", cert.OwnerReferences[0].Name)
	assert.Equal(t, "redpanda-0 not exposed: waiting for cert-manager to issue Certificate redpanda-0-external-tls naming 127.0.1.1\n"+
		"redpanda-1 not exposed: waiting for cert-manager to issue Certificate redpanda-1-external-tls naming 127.0.1.2\n"+
		"redpanda-2 not exposed: waiting for cert-manager to issue Certificate redpanda-2-external-tls naming 127.0.1.3", f.configMap()["status"])
	assert.Empty(t, f.configMap()["bootstrap.servers"], "a broker in its gate is not published")
	events := strings.Join(drainEvents(f.events), "\n")
	assert.Contains(t, events, "Normal CertificateRequested broker redpanda-0: Certificate redpanda-0-external-tls asks ClusterIssuer/brokers-ca for a certificate naming 127.0.1.1")
	assert.NotContains(t, events, "Warning", "waiting for an issuer is a step, not a fault")

	for i := range 3 {
		f.issue(i)
	}
	f.reconcile()
	assert.Equal(t, "redpanda-0 exposed\nredpanda-1 exposed\nredpanda-2 exposed", f.configMap()["status"])
	assert.Equal(t, "127.0.1.1:30000,127.0.1.2:30002,127.0.1.3:30004", f.configMap()["bootstrap.servers"])
	f.reconcile()
	assert.Empty(t, f.writes, "a second reconcile writes nothing")
}

// A broker whose address changes gets its certificate reissued naming the new one (and, running,
// is told to restart); the others keep theirs.
func TestCertificateReissuedWhenTheHostChanges(t *testing.T) {
	f := newTLSFixture(t)
	ctx := context.Background()
	f.reconcile()
	for i := range 3 {
		f.issue(i)
	}
	f.reconcile()
	drainEvents(f.events)

	moved := &corev1.Node{}
	require.NoError(t, f.client.Get(ctx, client.ObjectKey{Name: "node-1"}, moved))
	moved.Status.Addresses[0].Address = "127.0.9.2"
	require.NoError(t, f.client.Status().Update(ctx, moved))
	f.reconcile()
	assert.Equal(t, []string{"127.0.9.2"}, f.certificate(1).Spec.IPAddresses)
	assert.Equal(t, []string{"127.0.1.1"}, f.certificate(0).Spec.IPAddresses)
	events := strings.Join(drainEvents(f.events), "\n")
	assert.Contains(t, events, "Normal CertificateReissued broker redpanda-1: Certificate redpanda-1-external-tls now names 127.0.9.2")
	assert.Contains(t, events, "Warning RestartRequired")
	f.reconcile()
	assert.Contains(t, f.configMap()["status"], "redpanda-1 not exposed: waiting for cert-manager to issue Certificate redpanda-1-external-tls naming 127.0.9.2")
	assert.Contains(t, f.configMap()["status"], "redpanda-0 exposed")
}

// Removing the issuer removes the Certificates (their Secrets stay, as cert-manager leaves them).
func TestCertificatesRemovedWithTheIssuer(t *testing.T) {
	f := newTLSFixture(t)
	f.reconcile()
	delete(f.sts.Annotations, patches.AnnotationTLSIssuer)
	require.NoError(t, f.client.Update(context.Background(), f.sts))
	f.reconcile()
	var list cmapi.CertificateList
	require.NoError(t, f.client.List(context.Background(), &list))
	assert.Empty(t, list.Items)
	assert.Equal(t, "redpanda-0 exposed\nredpanda-1 exposed\nredpanda-2 exposed", f.configMap()["status"])
}

// A tls-issuer on a cluster without cert-manager: every broker is said not exposed, with the fix.
func TestCertificatesWithoutCertManager(t *testing.T) {
	f := newTLSFixture(t)
	f.r.CertManager = false
	f.reconcile()
	assert.Contains(t, strings.Join(drainEvents(f.events), "\n"), "Warning BrokerNotExposed broker redpanda-0 is not exposed: brokerport.io/tls-issuer is set, but cert-manager is not installed")
}

// An issuer that never answers: waiting at first, then said, naming the Certificate to look at.
func TestCertificateLateIsSaid(t *testing.T) {
	f := newTLSFixture(t)
	now := time.Now()
	f.r.Now = func() time.Time { return now }
	f.reconcile()
	f.reconcile()
	assert.NotContains(t, strings.Join(drainEvents(f.events), "\n"), "Warning")
	now = now.Add(certificatePatience + time.Second)
	f.reconcile()
	assert.Contains(t, strings.Join(drainEvents(f.events), "\n"), "Warning BrokerNotExposed broker redpanda-0 is not exposed: waiting for cert-manager to issue Certificate redpanda-0-external-tls naming 127.0.1.1: is cert-manager running, and is the issuer ready? (kubectl describe certificate redpanda-0-external-tls)")
}

// A labeled Certificate of a name brokerport does not give is left alone (a short one made the
// reconcile panic).
func TestCertificateOfAnotherNameLeftAlone(t *testing.T) {
	f := newTLSFixture(t)
	odd := patches.BrokerCertificate(f.sts, patches.Config{TLSIssuer: &patches.IssuerRef{Kind: "Issuer", Name: "x"}}, 0, "")
	odd.Name = "x"
	require.NoError(t, f.client.Create(context.Background(), odd))
	f.reconcile()
	require.NoError(t, f.client.Get(context.Background(), client.ObjectKey{Namespace: "kafka", Name: "x"}, &cmapi.Certificate{}))
}

// certificateNames lists the Certificates in the fixture's namespace.
func (f *fixture) certificateNames() []string {
	f.t.Helper()
	var list cmapi.CertificateList
	require.NoError(f.t, f.client.List(context.Background(), &list, client.InNamespace("kafka")))
	var names []string
	for _, c := range list.Items {
		names = append(names, c.Name)
	}
	return names
}

// withHostTemplate sets brokerport.io/host-template on the fixture's StatefulSet.
func (f *fixture) withHostTemplate(template string) {
	f.t.Helper()
	f.sts.Annotations[patches.AnnotationHostTemplate] = template
	require.NoError(f.t, f.client.Update(context.Background(), f.sts))
}

// Issue 27: a host template is the tenant's text. A ClusterIssuer must not be asked, by
// brokerport's identity, for a name no node or load balancer has and no admin allowed: no
// Certificate, and the broker is said not exposed, naming the StatefulSet, the host, the issuer
// and the flag that would allow it.
func TestCertificateNotMadeForATemplateHostNoAdminAllowed(t *testing.T) {
	f := newTLSFixture(t)
	f.withHostTemplate("login.bank.example")
	f.reconcile()
	assert.Empty(t, f.certificateNames(), "no Certificate asks for login.bank.example")
	status := f.configMap()["status"]
	for i := range 3 {
		assert.Contains(t, status, fmt.Sprintf("redpanda-%d not exposed: StatefulSet kafka/redpanda: %s gives host login.bank.example, which brokerport asks ClusterIssuer/brokers-ca to certify only if --tls-allowed-hosts allows it", i, patches.AnnotationHostTemplate))
	}
	assert.Empty(t, f.configMap()["bootstrap.servers"])
	events := strings.Join(drainEvents(f.events), "\n")
	assert.Contains(t, events, "Warning BrokerNotExposed broker redpanda-0 is not exposed: StatefulSet kafka/redpanda: "+patches.AnnotationHostTemplate+" gives host login.bank.example, which brokerport asks ClusterIssuer/brokers-ca to certify only if --tls-allowed-hosts allows it")
	assert.NotContains(t, events, "CertificateRequested")

	f.reconcile()
	assert.Empty(t, f.certificateNames())
	assert.NotContains(t, strings.Join(drainEvents(f.events), "\n"), "BrokerNotExposed", "said once, not at every reconcile")
}

// The same for an IP literal, which would have been an IP SAN.
func TestCertificateNotMadeForATemplateIPNoAdminAllowed(t *testing.T) {
	f := newTLSFixture(t)
	f.withHostTemplate("10.20.30.40")
	f.reconcile()
	assert.Empty(t, f.certificateNames(), "no Certificate asks for 10.20.30.40")
	assert.Contains(t, f.configMap()["status"], "redpanda-1 not exposed: StatefulSet kafka/redpanda: "+patches.AnnotationHostTemplate+" gives host 10.20.30.40, which brokerport asks ClusterIssuer/brokers-ca to certify only if --tls-allowed-hosts allows it")
}

// A Certificate an earlier brokerport made for a template's host no admin allowed is brought back
// to the broker's in-cluster names: cert-manager would otherwise renew the name for ever, and the
// reissued Secret no longer lets the broker's gate pass.
func TestCertificateForAHostNoLongerAllowedDropsIt(t *testing.T) {
	f := newTLSFixture(t)
	f.withHostTemplate("login.bank.example")
	cfg, errs := patches.ParseConfig(f.sts.Annotations, nil, f.r.Options)
	require.Empty(t, errs)
	require.NoError(t, f.client.Create(context.Background(), patches.BrokerCertificate(f.sts, cfg, 0, "login.bank.example")))
	f.reconcile()
	cert := f.certificate(0)
	assert.Equal(t, []string{"redpanda-0.redpanda.kafka.svc", "redpanda-0.redpanda.kafka.svc.cluster.local"}, cert.Spec.DNSNames)
	assert.Empty(t, cert.Spec.IPAddresses)
	assert.Equal(t, []string{"redpanda-0-external-tls"}, f.certificateNames(), "none made for the others")
	assert.Contains(t, strings.Join(drainEvents(f.events), "\n"), "Warning CertificateHostDropped broker redpanda-0: Certificate redpanda-0-external-tls no longer names login.bank.example")
	f.reconcile()
	assert.Empty(t, f.writes, "a second reconcile writes nothing")
}

// A Certificate's issuer is never changed in place (the policy brokerport-certificate-writes
// refuses it): the Certificate is replaced.
func TestCertificateOfAnotherIssuerReplaced(t *testing.T) {
	f := newTLSFixture(t)
	f.reconcile()
	f.sts.Annotations[patches.AnnotationTLSIssuer] = "Issuer/team-ca"
	require.NoError(t, f.client.Update(context.Background(), f.sts))
	f.reconcile()
	assert.NotContains(t, f.writes, "update *v1.Certificate redpanda-0-external-tls")
	assert.Contains(t, f.writes, "delete *v1.Certificate redpanda-0-external-tls")
	f.reconcile()
	assert.Equal(t, cmmeta.IssuerReference{Group: "cert-manager.io", Kind: "Issuer", Name: "team-ca"}, f.certificate(0).Spec.IssuerRef)
	assert.Equal(t, []string{"127.0.1.1"}, f.certificate(0).Spec.IPAddresses)
}

// allow sets the fixture's --tls-allowed-hosts.
func (f *fixture) allow(flag string) {
	f.t.Helper()
	allow, err := patches.ParseCertificateHosts(flag)
	require.NoError(f.t, err)
	f.r.CertificateHosts = allow
}

// A host template's host the admin allowed for the issuer gets its Certificate; until the admin
// allows it, none (an allow-list for another suffix, or for another issuer, is no allowance).
func TestCertificateForATemplateHostTheAdminAllowed(t *testing.T) {
	f := newTLSFixture(t)
	f.withHostTemplate("{{.Node}}.kafka.example.com")
	f.allow("ClusterIssuer/brokers-ca=.other.example.com;Issuer/kafka/brokers-ca=.kafka.example.com")
	f.reconcile()
	assert.Empty(t, f.certificateNames())
	assert.Contains(t, f.configMap()["status"], "redpanda-0 not exposed: StatefulSet kafka/redpanda: "+patches.AnnotationHostTemplate+" gives host node-0.kafka.example.com, which brokerport asks ClusterIssuer/brokers-ca to certify only if --tls-allowed-hosts allows it")
	drainEvents(f.events)

	f.allow("ClusterIssuer/brokers-ca=.kafka.example.com,10.0.0.0/8")
	f.reconcile()
	cert := f.certificate(0)
	assert.Equal(t, []string{"node-0.kafka.example.com", "redpanda-0.redpanda.kafka.svc", "redpanda-0.redpanda.kafka.svc.cluster.local"}, cert.Spec.DNSNames)
	assert.Contains(t, strings.Join(drainEvents(f.events), "\n"), "Normal CertificateRequested broker redpanda-1: Certificate redpanda-1-external-tls asks ClusterIssuer/brokers-ca for a certificate naming node-1.kafka.example.com")
	for i := range 3 {
		f.issue(i)
	}
	f.reconcile()
	assert.Equal(t, "redpanda-0 exposed\nredpanda-1 exposed\nredpanda-2 exposed", f.configMap()["status"])
	assert.Equal(t, "node-0.kafka.example.com:30000,node-1.kafka.example.com:30002,node-2.kafka.example.com:30004", f.configMap()["bootstrap.servers"])
}

// A template that cannot give a node a host falls back to the node's address: derived, certified
// with no allowance.
func TestCertificateForATemplatesFallbackNeedsNoAllowance(t *testing.T) {
	f := newTLSFixture(t)
	f.withHostTemplate("{{.Node}}.{{.Zone}}.kafka.example.com") // the nodes have no zone label
	f.reconcile()
	assert.Equal(t, []string{"127.0.1.2"}, f.certificate(1).Spec.IPAddresses)
	assert.NotContains(t, f.configMap()["status"], patches.FlagTLSAllowedHosts)
}

// The loadbalancer strategy's host is the ingress of brokerport's own Service: derived, certified
// with no allowance.
func TestCertificateForALoadBalancerNeedsNoAllowance(t *testing.T) {
	f, _ := newLoadBalancerFixture(t)
	f.sts.Annotations[patches.AnnotationTLSIssuer] = "ClusterIssuer/brokers-ca"
	require.NoError(t, f.client.Update(context.Background(), f.sts))
	f.r.CertManager = true
	f.reconcile()
	f.giveIngress(0, corev1.LoadBalancerIngress{Hostname: "b0.elb.example.com"})
	f.giveIngress(1, corev1.LoadBalancerIngress{IP: "203.0.113.11"})
	f.reconcile()
	assert.Equal(t, []string{"b0.elb.example.com"}, f.certificate(0).Spec.DNSNames)
	assert.Equal(t, []string{"203.0.113.11"}, f.certificate(1).Spec.IPAddresses)
	assert.NotContains(t, f.configMap()["status"], patches.FlagTLSAllowedHosts)
}
