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
	assert.Equal(t, []string{"redpanda-1.redpanda", "redpanda-1.redpanda.kafka", "redpanda-1.redpanda.kafka.svc", "redpanda-1.redpanda.kafka.svc.cluster.local"}, cert.Spec.DNSNames)
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
