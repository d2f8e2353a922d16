package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/opencontainers/go-digest"
	"github.com/urfave/cli/v2"

	"github.com/regmirror/regmirror/admin"
	"github.com/regmirror/regmirror/archive"
	"github.com/regmirror/regmirror/cache"
	"github.com/regmirror/regmirror/internal/stack"
)

// This file is the one way a command reaches the cache: the data dir
// opened in this process when no server holds it, else the server that
// does (found through the address it writes into the data dir, or
// --server), or a server on another box (--server https://… with
// --username or --client-cert).

// reachMode says what a command needs of the cache.
type reachMode int

const (
	// reachCache: the cache only (no upstream): the data dir opened here,
	// else through its server.
	reachCache reachMode = iota
	// reachMirror: a mirror that can fetch from upstream, to pull through
	// (target.URL): a server started in this process on 127.0.0.1:0 when
	// the data dir is free, else the running server.
	reachMirror
	// reachDataDir: the data dir opened here; a running server is an
	// error saying to stop it (import).
	reachDataDir
)

// target is the cache a command works on, however it was reached.
type target struct {
	// Ops are the management operations; Blobs reads cached blobs (never
	// from upstream).
	Ops   admin.Ops
	Blobs archive.BlobSource
	// Where names the cache in messages: the data dir or the server's URL.
	Where string
	// URL is a mirror to pull through (reachMirror only), and Token the
	// management token that lets those pulls through access control.
	URL, Token string
	// Client is set when the cache is reached through a server; for a
	// server on another box its HTTP transport carries the TLS settings
	// and credentials that pulls must use too.
	Client *admin.Client
	// Remote says Client is a server on another box (--username or
	// --client-cert), managed as one of its admins.
	Remote bool
	// TLS, when set, is how pulls through URL trust a server on this box
	// (trustOwnCertificate).
	TLS *tls.Config
	// Stack is set when the data dir was opened in this process.
	Stack *stack.Stack
	// Config and Log are the command's.
	Config config
	Log    *slog.Logger

	close func() error
}

// Close releases what reach opened: the data dir, or the server started
// for the command.
func (t *target) Close() error {
	if t.close == nil {
		return nil
	}
	return t.close()
}

// withTarget runs fn with the cache reached as mode says, and closes it.
func withTarget(c *cli.Context, mode reachMode, fn func(ctx context.Context, t *target) error) error {
	t, err := reach(c, mode)
	if err != nil {
		return err
	}
	err = fn(c.Context, t)
	if cerr := t.Close(); err == nil && cerr != nil && mode == reachMirror {
		t.Log.Warn("stopping the command's server", "err", cerr)
	}
	return err
}

// reach loads the command's config and reaches the cache as mode says.
// The caller closes the target.
func reach(c *cli.Context, mode reachMode) (*target, error) {
	cfg, log, err := setup(c)
	if err != nil {
		return nil, err
	}
	var t *target
	if cl, err := remoteClient(c); err != nil {
		return nil, err
	} else if cl != nil {
		if mode == reachDataDir {
			return nil, errors.New("this command works on a local data dir only; --username and --client-cert do not apply")
		}
		t = &target{Ops: cl, Blobs: cl.BlobSource(c.Context), Where: cl.BaseURL, URL: cl.BaseURL,
			Client: cl, Remote: true, Config: cfg, Log: log}
	} else if t, err = reachLocal(c.Context, cfg, log, mode, c.String("server")); err != nil {
		return nil, err
	}
	if t.Client != nil && mode == reachMirror &&
		(c.IsSet("upstream-url") || c.IsSet("upstream-username") || c.IsSet("upstream-password")) {
		log.Warn("the running server fetches with its own upstream settings; --upstream-* apply when the data dir is free", "server", t.URL)
	}
	return t, nil
}

// reachLocal opens the data dir of cfg, or reaches the server holding it;
// a server named with --server is reached whether the data dir is free or
// not (a free one would be the wrong cache, or a new empty one).
func reachLocal(ctx context.Context, cfg config, log *slog.Logger, mode reachMode, server string) (*target, error) {
	if server != "" && mode != reachDataDir {
		return reachServer(ctx, cfg, log, mode, server)
	}
	var err error
	switch mode {
	case reachMirror:
		var t *target
		if t, err = startLocalMirror(cfg, log); err == nil {
			return t, nil
		}
	default:
		var st *stack.Stack
		if st, err = openStack(cfg, log); err == nil {
			return &target{Ops: st.Ops, Blobs: admin.Source{Store: st.Store}, Where: cfg.DataDir,
				Stack: st, Config: cfg, Log: log, close: st.Close}, nil
		}
	}
	if !errors.Is(err, cache.ErrBusy) {
		return nil, err
	}
	if mode == reachDataDir {
		return nil, fmt.Errorf("the data dir %s is in use by a running regmirror; stop it, run this command, then start it again", cfg.DataDir)
	}
	return reachServer(ctx, cfg, log, mode, server)
}

// reachServer reaches the server holding cfg's data dir (at server, when
// given), with the management token it wrote there.
func reachServer(ctx context.Context, cfg config, log *slog.Logger, mode reachMode, server string) (*target, error) {
	url := findServer(server, cfg)
	cl := admin.NewClient(url, "")
	var err error
	if cl.Token, err = admin.ReadToken(cfg.DataDir); err != nil {
		return nil, fmt.Errorf("the management token of %s (the server's data dir, --data-dir): %w", url, err)
	}
	if strings.HasPrefix(url, "https://") {
		if certPEM, err := admin.ReadServerCert(cfg.DataDir); err == nil {
			tlsConfig, err := trustOwnCertificate(certPEM)
			if err != nil {
				return nil, err
			}
			cl.HTTP.Transport = &http.Transport{TLSClientConfig: tlsConfig, Proxy: nil}
		}
	}
	if mode == reachMirror { // pulls go to url: make sure it is there
		if _, err := cl.Usage(ctx, 0); err != nil {
			return nil, serverGone(cfg.DataDir, url, err)
		}
	}
	log.Debug("data dir in use; working through the running server", "server", url)
	return &target{Ops: serverOps{cl, cfg.DataDir}, Blobs: cl.BlobSource(ctx), Where: url, URL: url, Token: cl.Token,
		Client: cl, Config: cfg, Log: log}, nil
}

// startLocalMirror starts a mirror on the data dir in this process, on
// 127.0.0.1:0, for a command to pull through. It serves that command only:
// the config's watch list and pin list are left to serve, or they would
// fetch (and spend upstream's pull budget on) images nobody asked this
// command for.
func startLocalMirror(cfg config, log *slog.Logger) (*target, error) {
	local := cfg
	local.Listen = "127.0.0.1:0"
	local.Watch, local.Pin = nil, nil
	a, err := newApp(local, quietLogger(cfg, log))
	if err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	select { // until Run hands the listener over, the startup server answers 503
	case <-a.serving:
	case err := <-done:
		cancel()
		return nil, fmt.Errorf("the local server stopped before serving: %v", err)
	}
	return &target{Ops: a.cache.Ops, Blobs: admin.Source{Store: a.cache.Store}, Where: cfg.DataDir,
		URL: a.url(), Token: a.token, TLS: a.ownTLS, Stack: a.cache, Config: cfg, Log: log,
		close: func() error { cancel(); return <-done }}, nil
}

// findServer is the URL of the server that holds cfg's data dir: --server,
// else the address it wrote into the data dir, else derived from listen
// (a server of an older version).
func findServer(explicit string, cfg config) string {
	if explicit != "" {
		return strings.TrimRight(explicit, "/")
	}
	if url, err := admin.ReadServerURL(cfg.DataDir); err == nil {
		return url
	}
	return serverURL("", cfg.Listen)
}

// serverOps are a local server's operations; a server that does not
// answer is reported with the way to name it.
type serverOps struct {
	*admin.Client
	dataDir string
}

func (s serverOps) hint(err error) error {
	if errors.Is(err, admin.ErrUnavailable) && !errors.Is(err, admin.ErrUnauthorized) {
		return serverGone(s.dataDir, s.BaseURL, err)
	}
	return err
}

func (s serverOps) Usage(ctx context.Context, top int) (admin.Usage, error) {
	u, err := s.Client.Usage(ctx, top)
	return u, s.hint(err)
}

func (s serverOps) GC(ctx context.Context) (admin.GCResult, error) {
	r, err := s.Client.GC(ctx)
	return r, s.hint(err)
}

func (s serverOps) Images(ctx context.Context) ([]admin.Image, error) {
	imgs, err := s.Client.Images(ctx)
	return imgs, s.hint(err)
}

func (s serverOps) PinRef(ctx context.Context, ref string) (admin.PinResult, error) {
	r, err := s.Client.PinRef(ctx, ref)
	return r, s.hint(err)
}

func (s serverOps) Pin(ctx context.Context, name string, ds []digest.Digest) error {
	return s.hint(s.Client.Pin(ctx, name, ds))
}

func (s serverOps) Unpin(ctx context.Context, name string) error {
	return s.hint(s.Client.Unpin(ctx, name))
}

func serverGone(dataDir, url string, err error) error {
	return fmt.Errorf("the data dir %s is in use, and its server does not answer at %s (give its URL with --server): %w", dataDir, url, err)
}

// serverURL is where a local server listening on listen answers.
func serverURL(explicit, listen string) string {
	if explicit != "" {
		return strings.TrimRight(explicit, "/")
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "http://" + listen
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// trustOwnCertificate is the TLS configuration of a command that reaches
// the server holding its data dir: it trusts the certificate the server
// wrote there (admin.ServerCertFile), pinned, whatever names it was issued
// for. The command reaches the server at the address the server wrote
// beside it (an IP, often 127.0.0.1), which a certificate for the server's
// public name does not cover; whoever reads the data dir's token is that
// server's admin anyway.
func trustOwnCertificate(pemBytes []byte) (*tls.Config, error) {
	block, rest := pem.Decode(pemBytes)
	for block != nil && block.Type != "CERTIFICATE" {
		block, rest = pem.Decode(rest)
	}
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM certificate in it", admin.ServerCertFile)
	}
	leaf := block.Bytes // the server's own certificate leads its chain
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, //nolint:gosec // the certificate is pinned by VerifyPeerCertificate
		VerifyPeerCertificate: func(chain [][]byte, _ [][]*x509.Certificate) error {
			if len(chain) > 0 && bytes.Equal(chain[0], leaf) {
				return nil
			}
			return fmt.Errorf("the server's certificate is not the one in the data dir's %s", admin.ServerCertFile)
		},
	}, nil
}

// readCertificates reads the CERTIFICATE blocks of a PEM file, leaving out
// anything else (a key kept in the same file must not be copied into the
// data dir).
func readCertificates(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tls_cert: %w", err)
	}
	var out []byte
	for block, rest := pem.Decode(b); block != nil; block, rest = pem.Decode(rest) {
		if block.Type == "CERTIFICATE" {
			out = append(out, pem.EncodeToMemory(block)...)
		}
	}
	if out == nil {
		return nil, fmt.Errorf("tls_cert %s: no PEM certificate in it", path)
	}
	return out, nil
}

// remoteClient is the management client for --username or --client-cert,
// nil when neither is given (then the data dir decides).
func remoteClient(c *cli.Context) (*admin.Client, error) {
	user, certFile := c.String("username"), c.String("client-cert")
	if user == "" && certFile == "" {
		return nil, nil
	}
	server := strings.TrimRight(c.String("server"), "/")
	if !strings.HasPrefix(server, "https://") {
		return nil, errors.New("--username and --client-cert need --server https://host:port (credentials only travel over TLS)")
	}
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile := c.String("ca-file"); caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
		tlsConfig.RootCAs = x509.NewCertPool()
		if !tlsConfig.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-file %s: no PEM certificate in it", caFile)
		}
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, c.String("client-key"))
		if err != nil {
			return nil, fmt.Errorf("--client-cert/--client-key: %w", err)
		}
		tlsConfig.Certificates = []tls.Certificate{cert}
	}
	cl := admin.NewClient(server, "")
	cl.HTTP.Transport = &http.Transport{TLSClientConfig: tlsConfig, Proxy: http.ProxyFromEnvironment}
	if user != "" {
		pwFile := c.String("password-file")
		if pwFile == "" {
			return nil, errors.New("--username needs --password-file")
		}
		b, err := os.ReadFile(pwFile)
		if err != nil {
			return nil, fmt.Errorf("--password-file: %w", err)
		}
		cl.Username, cl.Password = user, strings.TrimRight(string(b), "\r\n")
	}
	return cl, nil
}

// PullTransport is how requests pulled through t.URL travel: with the
// server's management token (which a mirror with access control takes
// from loopback as its own), or for a server on another box over its TLS
// with the admin's credentials, always https (a registry client would pick
// plain http for a private or loopback address). Close its idle
// connections when done: the server may be shutting down next.
func (t *target) PullTransport() *authTransport {
	base := http.DefaultTransport.(*http.Transport).Clone()
	if t.Client != nil {
		if tr, ok := t.Client.HTTP.Transport.(*http.Transport); ok {
			base = tr.Clone() // the server's CA or pinned certificate, the admin's certificate
		}
	}
	if t.TLS != nil {
		base.TLSClientConfig = t.TLS
	}
	host := ""
	if u, err := url.Parse(t.URL); err == nil {
		host = u.Host
	}
	return &authTransport{t: t, base: base, host: host}
}

// authTransport authorizes each request to the server as PullTransport
// says, and nothing else: a request elsewhere (a redirect the registry
// client follows, say to a presigned URL of a shared store) goes as it is,
// without the token or an admin's password.
type authTransport struct {
	t    *target
	base *http.Transport
	host string // the server's host:port
}

func (a *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host != a.host {
		return a.base.RoundTrip(req)
	}
	req = req.Clone(req.Context())
	switch {
	case a.t.Remote:
		req.URL.Scheme = "https"
		a.t.Client.Authorize(req)
	case a.t.Token != "":
		req.Header.Set("Authorization", "Bearer "+a.t.Token)
	}
	return a.base.RoundTrip(req)
}

// CloseIdleConnections closes the transport's idle connections.
func (a *authTransport) CloseIdleConnections() { a.base.CloseIdleConnections() }
