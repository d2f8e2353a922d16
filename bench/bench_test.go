package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/internal/testprocess"
	"github.com/regmirror/regmirror/internal/testupstream"
	"github.com/regmirror/regmirror/upstream"
)

const (
	gib = int64(1) << 30
	mib = int64(1) << 20
)

// blobSize is the large blob of the issue; REGMIRROR_BENCH_BLOB_MIB shrinks
// it for a quick run.
func blobSize() int64 {
	var n int64
	if _, err := fmt.Sscan(os.Getenv("REGMIRROR_BENCH_BLOB_MIB"), &n); err == nil && n > 0 {
		return n * mib
	}
	return gib
}

var client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}}

// download GETs url and discards the body, checking its length.
func download(url string, want int64) error {
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 || n != want {
		return fmt.Errorf("GET %s: status %d, %d bytes, want %d", url, resp.StatusCode, n, want)
	}
	return nil
}

// BenchmarkWarmBlob: one client downloads a cached blob (1 GiB by default)
// from regmirror, and the same file from a plain net/http file server
// (http.ServeContent, which uses sendfile) as the baseline.
func BenchmarkWarmBlob(b *testing.B) {
	size := blobSize()
	up := testupstream.Start(b)
	_, d := up.PushLargeBlobImage(b, "library/big", "latest", size)
	dataDir := b.TempDir()
	proc := testprocess.Serve(b, false, "--data-dir", dataDir, "--upstream-url", up.URL())
	url := proc.URL + "/v2/library/big/blobs/" + d.String()
	if err := download(url, size); err != nil { // warm the cache
		b.Fatal(err)
	}
	blobFile := filepath.Join(dataDir, "blobs", "sha256", d.Encoded()[:2], d.Encoded())
	waitFor(b, func() bool { _, err := os.Stat(blobFile); return err == nil })

	b.Run("regmirror", func(b *testing.B) {
		b.SetBytes(size)
		for i := 0; i < b.N; i++ {
			if err := download(url, size); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("net-http-sendfile", func(b *testing.B) {
		base := serveFile(b, blobFile)
		b.SetBytes(size)
		for i := 0; i < b.N; i++ {
			if err := download(base, size); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// serveFile serves one file with net/http on loopback: the baseline.
func serveFile(b *testing.B, path string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Open(path)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer f.Close()
		fi, _ := f.Stat()
		http.ServeContent(w, r, "", fi.ModTime(), f)
	})}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String() + "/blob"
}

// BenchmarkColdFirstByte: time to the first byte of a blob nobody fetched
// before, through regmirror and straight from the upstream (with a warm
// token in both cases). ns/op is the first-byte latency.
func BenchmarkColdFirstByte(b *testing.B) {
	const size = 8 << 20
	up := testupstream.Start(b)
	push := func(i int) digest.Digest {
		_, d := up.PushLargeBlobImage(b, "library/cold", fmt.Sprint("t", i), size)
		return d
	}
	firstByte := func(get func(digest.Digest) (io.ReadCloser, error), b *testing.B) {
		warm := push(-1) // token, connections
		rc, err := get(warm)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, rc)
		rc.Close()
		var total time.Duration
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			d := push(i)
			b.StartTimer()
			start := time.Now()
			rc, err := get(d)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := rc.Read(make([]byte, 1)); err != nil {
				b.Fatal(err)
			}
			total += time.Since(start)
			b.StopTimer()
			io.Copy(io.Discard, rc)
			rc.Close()
			b.StartTimer()
		}
		b.ReportMetric(float64(total.Microseconds())/float64(b.N), "µs-first-byte")
	}
	b.Run("regmirror", func(b *testing.B) {
		proc := testprocess.Serve(b, false, "--data-dir", b.TempDir(), "--upstream-url", up.URL())
		firstByte(func(d digest.Digest) (io.ReadCloser, error) {
			resp, err := client.Get(proc.URL + "/v2/library/cold/blobs/" + d.String())
			if err != nil {
				return nil, err
			}
			return resp.Body, nil
		}, b)
	})
	b.Run("upstream-direct", func(b *testing.B) {
		reg, err := upstream.New(upstream.Options{Name: "docker.io", URL: up.URL()})
		if err != nil {
			b.Fatal(err)
		}
		firstByte(func(d digest.Digest) (io.ReadCloser, error) {
			blob, err := reg.GetBlob(context.Background(), "library/cold", d, 0)
			if err != nil {
				return nil, err
			}
			return blob.Body, nil
		}, b)
	})
}

// clients is how many clients BenchmarkTenClientsColdBlob runs: 10, or
// REGMIRROR_BENCH_CLIENTS.
func clients() int {
	var n int
	if _, err := fmt.Sscan(os.Getenv("REGMIRROR_BENCH_CLIENTS"), &n); err == nil && n > 0 {
		return n
	}
	return 10
}

// BenchmarkTenClientsColdBlob: ten clients pull one cold blob (1 GiB by
// default) at once through a fresh regmirror; reports the process's peak
// RSS and the upstream GETs (want 1).
func BenchmarkTenClientsColdBlob(b *testing.B) {
	size := blobSize()
	n := clients()
	up := testupstream.Start(b)
	_, d := up.PushLargeBlobImage(b, "library/big", "latest", size)
	var peak int64
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		proc := testprocess.Serve(b, false, "--data-dir", b.TempDir(), "--upstream-url", up.URL())
		url := proc.URL + "/v2/library/big/blobs/" + d.String()
		b.StartTimer()
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for c := 0; c < n; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- download(url, size)
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		rss, err := proc.PeakRSS()
		if err != nil {
			b.Fatal(err)
		}
		peak = max(peak, rss)
		proc.Kill()
	}
	b.SetBytes(int64(n) * size)
	b.ReportMetric(float64(peak)/float64(mib), "peak-RSS-MiB")
	b.ReportMetric(float64(up.BlobGETs(d))/float64(b.N), "upstream-GETs/op")
}

func waitFor(b *testing.B, cond func() bool) {
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			b.Fatal("timed out")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
