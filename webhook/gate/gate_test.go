package gate

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// signalWriter records what is written and closes said at the first write.
type signalWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	said chan struct{}
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.buf.Len() == 0 {
		close(w.said)
	}
	return w.buf.Write(p)
}

func TestWaitReturnsOnceTheHostIsWritten(t *testing.T) {
	file := filepath.Join(t.TempDir(), "host")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	out := &signalWriter{said: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- Wait(context.Background(), file, "", out, time.Millisecond, 5*time.Millisecond) }()

	<-out.said // it says why it waits before the host is there
	select {
	case err := <-done:
		t.Fatalf("returned before the host was set: %v", err)
	default:
	}
	require.NoError(t, os.WriteFile(file, []byte("203.0.113.7"), 0o644))
	require.NoError(t, <-done)
	assert.Contains(t, out.buf.String(), "the annotation brokerport.io/host is not set yet")
	assert.Contains(t, out.buf.String(), "this broker's host is 203.0.113.7\n")
}

func TestWaitGivesUpWithTheContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	var out bytes.Buffer
	err := Wait(ctx, filepath.Join(t.TempDir(), "missing"), "", &out, time.Millisecond, 0) // says why at once
	require.Error(t, err)
	assert.Contains(t, out.String(), "cannot read")
}

// writeCert writes a self-signed certificate naming names (DNS names or IP addresses) as dir/tls.crt.
func writeCert(t *testing.T, dir string, names ...string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tls.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644))
}

// A broker with a certificate waits until the certificate names the host it advertises: none yet,
// then one of its previous address (it moved), then the right one.
func TestWaitForACertificateNamingTheHost(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "host")
	tlsDir := filepath.Join(dir, "tls")
	require.NoError(t, os.Mkdir(tlsDir, 0o755))
	require.NoError(t, os.WriteFile(file, []byte("203.0.113.7"), 0o644))

	_, reason := check(file, tlsDir)
	assert.Contains(t, reason, "no certificate in "+tlsDir+"/tls.crt yet")
	writeCert(t, tlsDir, "203.0.113.9", "kafka-0.kafka.ns.svc")
	_, reason = check(file, tlsDir)
	assert.Contains(t, reason, "does not name 203.0.113.7 yet")
	writeCert(t, tlsDir, "203.0.113.7", "kafka-0.kafka.ns.svc")
	host, reason := check(file, tlsDir)
	assert.Equal(t, "203.0.113.7", host)
	assert.Empty(t, reason)

	require.NoError(t, os.WriteFile(file, []byte("b0.elb.example.com"), 0o644))
	writeCert(t, tlsDir, "b0.elb.example.com")
	_, reason = check(file, tlsDir)
	assert.Empty(t, reason, "a DNS name too")
}
