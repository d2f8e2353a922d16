//go:build linux

package bench

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strconv"
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
	fds  []int
	conn map[int32]int // fd → index
	bufs [][]byte
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
	rc := &rawClients{epfd: epfd, conn: make(map[int32]int, n), bufs: make([][]byte, n)}
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
		if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, fd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd)}); err != nil {
			rc.close()
			return nil, err
		}
		rc.conn[int32(fd)] = i
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
		rc.bufs[i] = rc.bufs[i][:0]
		start[i] = time.Now()
		if n, err := syscall.Write(rc.fds[i], req); err != nil || n != len(req) {
			return nil, fmt.Errorf("connection %d: wrote %d of %d bytes: %v", i, n, len(req), err)
		}
	}
	events := make([]syscall.EpollEvent, 256)
	var tmp [64 << 10]byte
	deadline := time.Now().Add(time.Minute)
	for len(start) > 0 {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%d answers missing after a minute", len(start))
		}
		n, err := syscall.EpollWait(rc.epfd, events, 1000)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, ev := range events[:n] {
			i := rc.conn[ev.Fd]
			got, err := syscall.Read(int(ev.Fd), tmp[:])
			if errors.Is(err, syscall.EAGAIN) {
				continue
			}
			if err != nil || got == 0 {
				return nil, fmt.Errorf("connection %d: read %d: %v", i, got, err)
			}
			rc.bufs[i] = append(rc.bufs[i], tmp[:got]...)
			done, err := wholeAnswer(rc.bufs[i])
			if err != nil {
				return nil, fmt.Errorf("connection %d: %w", i, err)
			}
			if done {
				t0, waiting := start[i]
				if !waiting {
					return nil, fmt.Errorf("connection %d: an answer nobody asked for", i)
				}
				lat = append(lat, time.Since(t0))
				delete(start, i)
			}
		}
	}
	return lat, nil
}

// wholeAnswer reports whether buf holds one whole 200 answer with a
// Content-Length body, and nothing after it.
func wholeAnswer(buf []byte) (bool, error) {
	end := bytes.Index(buf, []byte("\r\n\r\n"))
	if end < 0 {
		return false, nil
	}
	head := buf[:end]
	if !bytes.HasPrefix(head, []byte("HTTP/1.1 200 ")) {
		line, _, _ := bytes.Cut(head, []byte("\r\n"))
		return false, fmt.Errorf("answer %q", line)
	}
	length := -1
	for _, line := range bytes.Split(head, []byte("\r\n"))[1:] {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if ok && bytes.EqualFold(k, []byte("Content-Length")) {
			n, err := strconv.Atoi(string(bytes.TrimSpace(v)))
			if err != nil {
				return false, err
			}
			length = n
		}
	}
	if length < 0 {
		return false, errors.New("no Content-Length")
	}
	switch total := end + 4 + length; {
	case len(buf) < total:
		return false, nil
	case len(buf) > total:
		return false, errors.New("bytes after the answer")
	}
	return true, nil
}
