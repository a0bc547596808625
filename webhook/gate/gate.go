// Package gate is the broker's init container `brokerport wait-address`: it holds the broker back
// until the pod's brokerport.io/host annotation, read through a downward-API volume, is set.
package gate

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Wait returns once the file holds a host, saying why it still waits every `every`.
func Wait(ctx context.Context, file string, out io.Writer, poll, every time.Duration) error {
	start := time.Now()
	lastSaid := start
	for {
		data, err := os.ReadFile(file)
		host := strings.TrimSpace(string(data))
		if err == nil && host != "" {
			fmt.Fprintf(out, "brokerport: this broker's host is %s\n", host)
			return nil
		}
		if time.Since(lastSaid) >= every {
			lastSaid = time.Now()
			reason := "the annotation brokerport.io/host is not set yet: the pod was bound while brokerport's binding webhook was unavailable, or its node has no address of the accepted types (see the pod's events); brokerport's controller sets it"
			if err != nil {
				reason = fmt.Sprintf("cannot read %s: %v", file, err)
			}
			fmt.Fprintf(out, "brokerport: waited %s for this broker's host: %s\n", time.Since(start).Round(time.Second), reason)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("gave up waiting for the host: %w", ctx.Err())
		case <-time.After(poll):
		}
	}
}
