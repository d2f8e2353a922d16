package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/imageref"
)

// PushOptions configures a Pusher.
type PushOptions struct {
	// URL is the registry to write to: "https://registry.site:5000" or
	// "http://127.0.0.1:5000". No path.
	URL string
	// Username and Password are optional; Keychain (a Docker config.json,
	// see NewConfigKeychain) is asked when they are empty; else anonymous.
	Username, Password string
	Keychain           authn.Keychain
	// CAFile adds PEM CA certificates to the system pool;
	// InsecureSkipVerify turns TLS verification off.
	CAFile             string
	InsecureSkipVerify bool
	UserAgent          string
	// Transport replaces the HTTP transport (tests).
	Transport http.RoundTripper
}

// Pusher writes content into a registry the operator names (regmirror
// push-to's site registry): blobs, then manifests byte for byte, so the
// registry serves exactly the digests the cache holds. It is
// go-containerregistry's remote.Pusher (the token dance, monolithic or
// chunked uploads, a HEAD before each blob so present blobs are not sent
// again), one per target so tokens are reused. The target is trusted as
// configured: no address guard applies.
type Pusher struct {
	reg name.Registry
	p   *remote.Pusher
}

// NewPusher validates o. It does no network I/O.
func NewPusher(o PushOptions) (*Pusher, error) {
	u, reg, err := ParseBaseURL(o.URL)
	if err != nil {
		return nil, fmt.Errorf("push target: %w", err)
	}
	rt := o.Transport
	if rt == nil {
		tr := remote.DefaultTransport.(*http.Transport).Clone()
		if tr.TLSClientConfig, err = TLSConfig(o.CAFile, o.InsecureSkipVerify); err != nil {
			return nil, err
		}
		rt = tr
	}
	if u.Scheme == "https" {
		rt = httpsOnly{rt}
	}
	opts := []remote.Option{remote.WithTransport(rt)}
	switch {
	case o.Username != "" || o.Password != "":
		opts = append(opts, remote.WithAuth(authn.FromConfig(authn.AuthConfig{Username: o.Username, Password: o.Password})))
	case o.Keychain != nil:
		opts = append(opts, remote.WithAuthFromKeychain(o.Keychain))
	}
	if o.UserAgent != "" {
		opts = append(opts, remote.WithUserAgent(o.UserAgent))
	}
	p, err := remote.NewPusher(opts...)
	if err != nil {
		return nil, err
	}
	return &Pusher{reg: reg, p: p}, nil
}

// httpsOnly refuses every request that is not over https. go-containerregistry's
// client follows Go's redirect policy, which goes from https to http, and
// takes a token realm or an upload Location as the registry gives them: a
// target configured as https is written only over https, whatever it
// answers, so neither its credentials nor the content cross in clear.
type httpsOnly struct{ inner http.RoundTripper }

func (t httpsOnly) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, refuse("plain http refused for an https push target", "%s %s", req.Method, req.URL.Redacted())
	}
	return t.inner.RoundTrip(req)
}

// Registry is the target's host[:port].
func (p *Pusher) Registry() string { return p.reg.RegistryStr() }

func (p *Pusher) repo(repo string) (name.Repository, error) {
	if !imageref.ValidRepository(repo) {
		return name.Repository{}, fmt.Errorf("%w: repository %q", ErrInvalidName, repo)
	}
	return p.reg.Repo(repo), nil
}

// PutBlob uploads the blob d of size bytes to repo unless the registry
// has it there already; open is called only if it must be sent.
func (p *Pusher) PutBlob(ctx context.Context, repo string, d digest.Digest, size int64, mediaType string, open func() (io.ReadCloser, error)) error {
	r, err := p.repo(repo)
	if err != nil {
		return err
	}
	h, err := v1.NewHash(d.String())
	if err != nil {
		return fmt.Errorf("%w: digest %q: %v", ErrInvalidName, d, err)
	}
	return p.p.Upload(ctx, r, &pushBlob{h: h, size: size, mt: types.MediaType(mediaType), open: open})
}

// PutManifest writes body as repo's manifest ref (a tag, or body's
// digest), with mediaType as its Content-Type. The body is sent as given,
// so its digest is kept.
func (p *Pusher) PutManifest(ctx context.Context, repo, ref, mediaType string, body []byte) error {
	r, err := p.repo(repo)
	if err != nil {
		return err
	}
	d, err := checkRef(ref)
	if err != nil {
		return err
	}
	var nref name.Reference = r.Tag(ref)
	if d != "" {
		if digest.FromBytes(body) != d {
			return errors.New("push: manifest body does not match its digest " + ref)
		}
		nref = r.Digest(ref)
	}
	return p.p.Put(ctx, nref, rawManifest{body: body, mt: types.MediaType(mediaType)})
}

// pushBlob is a blob as remote.Pusher.Upload wants it; content is opened
// only when it is sent.
type pushBlob struct {
	h    v1.Hash
	size int64
	mt   types.MediaType
	open func() (io.ReadCloser, error)
}

func (b *pushBlob) Digest() (v1.Hash, error)             { return b.h, nil }
func (b *pushBlob) DiffID() (v1.Hash, error)             { return b.h, nil } // not used for upload
func (b *pushBlob) Size() (int64, error)                 { return b.size, nil }
func (b *pushBlob) MediaType() (types.MediaType, error)  { return b.mt, nil }
func (b *pushBlob) Compressed() (io.ReadCloser, error)   { return b.open() }
func (b *pushBlob) Uncompressed() (io.ReadCloser, error) { return b.open() }

// rawManifest is a manifest as remote.Pusher.Put wants it.
type rawManifest struct {
	body []byte
	mt   types.MediaType
}

func (m rawManifest) RawManifest() ([]byte, error)        { return m.body, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return m.mt, nil }
