// Package gate is the broker's init container `brokerport wait-address`: it holds the broker back
// until the pod's brokerport.io/host annotation, read through a downward-API volume, is set, and,
// for a broker with a certificate, until the mounted certificate names that host.
package gate

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Wait returns once the file holds a host (and, when tlsDir is set, tlsDir/tls.crt names it),
// saying why it still waits every `every`.
func Wait(ctx context.Context, file, tlsDir string, out io.Writer, poll, every time.Duration) error {
	start := time.Now()
	lastSaid := start
	for {
		host, reason := check(file, tlsDir)
		if reason == "" {
			fmt.Fprintf(out, "brokerport: this broker's host is %s\n", host)
			return nil
		}
		if time.Since(lastSaid) >= every {
			lastSaid = time.Now()
			fmt.Fprintf(out, "brokerport: waited %s for this broker's host: %s\n", time.Since(start).Round(time.Second), reason)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("gave up waiting for the host: %w", ctx.Err())
		case <-time.After(poll):
		}
	}
}

// check reads the host and the certificate: the host, and why the broker must still wait ("" when
// it need not).
func check(file, tlsDir string) (string, string) {
	data, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Sprintf("cannot read %s: %v", file, err)
	}
	host := strings.TrimSpace(string(data))
	if host == "" {
		return "", "the annotation brokerport.io/host is not set yet: the pod was bound while brokerport's binding webhook was unavailable, its node has no address of the accepted types, or its load balancer has none yet (see the pod's and the StatefulSet's events); brokerport's controller sets it"
	}
	if tlsDir == "" {
		return host, ""
	}
	certFile := filepath.Join(tlsDir, "tls.crt")
	data, err = os.ReadFile(certFile)
	if err != nil || len(data) == 0 {
		return host, fmt.Sprintf("no certificate in %s yet: cert-manager issues it once brokerport's controller has asked for one naming %s (see the Certificate's events)", certFile, host)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return host, fmt.Sprintf("%s holds no PEM certificate", certFile)
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return host, fmt.Sprintf("%s: %v", certFile, err)
	}
	if err := leaf.VerifyHostname(host); err != nil {
		return host, fmt.Sprintf("the certificate in %s does not name %s yet (it names %v %v): cert-manager is reissuing it", certFile, host, leaf.DNSNames, leaf.IPAddresses)
	}
	return host, ""
}
