package proxy

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/cache"
	"github.com/regmirror/regmirror/internal/testupstream"
	"github.com/regmirror/regmirror/upstream"
)

// readOdd reads r through buffers of changing small sizes, as a slow or
// fragmented client connection would.
func readOdd(r io.Reader) ([]byte, error) {
	var out bytes.Buffer
	for i := 0; ; i++ {
		buf := make([]byte, 1+i%7)
		if i%50 == 0 {
			buf = make([]byte, 64<<10)
		}
		n, err := r.Read(buf)
		out.Write(buf[:n])
		if err == io.EOF {
			return out.Bytes(), nil
		}
		if err != nil {
			return out.Bytes(), err
		}
	}
}

func TestPassThrough(t *testing.T) {
	const size = 1<<20 + 3
	up := testupstream.Start(t)
	_, d := up.PushLargeBlobImage(t, "library/big", "latest", size)
	want, _ := io.ReadAll(testupstream.LargeBlobReader("library/big:latest", size))
	reg, err := upstream.New(upstream.Options{Name: "docker.io", URL: up.URL()})
	if err != nil {
		t.Fatal(err)
	}
	store, err := cache.Open(cache.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	s, err := New(Options{Registries: []Upstream{reg}, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	rq := request{up: reg, registry: "docker.io", repo: "library/big", ref: reference{digest: d}}

	t.Run("whole blob through tiny reads", func(t *testing.T) {
		p, err := s.newPassThrough(rq, nil, 0, -1, size)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		got, err := readOdd(p)
		if err != nil || digest.FromBytes(got) != d {
			t.Fatalf("got %d bytes, digest %s, err %v", len(got), digest.FromBytes(got), err)
		}
	})
	t.Run("the rest after a local prefix", func(t *testing.T) {
		const from = 300000
		p, err := s.newPassThrough(rq, bytes.NewReader(want[:from]), from, -1, size)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		got, err := readOdd(p)
		if err != nil || !bytes.Equal(got, want[from:]) {
			t.Fatalf("got %d bytes, err %v", len(got), err)
		}
	})
	t.Run("a range short of the end", func(t *testing.T) {
		p, err := s.newPassThrough(rq, nil, 1000, 5000, size)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		got, err := readOdd(p)
		if err != nil || !bytes.Equal(got, want[1000:5000]) {
			t.Fatalf("got %d bytes, err %v", len(got), err)
		}
	})
	t.Run("corrupt upstream never yields the whole body", func(t *testing.T) {
		up.CorruptBlobs(true)
		defer up.CorruptBlobs(false)
		p, err := s.newPassThrough(rq, nil, 0, -1, size)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		got, err := readOdd(p)
		if !errors.Is(err, cache.ErrDigestMismatch) {
			t.Fatalf("err = %v, want a digest mismatch", err)
		}
		if len(got) >= size {
			t.Fatalf("client received %d of %d bytes of a corrupt blob", len(got), size)
		}
	})
}
