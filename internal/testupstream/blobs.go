package testupstream

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
)

// diskBlobs is pkg/registry's blob store: files named by digest. Unlike
// registry.NewDiskBlobHandler, whose Stat re-hashes the whole file on every
// HEAD and GET (seconds for a 1 GiB layer), Stat here is an os.Stat: content
// is verified once, when it is written.
type diskBlobs struct{ dir string }

var (
	_ registry.BlobHandler       = (*diskBlobs)(nil)
	_ registry.BlobStatHandler   = (*diskBlobs)(nil)
	_ registry.BlobPutHandler    = (*diskBlobs)(nil)
	_ registry.BlobDeleteHandler = (*diskBlobs)(nil)
)

func (b *diskBlobs) path(h v1.Hash) string { return filepath.Join(b.dir, h.Algorithm, h.Hex) }

func (b *diskBlobs) Stat(_ context.Context, _ string, h v1.Hash) (int64, error) {
	fi, err := os.Stat(b.path(h))
	if errors.Is(err, os.ErrNotExist) {
		return 0, registry.ErrNotFound
	}
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

func (b *diskBlobs) Get(_ context.Context, _ string, h v1.Hash) (io.ReadCloser, error) {
	f, err := os.Open(b.path(h))
	if errors.Is(err, os.ErrNotExist) {
		return nil, registry.ErrNotFound
	}
	return f, err
}

// Put stores rc, which pkg/registry has wrapped in a verifying reader.
func (b *diskBlobs) Put(_ context.Context, _ string, h v1.Hash, rc io.ReadCloser) error {
	defer rc.Close()
	f, err := os.CreateTemp(b.dir, "upload-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := io.Copy(f, rc); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(b.path(h)), 0o755); err != nil {
		return err
	}
	return os.Rename(f.Name(), b.path(h))
}

func (b *diskBlobs) Delete(_ context.Context, _ string, h v1.Hash) error {
	return os.Remove(b.path(h))
}

// putStream stores r without pkg/registry (which buffers chunked uploads in
// memory), hashing as it writes; it returns the digest and size.
func (b *diskBlobs) putStream(r io.Reader) (v1.Hash, int64, error) {
	f, err := os.CreateTemp(b.dir, "stream-*")
	if err != nil {
		return v1.Hash{}, 0, err
	}
	defer os.Remove(f.Name())
	hw := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, hw), r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return v1.Hash{}, 0, err
	}
	h := v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", hw.Sum(nil))}
	if err := os.MkdirAll(filepath.Dir(b.path(h)), 0o755); err != nil {
		return v1.Hash{}, 0, err
	}
	return h, n, os.Rename(f.Name(), b.path(h))
}

// parseRange parses a single-range "bytes=" header against size. ok=false
// means "ignore the header" (absent, multi-range or not bytes: serve 200);
// err != nil means 416.
func parseRange(h string, size int64) (start, end int64, ok bool, err error) {
	spec, found := strings.CutPrefix(h, "bytes=")
	if h == "" || !found || strings.Contains(spec, ",") {
		return 0, 0, false, nil
	}
	a, b, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return 0, 0, false, errors.New("bad range")
	}
	switch {
	case a == "": // suffix: last b bytes
		n, perr := strconv.ParseInt(b, 10, 64)
		if perr != nil || n <= 0 || size == 0 {
			return 0, 0, false, errors.New("bad range")
		}
		return max(0, size-n), size - 1, true, nil
	default:
		s, perr := strconv.ParseInt(a, 10, 64)
		if perr != nil || s < 0 || s >= size {
			return 0, 0, false, errors.New("unsatisfiable range")
		}
		e := size - 1
		if b != "" {
			e, perr = strconv.ParseInt(b, 10, 64)
			if perr != nil || e < s {
				return 0, 0, false, errors.New("bad range")
			}
			e = min(e, size-1)
		}
		return s, e, true, nil
	}
}

// serveBlob answers a blob GET (after auth and counting), with Range and the
// body faults.
func (s *Server) serveBlob(w http.ResponseWriter, r *http.Request, d digest.Digest, f faults) {
	h, err := v1.NewHash(d.String())
	if err != nil {
		writeRegistryError(w, http.StatusBadRequest, "DIGEST_INVALID", "invalid digest")
		return
	}
	file, err := os.Open(s.blobs.path(h))
	if err != nil {
		writeRegistryError(w, http.StatusNotFound, "BLOB_UNKNOWN", "blob unknown to registry")
		return
	}
	defer file.Close()
	fi, err := file.Stat()
	if err != nil {
		writeRegistryError(w, http.StatusInternalServerError, "UNKNOWN", err.Error())
		return
	}
	size := fi.Size()

	hdr := w.Header()
	hdr.Set("Content-Type", "application/octet-stream")
	hdr.Set("Docker-Content-Digest", d.String())
	hdr.Set("Etag", `"`+d.String()+`"`)
	hdr.Set("Accept-Ranges", "bytes")

	start, end, partial, err := parseRange(r.Header.Get("Range"), size)
	if err != nil {
		hdr.Set("Content-Range", fmt.Sprintf("bytes */%d", size))
		writeRegistryError(w, http.StatusRequestedRangeNotSatisfiable, "BLOB_UNKNOWN", err.Error())
		return
	}
	status := http.StatusOK
	if partial {
		status = http.StatusPartialContent
		hdr.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, size))
	} else {
		start, end = 0, size-1
	}
	length := end - start + 1

	// Gate: decided when the request arrives.
	head := int64(-1) // -1: no hold
	g := s.gate(d)
	if g != nil {
		h := g.arrive()
		if !g.isOpen() {
			head = min(h, length)
		}
	}

	if head >= 0 && g.holdsHeaders() {
		(&blobWriter{ctx: r.Context(), closing: s.closing, gate: g}).wait()
	}
	announced := length
	if f.lying && !partial { // LieBlobLength
		announced, length = f.lieLength, min(length, f.lieLength)
	}
	hdr.Set("Content-Length", strconv.FormatInt(announced, 10))
	w.WriteHeader(status)

	bw := &blobWriter{
		w:       w,
		ctx:     r.Context(),
		closing: s.closing,
		pos:     start,
		cut:     f.cutAfter,
		flip:    -1,
		hold:    head,
		gate:    g,
	}
	if f.corrupt && size > 0 {
		bw.flip = size - 1
	}
	bw.trickle, bw.every = s.takeTrickle()
	if head == 0 {
		bw.flush()
		bw.wait()
	}
	if _, err := io.Copy(bw, io.NewSectionReader(file, start, length)); err != nil {
		panic(http.ErrAbortHandler) // cut or client gone: close the connection
	}
	if announced > length {
		bw.flush()
		panic(http.ErrAbortHandler) // a lying length: end short of it
	}
}

// blobWriter writes a blob body applying the faults: it flips the byte at
// absolute offset flip, holds after hold bytes until the gate opens, and
// closes the connection after cut bytes.
type blobWriter struct {
	w       http.ResponseWriter
	ctx     context.Context
	closing <-chan struct{}
	pos     int64 // absolute blob offset of the next byte
	written int64 // bytes of this response written
	cut     int64
	flip    int64
	hold    int64
	gate    *Gate
	trickle int           // > 0: write at most this many bytes per interval
	every   time.Duration // the trickle's interval
}

var errFault = errors.New("testupstream: fault")

func (b *blobWriter) flush() {
	if f, ok := b.w.(http.Flusher); ok {
		f.Flush()
	}
}

// wait blocks until the gate opens; it panics (closing the connection) if
// the client leaves or the server closes first.
func (b *blobWriter) wait() {
	select {
	case <-b.gate.opened:
	case <-b.ctx.Done():
		panic(http.ErrAbortHandler)
	case <-b.closing:
		panic(http.ErrAbortHandler)
	}
}

// sleep waits d between trickled chunks; it panics (closing the connection)
// if the client leaves or the server closes first.
func (b *blobWriter) sleep(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-b.ctx.Done():
		panic(http.ErrAbortHandler)
	case <-b.closing:
		panic(http.ErrAbortHandler)
	}
}

func (b *blobWriter) Write(p []byte) (int, error) {
	total := 0
	for len(p) > 0 {
		chunk := p
		// Stop at the next event boundary: hold point or cut point.
		if b.hold > b.written && b.written+int64(len(chunk)) > b.hold {
			chunk = chunk[:b.hold-b.written]
		}
		if b.cut >= 0 && b.written+int64(len(chunk)) > b.cut {
			chunk = chunk[:b.cut-b.written]
		}
		if b.trickle > 0 && len(chunk) > b.trickle {
			chunk = chunk[:b.trickle]
		}
		if len(chunk) > 0 {
			if b.flip >= b.pos && b.flip < b.pos+int64(len(chunk)) {
				c := append([]byte(nil), chunk...)
				c[b.flip-b.pos] ^= 0xff
				if _, err := b.w.Write(c); err != nil {
					return total, err
				}
			} else if _, err := b.w.Write(chunk); err != nil {
				return total, err
			}
			b.written += int64(len(chunk))
			b.pos += int64(len(chunk))
			total += len(chunk)
			p = p[len(chunk):]
		}
		if b.trickle > 0 && len(chunk) > 0 {
			b.flush()
			b.sleep(b.every)
		}
		if b.hold > 0 && b.written == b.hold {
			b.flush()
			b.wait()
			b.hold = -1
		}
		if b.cut >= 0 && b.written >= b.cut && len(p) > 0 {
			b.flush()
			return total, errFault
		}
	}
	return total, nil
}
