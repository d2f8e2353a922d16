package s3tier

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/upstream"
)

// hungStore is an S3 endpoint whose object GETs send their headers and the
// first part of the body, then nothing until the test ends: a store that
// hangs mid-body, with no timing of its own.
func hungStore(t *testing.T, sent []byte, total int) string {
	t.Helper()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/blobs/") {
			http.Error(w, "", http.StatusNotImplemented)
			return
		}
		h := w.Header()
		h.Set("Content-Length", strconv.Itoa(total))
		h.Set("Content-Type", "application/octet-stream")
		h.Set("ETag", `"0123456789abcdef"`)
		h.Set("Last-Modified", time.Now().UTC().Format(http.TimeFormat))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(sent)
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // before Close, which waits for handlers
	return srv.URL
}

// TestStalledBodyFailsUnavailable: an L2 body whose store stops sending
// fails its Read with ErrUnavailable after StallTimeout (so the fill
// resumes from the next source) instead of blocking until the fill's own
// deadline, and L2 is skipped for a while. The clock runs only inside
// Read: a reader that pauses longer than StallTimeout between reads still
// gets the bytes the store sent.
func TestStalledBodyFailsUnavailable(t *testing.T) {
	const stall = 200 * time.Millisecond
	sent := []byte(strings.Repeat("x", 1024))
	endpoint := hungStore(t, sent, 1<<20)
	tier, err := New(Options{
		Endpoint: endpoint, Bucket: "regmirror", AccessKey: "k", SecretKey: "s", PathStyle: true,
		Timeout: 5 * time.Second, StallTimeout: stall,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tier.Close() })
	src := tier.Wrap(&failingNext{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Hour) // a fill's
	defer cancel()
	blob, err := src.GetBlob(ctx, "x/y", digest.FromString("hung"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer blob.Body.Close()

	time.Sleep(2 * stall) // the reader's own pause: not the store's
	got := make([]byte, len(sent))
	if _, err := io.ReadFull(blob.Body, got); err != nil {
		t.Fatalf("the bytes sent, read after a pause longer than the stall timeout: %v", err)
	}

	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, blob.Body)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, upstream.ErrUnavailable) {
			t.Fatalf("stalled body: %v, want ErrUnavailable", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("a body read is still blocked 10s after the store stopped sending (StallTimeout %v)", stall)
	}
	if st := tier.Stats(); !st.Down || st.BreakerOpens != 1 {
		t.Errorf("after a stall: down %v, breaker opens %d; want L2 skipped", st.Down, st.BreakerOpens)
	}
}
