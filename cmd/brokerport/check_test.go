package main

import (
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
)

// advertising is a listener whose advertised address (kfake puts its Addr in Metadata) can be
// changed.
type advertising struct {
	net.Listener
	as atomic.Pointer[string]
}

func (l *advertising) Addr() net.Addr {
	if a := l.as.Load(); a != nil {
		return textAddr(*a)
	}
	return l.Listener.Addr()
}

type textAddr string

func (a textAddr) Network() string { return "tcp" }
func (a textAddr) String() string  { return string(a) }

// brokers starts two kfake brokers and a plain "admin" listener each, and returns the
// ConfigMap data brokerport would publish for them.
func brokers(t *testing.T) ([]*advertising, []net.Listener, map[string]string) {
	var mu sync.Mutex
	var kafka []*advertising
	cluster, err := kfake.NewCluster(kfake.NumBrokers(2), kfake.ListenFn(func(network, _ string) (net.Listener, error) {
		ln, err := net.Listen(network, "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		mu.Lock()
		defer mu.Unlock()
		a := &advertising{Listener: ln}
		kafka = append(kafka, a)
		return a, nil
	}))
	require.NoError(t, err)
	t.Cleanup(cluster.Close)
	var admin []net.Listener
	var kafkaLines, adminLines, servers []string
	for i, k := range kafka {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		admin = append(admin, ln)
		pod := []string{"rp-0", "rp-1"}[i]
		kafkaLines = append(kafkaLines, pod+" "+k.Listener.Addr().String())
		adminLines = append(adminLines, pod+" "+ln.Addr().String())
		servers = append(servers, k.Listener.Addr().String())
	}
	return kafka, admin, map[string]string{
		"bootstrap.servers": strings.Join(servers, ","), "kafka.bootstrap.servers": strings.Join(servers, ","),
		"kafka.addresses": strings.Join(kafkaLines, "\n"), "admin.addresses": strings.Join(adminLines, "\n"),
		"admin.bootstrap.servers": "-", "status": "rp-0 exposed\nrp-1 exposed",
	}
}

func runCheck(t *testing.T, data map[string]string) (string, error) {
	rows, err := checkFromHere(context.Background(), data, "PLAINTEXT", 2*time.Second, (&net.Dialer{}).DialContext)
	var out bytes.Buffer
	printRows(&out, rows)
	t.Log("\n" + out.String())
	return out.String(), err
}

func TestCheckFromHere(t *testing.T) {
	kafka, admin, data := brokers(t)

	t.Run("all reachable", func(t *testing.T) {
		out, err := runCheck(t, data)
		require.NoError(t, err)
		assert.Regexp(t, `rp-0 +kafka +\d+ +`+kafka[0].Listener.Addr().String()+` +yes +`+kafka[0].Listener.Addr().String(), out)
		assert.Regexp(t, `rp-1 +admin +- +`+admin[1].Addr().String()+` +yes +\(not checked: tcp\)`, out)
	})

	t.Run("a wrong port is named", func(t *testing.T) {
		wrong := "127.0.0.1:1"
		kafka[1].as.Store(&wrong)
		defer kafka[1].as.Store(nil)
		out, err := runCheck(t, data)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "rp-1 kafka at "+kafka[1].Listener.Addr().String()+" advertises 127.0.0.1:1")
		assert.Contains(t, err.Error(), "advertises 127.0.0.1:1, which brokerport did not publish")
		assert.Contains(t, out, "127.0.0.1:1 (MISMATCH)")
	})

	t.Run("a closed listener is named", func(t *testing.T) {
		require.NoError(t, admin[0].Close())
		out, err := runCheck(t, data)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "rp-0 admin at "+admin[0].Addr().String()+" unreachable: connection refused")
		assert.Contains(t, out, "no: connection refused")
		assert.NotContains(t, err.Error(), "rp-1")
	})
}

func TestPrintProbed(t *testing.T) {
	data := map[string]string{
		"bootstrap.servers": "h0:1,h1:3", "kafka.bootstrap.servers": "h0:1,h1:3", "kafka.addresses": "rp-0 h0:1\nrp-1 h1:3",
		"kafka.reachability": "rp-0 reachable\nrp-1 reachable",
	}
	var out bytes.Buffer
	require.NoError(t, printProbed(&out, data))
	assert.Regexp(t, `rp-1 +kafka +h1:3 +reachable`, out.String())

	data["kafka.reachability"] = "rp-0 reachable\nrp-1 advertises h1:9"
	err := printProbed(&out, data)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "rp-1 kafka at h1:3 advertises h1:9")

	delete(data, "kafka.reachability")
	err = printProbed(&out, data)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "--from-here")
}

func TestCheckFlags(t *testing.T) {
	assert.Equal(t, []string{"--from-here=true", "-n", "kafka", "rp"}, reorderFlags(boolFlagsFirst([]string{"--from-here", "rp", "-n", "kafka"}, "from-here")))
	assert.Equal(t, []string{"-from-here=true", "rp"}, reorderFlags(boolFlagsFirst([]string{"rp", "-from-here=true"}, "from-here")))
}
