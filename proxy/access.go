package proxy

import (
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/regmirror/regmirror/access"
)

// Access decides who a client is and whether it may pull; package access
// implements it. The proxy asks once per request: Authorize after routing
// (so the registry and repository are the resolved ones, whatever the
// addressing form) and before any cache read or upstream request; Identify
// where no repository is named (/v2/, management, unroutable requests).
type Access interface {
	Identify(c access.Client) (user string, err error)
	Authorize(c access.Client, registry, repo string) (user string, err error)
	// IsAdmin tells whether an identified user may manage the mirror
	// from a remote address (over TLS).
	IsAdmin(user string) bool
	// May tells whether an identified user may pull registry/repo (repo
	// "": anything from registry), for the status page and the catalog.
	May(user, registry, repo string) bool
}

// accessPolicy is the operator views' PullPolicy under access control:
// the client is identified once per request (so a catalog page costs one
// rate-limit token, not one per repository).
type accessPolicy struct{ s *Server }

const accessUserKey = "regmirror.access.user"

func (p accessPolicy) MayPull(ctx *fasthttp.RequestCtx, registry, repo string) bool {
	user, ok := ctx.UserValue(accessUserKey).(string)
	if !ok {
		var err error
		if p.s.internalClient(ctx) {
			user = internalMark
		} else if user, err = p.s.opts.Access.Identify(accessClient(ctx)); err != nil {
			user = ""
		}
		ctx.SetUserValue(accessUserKey, user)
	}
	switch user {
	case "":
		return false
	case internalMark:
		return true
	}
	return p.s.opts.Access.May(user, registry, repo)
}

// Unidentified implements challenger, after MayPull identified the client.
func (p accessPolicy) Unidentified(ctx *fasthttp.RequestCtx) bool {
	user, ok := ctx.UserValue(accessUserKey).(string)
	return ok && user == ""
}

// accessMetrics counts refused requests by reason; never by user.
type accessMetrics struct {
	denied *prometheus.CounterVec
}

func newAccessMetrics(reg *prometheus.Registry) accessMetrics {
	m := accessMetrics{denied: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "regmirror_access_denied_total",
		Help: "Requests refused by access control, by reason (unauthenticated, denied, rate_limited, not_admin).",
	}, []string{"reason"})}
	for _, r := range []string{"unauthenticated", "denied", "rate_limited", "not_admin"} {
		m.denied.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.denied)
	}
	return m
}

// accessClient is what access needs to know of the request's sender. The
// certificate name is read only from a chain the TLS layer verified
// against the client CA.
func accessClient(ctx *fasthttp.RequestCtx) access.Client {
	c := access.Client{IP: ctx.RemoteIP(), Authorization: string(ctx.Request.Header.Peek(fasthttp.HeaderAuthorization))}
	if st := ctx.TLSConnectionState(); st != nil && len(st.VerifiedChains) > 0 && len(st.VerifiedChains[0]) > 0 {
		c.CertCN = st.VerifiedChains[0][0].Subject.CommonName
	}
	return c
}

// authorize checks access for a request (repo empty: identity only) and
// returns why it is refused, or nil. Without access control everyone may
// pull everything.
func (s *Server) authorize(ctx *fasthttp.RequestCtx, ex *exchange, registry, repo string) error {
	if s.opts.Access == nil || ex.user == peerUser {
		return nil
	}
	if s.internalClient(ctx) {
		ex.user = internalUser
		return nil
	}
	var user string
	var err error
	if repo == "" {
		user, err = s.opts.Access.Identify(accessClient(ctx))
	} else {
		user, err = s.opts.Access.Authorize(accessClient(ctx), registry, repo)
	}
	ex.user = user
	if err != nil {
		s.accessMetrics.denied.WithLabelValues(refusalReason(err)).Inc()
	}
	return withChallenge(err)
}

// internalUser is who a request with the internal token is, in logs.
const internalUser = "regmirror"

// internalMark stands for the internal token's client where an identity
// decides what it may see: no name access control identifies can be it
// (a user or certificate named "regmirror" saw everything before).
const internalMark = "\x00internal"

// internalClient tells a loopback request that carries the internal token
// (the management token): the mirror's own preload and config pins pull
// through the server with it, whatever the rules say. Whoever can read the
// token from the data dir may manage the mirror anyway.
func (s *Server) internalClient(ctx *fasthttp.RequestCtx) bool {
	if s.opts.InternalToken == "" || !s.fromThisHost(ctx) {
		return false
	}
	want := "Bearer " + s.opts.InternalToken
	return subtle.ConstantTimeCompare(ctx.Request.Header.Peek(fasthttp.HeaderAuthorization), []byte(want)) == 1
}

func refusalReason(err error) string {
	switch {
	case errors.Is(err, access.ErrUnauthenticated):
		return "unauthenticated"
	case errors.Is(err, access.ErrRateLimited):
		return "rate_limited"
	default:
		return "denied"
	}
}

// serveAdmin answers management requests: from loopback with the token (as
// without access control), or from anywhere over TLS for a user that access
// control names an admin (by password or certificate).
func (s *Server) serveAdmin(ctx *fasthttp.RequestCtx, ex *exchange) (reply, error) {
	if s.opts.Access != nil && s.opts.TLSCertFile != "" && s.adminOpenHandler != nil {
		if user, err := s.opts.Access.Identify(accessClient(ctx)); err == nil && s.opts.Access.IsAdmin(user) {
			ex.user = user
			s.adminOpenHandler(ctx)
			return delegated, nil
		}
	}
	if !s.fromThisHost(ctx) {
		if s.opts.Access != nil {
			s.accessMetrics.denied.WithLabelValues("not_admin").Inc()
		}
		return reply{}, fmt.Errorf("%w: management is for loopback clients with the token, or admins over TLS", errForbidden)
	}
	s.adminHandler(ctx)
	return delegated, nil
}

// clientCertConfig is the TLS configuration that asks clients for a
// certificate and verifies one if given (a client without one may still
// log in with a password or come from a trusted network).
func clientCertConfig(caFile string) (*tls.Config, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("proxy: client CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("proxy: client CA %s: no PEM certificate in it", caFile)
	}
	return &tls.Config{ClientCAs: pool, ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS12}, nil
}

// setupAccess wires the access options into a new Server.
func (s *Server) setupAccess() error {
	o := s.opts
	s.accessMetrics = newAccessMetrics(o.Metrics)
	if o.Access != nil && o.Operator.PullPolicy == nil {
		s.opts.Operator.PullPolicy = accessPolicy{s}
	}
	if o.AdminOpen != nil {
		s.adminOpenHandler = fasthttpadaptor.NewFastHTTPHandler(o.AdminOpen)
	}
	if o.ClientCAFile == "" {
		return nil
	}
	if o.TLSCertFile == "" {
		return errors.New("proxy: a client CA needs TLS (a certificate and key)")
	}
	cfg, err := clientCertConfig(o.ClientCAFile)
	if err != nil {
		return err
	}
	s.http.TLSConfig = cfg
	return nil
}
