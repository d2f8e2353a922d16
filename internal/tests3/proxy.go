package tests3

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Proxy is a loopback TCP forwarder in front of a Server, to cut the
// store's answers at a chosen byte (a store that dies mid-body) without
// timing: point the client at Proxy.Endpoint.
type Proxy struct {
	Endpoint string

	target string
	ln     net.Listener

	mu       sync.Mutex
	budget   int64 // bytes toward clients until the cut; -1: no cut armed
	downNext bool  // after the cut, refuse every connection
	down     bool
	conns    map[net.Conn]struct{}
}

// Proxy starts a forwarder to s; Cleanup closes it.
func (s *Server) Proxy(tb testing.TB) *Proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &Proxy{Endpoint: "http://" + ln.Addr().String(), target: s.addr, ln: ln, budget: -1, conns: map[net.Conn]struct{}{}}
	go p.serve()
	tb.Cleanup(func() { ln.Close(); p.closeAll() })
	return p
}

// CutAfter lets n more bytes through toward clients, then closes every
// connection; with thenDown, new connections are refused from then on.
func (p *Proxy) CutAfter(n int64, thenDown bool) {
	p.mu.Lock()
	p.budget, p.downNext = n, thenDown
	p.mu.Unlock()
}

func (p *Proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down := p.down
		if !down {
			p.conns[c] = struct{}{}
		}
		p.mu.Unlock()
		if down {
			c.Close()
			continue
		}
		go p.forward(c)
	}
}

func (p *Proxy) forward(c net.Conn) {
	u, err := net.Dial("tcp", p.target)
	if err != nil {
		p.drop(c)
		return
	}
	p.mu.Lock()
	p.conns[u] = struct{}{}
	p.mu.Unlock()
	go func() {
		_, _ = io.Copy(u, c)
		p.drop(u)
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := u.Read(buf)
		if n > 0 {
			pass, cut := p.take(n)
			if _, werr := c.Write(buf[:pass]); werr != nil || cut {
				break
			}
		}
		if err != nil {
			break
		}
	}
	p.drop(c)
	p.drop(u)
}

// take accounts n bytes toward a client: how many may pass, and whether
// the cut happens now.
func (p *Proxy) take(n int) (int, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.budget < 0 {
		return n, false
	}
	if int64(n) < p.budget {
		p.budget -= int64(n)
		return n, false
	}
	pass := int(p.budget)
	p.budget = -1
	if p.downNext {
		p.down = true
	}
	for c := range p.conns {
		defer c.Close()
	}
	return pass, true
}

func (p *Proxy) drop(c net.Conn) {
	c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

func (p *Proxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}
