package proxy

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// errStarting is what every request but the probes gets while the index
// opens: the mirror is up but cannot answer from its cache yet.
var errStarting = errors.New("the mirror is starting: its index is being opened and checked")

// startupPoll bounds how long the startup server's Accept blocks, so that
// Handover takes effect within it without closing the listener.
const startupPoll = 50 * time.Millisecond

// Startup answers on the listener while the cache opens (after a crash the
// reconcile walks every file, which takes a while on a large cache):
// /healthz is 200, /readyz is 503 with the reason, everything else a
// registry 503 UNAVAILABLE with Retry-After, so probes and clients see a
// clear "not yet" instead of a refused connection. Handover stops it
// without closing the listener, which the real Server then serves.
type Startup struct {
	ln   *pollingListener
	srv  *fasthttp.Server
	done chan struct{}
}

// ServeStartup starts answering on ln. With TLS files given it speaks TLS,
// like the Server that takes over. A listener that cannot poll its Accept
// (not TCP) is left alone: Handover then does nothing.
func ServeStartup(ln net.Listener, tlsCertFile, tlsKeyFile string, log *slog.Logger) *Startup {
	st := &Startup{done: make(chan struct{})}
	tcp, ok := ln.(*net.TCPListener)
	if !ok {
		close(st.done)
		return st
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	st.ln = &pollingListener{TCPListener: tcp}
	st.srv = &fasthttp.Server{
		Handler:               serveStarting,
		Name:                  "regmirror",
		NoDefaultServerHeader: true,
		ReadTimeout:           10 * time.Second,
		WriteTimeout:          10 * time.Second,
		ReadBufferSize:        64 << 10,
		Logger:                fasthttpLogger{log},
	}
	go func() {
		defer close(st.done)
		var err error
		if tlsCertFile != "" {
			err = st.srv.ServeTLS(st.ln, tlsCertFile, tlsKeyFile)
		} else {
			err = st.srv.Serve(st.ln)
		}
		if err != nil && !errors.Is(err, net.ErrClosed) {
			log.Warn("startup listener stopped", "err", err)
		}
	}()
	return st
}

// Handover stops answering "starting" and returns once no Accept of the
// startup server is pending, so the listener is the next server's alone.
// Connections the startup server accepted finish their one answer (it asks
// them to close).
func (st *Startup) Handover() {
	if st.ln == nil {
		return
	}
	st.ln.stop()
	<-st.done
	_ = st.ln.SetDeadline(time.Time{})
}

func serveStarting(ctx *fasthttp.RequestCtx) {
	ctx.SetConnectionClose()
	ctx.Response.Header.Set("Cache-Control", "no-store")
	switch string(ctx.Path()) {
	case "/healthz":
		writeReply(ctx, bodyReply("text/plain; charset=utf-8", []byte("ok\n")))
	case "/readyz":
		r := bodyReply("application/json", nil)
		r.body, r.status = readyAnswer(func() []Check { return []Check{{Name: "index", OK: false, Reason: errStarting.Error()}} })
		writeReply(ctx, r)
	default:
		writeError(ctx, errStarting, resourceNone)
	}
}

// pollingListener is a TCP listener whose Accept wakes up every
// startupPoll to see whether it was stopped; stopping it leaves the
// socket open.
type pollingListener struct {
	*net.TCPListener
	stopped  atomic.Bool
	stopOnce sync.Once
}

func (l *pollingListener) stop() { l.stopOnce.Do(func() { l.stopped.Store(true) }) }

func (l *pollingListener) Accept() (net.Conn, error) {
	for !l.stopped.Load() {
		_ = l.SetDeadline(time.Now().Add(startupPoll))
		c, err := l.TCPListener.Accept()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			continue
		}
		return c, err
	}
	return nil, net.ErrClosed
}

// Close stops the startup server's use of the listener; the socket stays
// open for the Server that takes over.
func (l *pollingListener) Close() error {
	l.stop()
	return nil
}
