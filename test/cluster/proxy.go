package cluster

import (
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
)

// Proxy stands in for the brokerport-webhook Service in front of several brokerport replicas
// running as host processes: each connection goes to the next backend in turn, and to the one
// after when a backend refuses it (a killed replica), as kube-proxy stops sending to an endpoint
// that is gone.
type Proxy struct {
	listener net.Listener
	backends []string
	next     atomic.Uint64
	wg       sync.WaitGroup
}

// StartProxy listens on 127.0.0.1:port and forwards to the backends (host:port).
func StartProxy(port int, backends ...string) (*Proxy, error) {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return nil, err
	}
	p := &Proxy{listener: l, backends: backends}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		conn, err := p.listener.Accept()
		if err != nil {
			return // closed
		}
		go p.forward(conn)
	}
}

func (p *Proxy) forward(in net.Conn) {
	defer in.Close()
	start := p.next.Add(1)
	var out net.Conn
	for i := range uint64(len(p.backends)) {
		var err error
		if out, err = net.Dial("tcp", p.backends[(start+i)%uint64(len(p.backends))]); err == nil {
			break
		}
	}
	if out == nil {
		return
	}
	defer out.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tcp, ok := dst.(*net.TCPConn); ok {
			_ = tcp.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(out, in)
	go pipe(in, out)
	<-done
	<-done
}

// Close stops accepting; connections in flight finish on their own.
func (p *Proxy) Close() error {
	err := p.listener.Close()
	p.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
