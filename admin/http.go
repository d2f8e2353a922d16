package admin

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
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
}

// pinPart is a step of a pin too large for one request (the server reads
// at most 64 KiB of body). POST pins/parts adds Digests to the staging pin
// Name (creating it); POST pins/move then replaces Name's digests with
// those of the staging pin From, which goes. They are endpoints of their
// own, not fields of a pin request: a server without them answers 404,
// where one that ignored the fields would replace the pin at each part.
type pinPart struct {
	Name    string          `json:"name"`
	Digests []digest.Digest `json:"digests,omitempty"`
	From    string          `json:"from,omitempty"`
	// First marks a run's first part, the only one that may create the
	// staging pin: a later part that finds none (the server restarted
	// meanwhile and dropped it) fails, rather than assemble a partial pin.
	First bool `json:"first,omitempty"`
}

// pinParts assembles a pin sent in parts (see pinPart).
type pinParts interface {
	AddToPin(ctx context.Context, name string, digests []digest.Digest, create bool) error
	MovePin(ctx context.Context, from, to string) error
}

// pinningInfix starts the suffix of a staging pin's name, which a run's
// nonce and ")" end: each run assembles under a name of its own, so two
// clients that pin the same image at once cannot mix (or remove) each
// other's parts. A name that ends in " (pinning)", as a client of an
// earlier release left one, is a staging pin too.
const pinningInfix = " (pinning"

// stagingPin is the name a run of Client.Pin assembles the pin name
// under.
func stagingPin(name string) (string, error) {
	var nonce [8]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return "", err
	}
	return name + pinningInfix + " " + hex.EncodeToString(nonce[:]) + ")", nil
}

// CutPinning returns the pin a staging pin (the one a Client assembles a
// large pin under, "<pin> (pinning <nonce>)") is for, and whether name is
// one. A client killed midway leaves it: unpin given that name removes it.
func CutPinning(name string) (pin string, ok bool) {
	rest, ok := strings.CutSuffix(name, ")")
	i := strings.LastIndex(rest, pinningInfix)
	if !ok || i < 0 {
		return "", false
	}
	nonce := rest[i+len(pinningInfix):]
	if nonce != "" {
		hexNonce, spaced := strings.CutPrefix(nonce, " ")
		if _, err := hex.DecodeString(hexNonce); !spaced || hexNonce == "" || err != nil {
			return "", false
		}
	}
	return rest[:i], true
}

// maxPinBody is the most JSON one pin request carries: well under the
// server's 64 KiB request body limit. A pin larger goes in parts.
const maxPinBody = 60 << 10

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
		reply(w, struct{}{}, ops.Pin(r.Context(), req.Name, req.Digests))
	})
	mux.HandleFunc("POST "+PathPrefix+"pins/parts", servePinParts(ops, addPinPart))
	mux.HandleFunc("POST "+PathPrefix+"pins/move", servePinParts(ops, movePin))
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

// servePinParts answers a step of a pin sent in parts (see pinPart).
func servePinParts(ops Ops, step func(context.Context, pinParts, pinPart) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		parts, ok := ops.(pinParts)
		if !ok {
			reply(w, nil, fmt.Errorf("%w: this server takes a pin in one request only", ErrInvalidRef))
			return
		}
		var req pinPart
		if err := json.NewDecoder(io.LimitReader(r.Body, 16<<20)).Decode(&req); err != nil {
			reply(w, nil, fmt.Errorf("%w: request body: %v", ErrInvalidRef, err))
			return
		}
		reply(w, struct{}{}, step(r.Context(), parts, req))
	}
}

// addPinPart adds a part to a staging pin; only a staging pin takes
// parts, so no step of a pin in parts changes a pin an image has.
func addPinPart(ctx context.Context, parts pinParts, req pinPart) error {
	if _, ok := CutPinning(req.Name); !ok {
		return fmt.Errorf("%w: %q is not a staging pin (\"<pin>%s <nonce>)\")", ErrInvalidRef, req.Name, pinningInfix)
	}
	return parts.AddToPin(ctx, req.Name, req.Digests, req.First)
}

// movePin replaces a pin with the staging pin assembled for it.
func movePin(ctx context.Context, parts pinParts, req pinPart) error {
	if pin, ok := CutPinning(req.From); !ok || pin != req.Name || req.Name == "" {
		return fmt.Errorf("%w: %q is not a staging pin of %q", ErrInvalidRef, req.From, req.Name)
	}
	return parts.MovePin(ctx, req.From, req.Name)
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
			err := fmt.Errorf("%w: %s %s answered %s", ErrUnavailable, method, path, resp.Status)
			if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed {
				return noEndpoint{err}
			}
			return err
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

// noEndpoint is a 404 or 405 without an operation's error: the server
// (of an earlier release) has no such endpoint.
type noEndpoint struct{ error }

func (e noEndpoint) Unwrap() error { return e.error }

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

// Pin implements Ops. A pin whose request would exceed maxPinBody is
// assembled under a staging pin of this run's own (see CutPinning), a
// part at a time, and then moved onto name in one step: the old pin of
// that name holds its digests until the new one is whole, and a failure
// midway leaves it as it was. A server too old for parts is sent the one
// request, which it refuses if too large (413): an error, never a pin
// emptied or cut short.
func (c *Client) Pin(ctx context.Context, name string, digests []digest.Digest) error {
	body, err := json.Marshal(pinRequest{Name: name, Digests: digests})
	if err != nil {
		return err
	}
	if len(body) <= maxPinBody {
		return c.do(ctx, http.MethodPost, PathPrefix+"pins", json.RawMessage(body), nil)
	}
	err = c.pinInParts(ctx, name, digests)
	if errors.As(err, new(noEndpoint)) {
		return c.do(ctx, http.MethodPost, PathPrefix+"pins", json.RawMessage(body), nil)
	}
	return err
}

// pinInParts sends a pin in parts. It fails with noEndpoint, and has
// changed nothing, when the server has no endpoint for parts.
func (c *Client) pinInParts(ctx context.Context, name string, digests []digest.Digest) error {
	staging, err := stagingPin(name)
	if err != nil {
		return err
	}
	nameJSON, err := json.Marshal(staging)
	if err != nil {
		return err
	}
	// Room for the part's digests: the staging name and the JSON around
	// them take the rest.
	room := maxPinBody - len(nameJSON) - 64
	for i, rest := 0, digests; len(rest) > 0; i++ {
		n, size := 1, len(rest[0])+3
		for ; n < len(rest) && size+len(rest[n])+3 <= room; n++ {
			size += len(rest[n]) + 3
		}
		err = c.do(ctx, http.MethodPost, PathPrefix+"pins/parts", pinPart{Name: staging, Digests: rest[:n], First: i == 0}, nil)
		if err != nil && i == 0 && errors.As(err, new(noEndpoint)) {
			return err // nothing assembled
		}
		if err != nil {
			break
		}
		rest = rest[n:]
	}
	if err == nil {
		err = c.do(ctx, http.MethodPost, PathPrefix+"pins/move", pinPart{Name: name, From: staging}, nil)
	}
	if err == nil {
		return nil
	}
	// What was assembled goes (best effort, even when ctx is done). The
	// name is this run's alone: no other run's parts go with it.
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	_ = c.Unpin(uctx, staging)
	if ne := (noEndpoint{}); errors.As(err, &ne) {
		return ne.error // not for Pin to send the pin whole after all
	}
	return err
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
