package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/cache"
)

// Verifier is the optional side of Ops that re-hashes the cache: Local
// implements it (Handler then answers POST /_regmirror/verify), and so
// does Client.
type Verifier interface {
	// Verify re-hashes every cached blob at most rate bytes per second
	// (0: unlimited) and removes the ones whose content does not match
	// their digest. progress, if not nil, hears of the bytes read so far
	// and the cache's size when the run started (as total).
	Verify(ctx context.Context, rate int64, progress func(done, total int64)) (VerifyResult, error)
}

var (
	_ Verifier = (*Local)(nil)
	_ Verifier = (*Client)(nil)
)

// VerifyResult reports one verification of the whole cache.
type VerifyResult struct {
	Blobs    int64         `json:"blobs"`    // blobs re-hashed
	Bytes    int64         `json:"bytes"`    // bytes read
	Vanished int64         `json:"vanished"` // evicted while the run went on
	Corrupt  []CorruptBlob `json:"corrupt"`  // found corrupt (or missing), and removed
}

// CorruptBlob is a blob whose content did not match its digest, or whose
// file was missing (Missing). It was removed; Registry and Repo name a
// repository it was seen in (empty if none is known), where it can be
// fetched again.
type CorruptBlob struct {
	Digest    digest.Digest `json:"digest"`
	Size      int64         `json:"size"`
	MediaType string        `json:"media_type"`
	Missing   bool          `json:"missing,omitempty"`
	Registry  string        `json:"registry,omitempty"`
	Repo      string        `json:"repository,omitempty"`
}

// verifyStore is what Local.Verify needs beyond Store.
type verifyStore interface {
	VerifyAll(ctx context.Context, opts cache.VerifyOptions) (cache.VerifyReport, error)
}

// Verify implements Verifier.
func (l *Local) Verify(ctx context.Context, rate int64, progress func(done, total int64)) (VerifyResult, error) {
	vs, ok := l.Store.(verifyStore)
	if !ok {
		return VerifyResult{}, errors.New("admin: this cache cannot verify its content")
	}
	total, _ := l.Store.Usage()
	var done int64
	opts := cache.VerifyOptions{Rate: rate}
	if progress != nil {
		opts.Progress = func(n int64) {
			done += n
			progress(done, total)
		}
	}
	rep, err := vs.VerifyAll(ctx, opts)
	res := VerifyResult{Blobs: rep.Blobs, Bytes: rep.Bytes, Vanished: rep.Vanished}
	where := map[digest.Digest]*CorruptBlob{}
	for _, info := range rep.Corrupt {
		res.Corrupt = append(res.Corrupt, CorruptBlob{Digest: info.Digest, Size: info.Size, MediaType: info.MediaType})
	}
	for _, info := range rep.Missing {
		res.Corrupt = append(res.Corrupt, CorruptBlob{Digest: info.Digest, Size: info.Size, MediaType: info.MediaType, Missing: true})
	}
	for i := range res.Corrupt {
		where[res.Corrupt[i].Digest] = &res.Corrupt[i]
	}
	if len(where) > 0 {
		lerr := l.Store.Links(func(registry, repo string, d digest.Digest) error {
			if c := where[d]; c != nil && c.Repo == "" {
				c.Registry, c.Repo = registry, repo
			}
			return nil
		})
		err = errors.Join(err, lerr)
	}
	for _, c := range res.Corrupt {
		what := "verify: removed a corrupt blob"
		if c.Missing {
			what = "verify: dropped the record of a blob whose file is missing"
		}
		l.log().Warn(what, "digest", c.Digest, "size", c.Size, "registry", c.Registry, "repository", c.Repo)
	}
	return res, err
}

// verifyLine is one line of the streamed answer to POST verify: progress
// lines, then a result or an error.
type verifyLine struct {
	Done   int64         `json:"done,omitempty"`
	Total  int64         `json:"total,omitempty"`
	Result *VerifyResult `json:"result,omitempty"`
	Error  string        `json:"error,omitempty"`
}

// verifyProgressEvery bounds how often progress lines are sent.
const verifyProgressEvery = 200 * time.Millisecond

// serveVerify runs Verify for the request and streams its progress as
// JSON lines, so that a run of hours shows progress and no proxy times it
// out for silence.
func serveVerify(v Verifier) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		rate, err := strconv.ParseInt(r.URL.Query().Get("rate"), 10, 64)
		if r.URL.Query().Get("rate") == "" {
			rate, err = 0, nil
		}
		if err != nil || rate < 0 {
			reply(w, nil, fmt.Errorf("%w: rate %q: want bytes per second", ErrInvalidRef, r.URL.Query().Get("rate")))
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		flusher, _ := w.(http.Flusher)
		enc := json.NewEncoder(w)
		var mu sync.Mutex // progress comes from the verifying goroutine; so does the end
		var last time.Time
		send := func(l verifyLine) {
			mu.Lock()
			defer mu.Unlock()
			enc.Encode(l)
			if flusher != nil {
				flusher.Flush()
			}
		}
		send(verifyLine{}) // headers out at once
		res, err := v.Verify(r.Context(), rate, func(done, total int64) {
			if now := time.Now(); now.Sub(last) >= verifyProgressEvery {
				last = now
				send(verifyLine{Done: done, Total: total})
			}
		})
		if err != nil {
			send(verifyLine{Result: &res, Error: err.Error()})
			return
		}
		send(verifyLine{Result: &res})
	}
}

// Verify implements Verifier: the server verifies its own cache, and this
// client reads its progress as it goes. The request has no time limit
// beyond ctx: a large cache at a low rate takes hours.
func (c *Client) Verify(ctx context.Context, rate int64, progress func(done, total int64)) (VerifyResult, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.BaseURL+PathPrefix+"verify?rate="+strconv.FormatInt(rate, 10), nil)
	if err != nil {
		return VerifyResult{}, err
	}
	resp, err := c.sendUntimed(req)
	if err != nil {
		return VerifyResult{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var eb errorBody
		if json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&eb) == nil && eb.Error != "" {
			if sentinel, ok := errorKinds[eb.Kind]; ok {
				return VerifyResult{}, fmt.Errorf("%w (%s)", sentinel, eb.Error)
			}
			return VerifyResult{}, errors.New(eb.Error)
		}
		return VerifyResult{}, fmt.Errorf("%w: POST verify answered %s", ErrUnavailable, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 64<<20) // the result lists every corrupt blob
	for sc.Scan() {
		var l verifyLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return VerifyResult{}, fmt.Errorf("%w: verify answer: %v", ErrUnavailable, err)
		}
		switch {
		case l.Result != nil && l.Error != "":
			return *l.Result, errors.New(l.Error)
		case l.Result != nil:
			return *l.Result, nil
		case progress != nil && l.Total > 0:
			progress(l.Done, l.Total)
		}
	}
	if err := sc.Err(); err != nil {
		return VerifyResult{}, fmt.Errorf("%w: verify answer cut short: %v", ErrUnavailable, err)
	}
	return VerifyResult{}, fmt.Errorf("%w: verify answer ended without a result", ErrUnavailable)
}
