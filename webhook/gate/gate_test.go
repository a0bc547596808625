package gate

import (
	"bytes"
	"context"
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
	go func() { done <- Wait(context.Background(), file, out, time.Millisecond, 5*time.Millisecond) }()

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
	err := Wait(ctx, filepath.Join(t.TempDir(), "missing"), &out, time.Millisecond, 0) // says why at once
	require.Error(t, err)
	assert.Contains(t, out.String(), "cannot read")
}
