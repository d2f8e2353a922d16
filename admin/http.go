package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// PathPrefix is where a server answers the operations.
const PathPrefix = "/_regmirror/"

// errorBody is how an operation's failure crosses HTTP.
type errorBody struct {
	Error string `json:"error"`
	Kind  string `json:"kind,omitempty"` // not_cached, invalid_ref, no_such_pin
}

var errorKinds = map[string]error{
	"unauthorized": ErrUnauthorized,
	"not_cached":   ErrNotCached,
	"invalid_ref":  ErrInvalidRef,
	"no_such_pin":  ErrNoSuchPin,
}

type pinRequest struct {
	Name    string          `json:"name"`
	Digests []digest.Digest `json:"digests,omitempty"`
	Ref     string          `json:"ref,omitempty"` // resolve this reference instead
	// A pin too large for one request (the server reads at most 64 KiB of
	// body) is sent in parts: Add adds Digests to the pin called Name, and
	// From then replaces Name's digests with the pin From's, which goes.
	Add  bool   `json:"add,omitempty"`
	From string `json:"from,omitempty"`
}

// pinParts assembles a pin sent in parts (pinRequest.Add, From).
type pinParts interface {
	AddToPin(ctx context.Context, name string, digests []digest.Digest) error
	MovePin(ctx context.Context, from, to string) error
}

// PinningSuffix ends the name of the pin a Client assembles a large pin
// under (see Client.Pin). A client killed midway leaves it; unpin given
// the name removes it, and so does the next such pin of that name.
const PinningSuffix = " (pinning)"

// pinChunk is the most digests one pin request carries: ~38 KiB of JSON,
// well under the server's 64 KiB request body limit.
const pinChunk = 512

// Handler answers the operations over HTTP for requests that carry token
// (see TokenFile). The caller may restrict further who reaches it (the
// proxy: loopback clients only).
func Handler(ops Ops, token string) http.Handler {
	return requireToken(token, OpenHandler(ops))
}

// OpenHandler answers the operations for every request that reaches it:
// the caller has established who the client is (the proxy: a user access
// control names an admin, over TLS).
func OpenHandler(ops Ops) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PathPrefix+"usage", func(w http.ResponseWriter, r *http.Request) {
		top, _ := strconv.Atoi(r.URL.Query().Get("top"))
		if r.URL.Query().Get("top") == "" {
			top = 10
		}
		u, err := ops.Usage(r.Context(), top)
		reply(w, u, err)
	})
	mux.HandleFunc("POST "+PathPrefix+"gc", func(w http.ResponseWriter, r *http.Request) {
		res, err := ops.GC(r.Context())
		reply(w, res, err)
	})
	mux.HandleFunc("GET "+PathPrefix+"images", func(w http.ResponseWriter, r *http.Request) {
		imgs, err := ops.Images(r.Context())
		reply(w, imgs, err)
	})
	mux.HandleFunc("POST "+PathPrefix+"pins", func(w http.ResponseWriter, r *http.Request) {
		var req pinRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 16<<20)).Decode(&req); err != nil {
			reply(w, nil, fmt.Errorf("%w: request body: %v", ErrInvalidRef, err))
			return
		}
		if req.Ref != "" {
			res, err := ops.PinRef(r.Context(), req.Ref)
			reply(w, res, err)
			return
		}
		if req.Name == "" {
			reply(w, nil, fmt.Errorf("%w: a pin needs a name", ErrInvalidRef))
			return
		}
		reply(w, struct{}{}, pin(r.Context(), ops, req))
	})
	mux.HandleFunc("DELETE "+PathPrefix+"pins", func(w http.ResponseWriter, r *http.Request) {
		reply(w, struct{}{}, ops.Unpin(r.Context(), r.URL.Query().Get("name")))
	})
	if p, ok := ops.(Purger); ok {
		mux.HandleFunc("POST "+PathPrefix+"purge", servePurge(p))
	}
	if bo, ok := ops.(BlobOpener); ok {
		mux.HandleFunc("GET "+PathPrefix+"blobs/{digest}", serveBlob(bo))
	}
	if v, ok := ops.(Verifier); ok {
		mux.HandleFunc("POST "+PathPrefix+"verify", serveVerify(v))
	}
	return mux
}

// pin carries out a pin request that names its digests, whole or in parts.
func pin(ctx context.Context, ops Ops, req pinRequest) error {
	if !req.Add && req.From == "" {
		return ops.Pin(ctx, req.Name, req.Digests)
	}
	parts, ok := ops.(pinParts)
	switch {
	case !ok:
		return fmt.Errorf("%w: this server takes a pin in one request only", ErrInvalidRef)
	case req.Add && req.From != "":
		return fmt.Errorf("%w: a pin request both adds and moves", ErrInvalidRef)
	case req.Add:
		return parts.AddToPin(ctx, req.Name, req.Digests)
	default:
		return parts.MovePin(ctx, req.From, req.Name)
	}
}

func reply(w http.ResponseWriter, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		status, kind := http.StatusInternalServerError, ""
		for k, sentinel := range errorKinds {
			if errors.Is(err, sentinel) {
				kind = k
				switch sentinel {
				case ErrInvalidRef:
					status = http.StatusBadRequest
				case ErrUnauthorized:
					status = http.StatusUnauthorized
				default:
					status = http.StatusNotFound
				}
			}
		}
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(errorBody{Error: err.Error(), Kind: kind})
		return
	}
	json.NewEncoder(w).Encode(v)
}

// Client runs the operations on a server over HTTP.
type Client struct {
	// BaseURL is the server, e.g. "http://127.0.0.1:5000".
	BaseURL string
	// Token is the server's management token (ReadToken).
	Token string
	// Username and Password, when Username is set, are sent instead of
	// the token: a remote admin of a server with access control.
	Username, Password string
	HTTP               *http.Client
}

var _ Ops = (*Client)(nil)

// NewClient returns a Client for the server at base, which wrote token.
func NewClient(base, token string) *Client {
	return &Client{BaseURL: strings.TrimRight(base, "/"), Token: token, HTTP: &http.Client{Timeout: time.Hour}}
}

// Authorize adds the client's credentials to req: an admin's password
// when Username is set, else the token.
func (c *Client) Authorize(req *http.Request) {
	if c.Username != "" {
		req.SetBasicAuth(c.Username, c.Password)
	} else if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
}

// send does req with the client's credentials, within the client's
// timeout.
func (c *Client) send(req *http.Request) (*http.Response, error) {
	return c.sendWith(c.HTTP, req)
}

// sendUntimed is send for a request whose answer may take hours (a
// verify of a large cache, a blob of many GiB read at the pace of a slow
// push): it has no limit but req's context.
func (c *Client) sendUntimed(req *http.Request) (*http.Response, error) {
	hc := *c.HTTP
	hc.Timeout = 0
	return c.sendWith(&hc, req)
}

func (c *Client) sendWith(hc *http.Client, req *http.Request) (*http.Response, error) {
	c.Authorize(req)
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w at %s: %v", ErrUnavailable, c.BaseURL, err)
	}
	return resp, nil
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var eb errorBody
		if json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&eb) != nil || eb.Error == "" {
			return fmt.Errorf("%w: %s %s answered %s", ErrUnavailable, method, path, resp.Status)
		}
		if sentinel, ok := errorKinds[eb.Kind]; ok {
			return kindError{sentinel, eb.Error}
		}
		return errors.New(eb.Error)
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// kindError is a server's error as its text says it, matching its
// sentinel with errors.Is. The server's text already starts with the
// sentinel's; it is not said twice.
type kindError struct {
	sentinel error
	msg      string
}

func (e kindError) Error() string {
	if strings.Contains(e.msg, e.sentinel.Error()) {
		return e.msg
	}
	return e.sentinel.Error() + ": " + e.msg
}

func (e kindError) Unwrap() error { return e.sentinel }

// Usage implements Ops.
func (c *Client) Usage(ctx context.Context, top int) (Usage, error) {
	var u Usage
	err := c.do(ctx, http.MethodGet, PathPrefix+"usage?top="+strconv.Itoa(top), nil, &u)
	return u, err
}

// GC implements Ops.
func (c *Client) GC(ctx context.Context) (GCResult, error) {
	var res GCResult
	err := c.do(ctx, http.MethodPost, PathPrefix+"gc", nil, &res)
	return res, err
}

// Images implements Ops.
func (c *Client) Images(ctx context.Context) ([]Image, error) {
	var imgs []Image
	err := c.do(ctx, http.MethodGet, PathPrefix+"images", nil, &imgs)
	return imgs, err
}

// Pin implements Ops. A pin of more than pinChunk digests is assembled
// under a pin of its own (name+PinningSuffix), a part at a time, and then
// moved onto name in one step: the old pin of that name holds its digests
// until the new one is whole, and a failure midway leaves it as it was.
func (c *Client) Pin(ctx context.Context, name string, digests []digest.Digest) error {
	if len(digests) <= pinChunk {
		return c.postPin(ctx, pinRequest{Name: name, Digests: digests})
	}
	staging := name + PinningSuffix
	err := c.postPin(ctx, pinRequest{Name: staging, Digests: digests[:pinChunk]})
	for rest := digests[pinChunk:]; err == nil && len(rest) > 0; {
		part := rest[:min(len(rest), pinChunk)]
		rest = rest[len(part):]
		err = c.postPin(ctx, pinRequest{Name: staging, Digests: part, Add: true})
	}
	if err == nil {
		return c.postPin(ctx, pinRequest{Name: name, From: staging})
	}
	// What was assembled goes (best effort, even when ctx is done); one
	// left behind is replaced by the next pin of name that comes in parts.
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	_ = c.Unpin(uctx, staging)
	return err
}

func (c *Client) postPin(ctx context.Context, req pinRequest) error {
	return c.do(ctx, http.MethodPost, PathPrefix+"pins", req, nil)
}

// PinRef implements Ops.
func (c *Client) PinRef(ctx context.Context, ref string) (PinResult, error) {
	var res PinResult
	err := c.do(ctx, http.MethodPost, PathPrefix+"pins", pinRequest{Ref: ref}, &res)
	return res, err
}

// Unpin implements Ops.
func (c *Client) Unpin(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, PathPrefix+"pins?name="+url.QueryEscape(name), nil, nil)
}
