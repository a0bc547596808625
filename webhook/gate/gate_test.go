package gate

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestWaitReturnsOnceTheHostIsWritten(t *testing.T) {
	file := filepath.Join(t.TempDir(), "host")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- Wait(context.Background(), file, &out, time.Millisecond, 5*time.Millisecond) }()

	time.Sleep(30 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("returned before the host was set: %v", err)
	default:
	}
	require.NoError(t, os.WriteFile(file, []byte("203.0.113.7"), 0o644))
	require.NoError(t, <-done)
	assert.Contains(t, out.String(), "the annotation brokerport.io/host is not set yet")
	assert.Contains(t, out.String(), "this broker's host is 203.0.113.7\n")
}

func TestWaitGivesUpWithTheContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	var out bytes.Buffer
	err := Wait(ctx, filepath.Join(t.TempDir(), "missing"), &out, time.Millisecond, 5*time.Millisecond)
	require.Error(t, err)
	assert.Contains(t, out.String(), "cannot read")
}
