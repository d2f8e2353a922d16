//go:build linux

package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"
)

// rawClients are many keep-alive HTTP/1.1 connections driven from one
// goroutine over one epoll set, with plain syscalls: a load generator
// that costs the shared CPUs as little as a client can (one write per
// request, one read per answer that arrived, epoll_wait for many at once),
// where a goroutine per connection pays the scheduler and a read that
// finds nothing on every request. The clients stand for machines of
// their own; what they cost here is taken from the server under test.
type rawClients struct {
	epfd int
	fds  []int // by connection; a connection's epoll events carry its index
	bufs [][]byte
	// Answers are parsed by readResponse over these, reused.
	rd bytes.Reader
	br *bufio.Reader
	// poll's, made at its first call.
	events []syscall.EpollEvent
	tmp    []byte
}

func dialRawClients(addr string, n int) (*rawClients, error) {
	ta, err := net.ResolveTCPAddr("tcp4", addr)
	if err != nil {
		return nil, err
	}
	sa := &syscall.SockaddrInet4{Port: ta.Port}
	copy(sa.Addr[:], ta.IP.To4())
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	rc := &rawClients{epfd: epfd, bufs: make([][]byte, n), br: bufio.NewReaderSize(nil, 4096)}
	for i := range n {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			rc.close()
			return nil, err
		}
		rc.fds = append(rc.fds, fd)
		if err := syscall.Connect(fd, sa); err != nil {
			rc.close()
			return nil, fmt.Errorf("connection %d: %w", i, err)
		}
		syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
		if err := syscall.SetNonblock(fd, true); err != nil {
			rc.close()
			return nil, err
		}
		if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, fd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(i)}); err != nil {
			rc.close()
			return nil, err
		}
		rc.bufs[i] = make([]byte, 0, 4096)
	}
	return rc, nil
}

func (rc *rawClients) close() {
	for _, fd := range rc.fds {
		syscall.Close(fd)
	}
	syscall.Close(rc.epfd)
}

// ask sends req on the connections in which (all if nil), one after
// the other, and waits for every answer; it returns each one's time from
// its own send to its whole answer.
func (rc *rawClients) ask(req []byte, which []int) ([]time.Duration, error) {
	if which == nil {
		which = make([]int, len(rc.fds))
		for i := range which {
			which[i] = i
		}
	}
	start := make(map[int]time.Time, len(which))
	lat := make([]time.Duration, 0, len(which))
	for _, i := range which {
		start[i] = time.Now()
		if err := rc.send(i, req); err != nil {
			return nil, err
		}
	}
	deadline := time.Now().Add(time.Minute)
	for len(start) > 0 {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%d answers missing after a minute", len(start))
		}
		err := rc.poll(1000, func(int) bool { return false }, func(i int) error {
			t0, waiting := start[i]
			if !waiting {
				return fmt.Errorf("connection %d: an answer nobody asked for", i)
			}
			lat = append(lat, time.Since(t0))
			delete(start, i)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return lat, nil
}

// send writes req on connection i, whose answer buffer starts empty.
func (rc *rawClients) send(i int, req []byte) error {
	rc.bufs[i] = rc.bufs[i][:0]
	if n, err := syscall.Write(rc.fds[i], req); err != nil || n != len(req) {
		return fmt.Errorf("connection %d: wrote %d of %d bytes: %v", i, n, len(req), err)
	}
	return nil
}

// poll waits up to timeoutMs for answers, reads what arrived and calls
// answered with each connection whose whole answer is in (head tells
// whether a connection's request was a HEAD).
func (rc *rawClients) poll(timeoutMs int, head func(i int) bool, answered func(i int) error) error {
	if rc.events == nil {
		rc.events, rc.tmp = make([]syscall.EpollEvent, len(rc.fds)), make([]byte, 64<<10)
	}
	n, err := syscall.EpollWait(rc.epfd, rc.events, timeoutMs)
	if errors.Is(err, syscall.EINTR) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, ev := range rc.events[:n] {
		i := int(ev.Fd)
		got, err := syscall.Read(rc.fds[i], rc.tmp)
		if errors.Is(err, syscall.EAGAIN) {
			continue
		}
		if err != nil || got == 0 {
			return fmt.Errorf("connection %d: read %d: %v", i, got, err)
		}
		rc.bufs[i] = append(rc.bufs[i], rc.tmp[:got]...)
		done, err := rc.wholeAnswer(rc.bufs[i], head(i))
		if err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		if done {
			if err := answered(i); err != nil {
				return err
			}
		}
	}
	return nil
}

// wholeAnswer reports whether buf holds one whole 200 answer with a
// Content-Length body (readResponse's checks; no body after a HEAD), and
// nothing after it.
func (rc *rawClients) wholeAnswer(buf []byte, head bool) (bool, error) {
	rc.rd.Reset(buf)
	rc.br.Reset(&rc.rd)
	err := readResponse(rc.br, head)
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return false, nil // not all here yet
	case err != nil:
		return false, err
	case rc.br.Buffered() > 0 || rc.rd.Len() > 0:
		return false, errors.New("bytes after the answer")
	}
	return true, nil
}

// closedLoop keeps one request in flight on every connection for window:
// each whole answer is followed at once by that connection's next request,
// reqs[0] and reqs[1] in turn (reqs[1] is a HEAD). It returns the number
// of answers.
func (rc *rawClients) closedLoop(reqs [2][]byte, window time.Duration) (int64, error) {
	done := make([]int, len(rc.fds)) // answers by connection: its request in flight is reqs[(i+done[i])%2]
	for i := range rc.fds {
		if err := rc.send(i, reqs[i%2]); err != nil {
			return 0, err
		}
	}
	var answers int64
	isHead := func(i int) bool { return (i+done[i])%2 == 1 }
	for end := time.Now().Add(window); time.Now().Before(end); {
		err := rc.poll(100, isHead, func(i int) error {
			answers++
			done[i]++
			return rc.send(i, reqs[(i+done[i])%2])
		})
		if err != nil {
			return answers, err
		}
	}
	return answers, nil
}
