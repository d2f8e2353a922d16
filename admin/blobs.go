package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"strconv"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/archive"
	"github.com/regmirror/regmirror/imageref"
)

// BlobOpener is the optional side of Ops that reads cached content by
// digest, never from upstream: export uses it. A missing blob is an error
// for which errors.Is(err, fs.ErrNotExist) holds. Local implements it, and
// Handler then answers GET and HEAD /_regmirror/blobs/<digest>.
type BlobOpener interface {
	OpenBlob(d digest.Digest) (io.ReadCloser, int64, error)
}

var _ BlobOpener = (*Local)(nil)

// OpenBlob implements BlobOpener.
func (l *Local) OpenBlob(d digest.Digest) (io.ReadCloser, int64, error) {
	return Source{l.Store}.Open(d)
}

// serveBlob streams one cached blob: headers first, then the body through
// Flush, so that a layer of many GiB is never held in memory.
func serveBlob(bo BlobOpener) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		d, err := imageref.ParseDigest(r.PathValue("digest"))
		if err != nil {
			reply(w, nil, fmt.Errorf("%w: %v", ErrInvalidRef, err))
			return
		}
		rc, size, err := bo.OpenBlob(d)
		if errors.Is(err, fs.ErrNotExist) {
			reply(w, nil, fmt.Errorf("%w: blob %s", ErrNotCached, d))
			return
		}
		if err != nil {
			reply(w, nil, err)
			return
		}
		defer rc.Close()
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		w.Header().Set("Docker-Content-Digest", d.String())
		if r.Method == http.MethodHead {
			return
		}
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		_, _ = io.Copy(w, rc)
	}
}

// BlobSource reads the server's cached content for archive.Write. Open
// asks with a HEAD; the GET is sent on the first Read, so the probes that
// Write makes before it streams cost no transfer.
func (c *Client) BlobSource(ctx context.Context) archive.BlobSource {
	return clientSource{c: c, ctx: ctx}
}

type clientSource struct {
	c   *Client
	ctx context.Context
}

func (s clientSource) url(d digest.Digest) string {
	return s.c.BaseURL + PathPrefix + "blobs/" + d.String()
}

// Open implements archive.BlobSource.
func (s clientSource) Open(d digest.Digest) (io.ReadCloser, int64, error) {
	resp, err := s.request(http.MethodHead, d)
	if err != nil {
		return nil, 0, err
	}
	resp.Body.Close()
	if resp.ContentLength < 0 {
		return nil, 0, fmt.Errorf("%w: HEAD %s: no Content-Length", ErrUnavailable, s.url(d))
	}
	return &lazyBody{s: s, d: d}, resp.ContentLength, nil
}

func (s clientSource) request(method string, d digest.Digest) (*http.Response, error) {
	req, err := http.NewRequestWithContext(s.ctx, method, s.url(d), nil)
	if err != nil {
		return nil, err
	}
	// A body is read at the pace of whatever it goes to (an export's
	// disk, push-to's remote registry): a layer of many GiB may take
	// hours, so only ctx bounds it.
	resp, err := s.c.sendUntimed(req)
	if err != nil {
		return nil, err
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return resp, nil
	case http.StatusNotFound:
		resp.Body.Close()
		return nil, fmt.Errorf("%w: blob %s is not cached", fs.ErrNotExist, d)
	}
	resp.Body.Close()
	return nil, fmt.Errorf("%w: %s %s answered %s", ErrUnavailable, method, s.url(d), resp.Status)
}

// lazyBody sends its GET on the first Read.
type lazyBody struct {
	s    clientSource
	d    digest.Digest
	resp *http.Response
}

func (b *lazyBody) Read(p []byte) (int, error) {
	if b.resp == nil {
		resp, err := b.s.request(http.MethodGet, b.d)
		if err != nil {
			return 0, err
		}
		b.resp = resp
	}
	return b.resp.Body.Read(p)
}

func (b *lazyBody) Close() error {
	if b.resp == nil {
		return nil
	}
	return b.resp.Body.Close()
}
