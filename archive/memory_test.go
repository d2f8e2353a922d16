package archive

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"math/rand"
	"runtime"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
)

const (
	bigBlock  = 1 << 20
	bigBlocks = 64 // a 64 MiB layer
)

// bigSource serves a small manifest and config from memory and a 64 MiB
// layer generated on the fly, recording the largest single Read asked of
// the layer.
type bigSource struct {
	block  []byte
	layer  digest.Digest
	small  map[digest.Digest][]byte
	mu     sync.Mutex
	maxLen int
}

type genReader struct {
	s   *bigSource
	off int64
}

func (g *genReader) Read(p []byte) (int, error) {
	g.s.mu.Lock()
	g.s.maxLen = max(g.s.maxLen, len(p))
	g.s.mu.Unlock()
	if g.off >= bigBlock*bigBlocks {
		return 0, io.EOF
	}
	n := copy(p, g.s.block[g.off%bigBlock:])
	g.off += int64(n)
	return n, nil
}

func (s *bigSource) Open(d digest.Digest) (io.ReadCloser, int64, error) {
	if d == s.layer {
		return io.NopCloser(&genReader{s: s}), bigBlock * bigBlocks, nil
	}
	if b, ok := s.small[d]; ok {
		return io.NopCloser(bytes.NewReader(b)), int64(len(b)), nil
	}
	return nil, 0, fs.ErrNotExist
}

func newBigSource(t testing.TB) (*bigSource, Image) {
	s := &bigSource{block: make([]byte, bigBlock), small: make(map[digest.Digest][]byte)}
	rand.New(rand.NewSource(1)).Read(s.block)
	dg := digest.SHA256.Digester()
	for range bigBlocks {
		dg.Hash().Write(s.block)
	}
	s.layer = dg.Digest()
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	cfgDigest := digest.SHA256.FromBytes(cfg)
	s.small[cfgDigest] = cfg
	m, err := json.Marshal(v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        v1.Descriptor{MediaType: types.OCIConfigJSON, Size: int64(len(cfg)), Digest: hash(t, cfgDigest)},
		Layers:        []v1.Descriptor{{MediaType: types.OCILayer, Size: bigBlock * bigBlocks, Digest: hash(t, s.layer)}},
	})
	must(t, err)
	md := digest.SHA256.FromBytes(m)
	s.small[md] = m
	return s, Image{Ref: "example.com/big:1", Digest: md, MediaType: string(types.OCIManifestSchema1), Size: int64(len(m))}
}

func hash(t testing.TB, d digest.Digest) v1.Hash {
	h, err := v1.NewHash(d.String())
	must(t, err)
	return h
}

// hashSink verifies and discards large blobs, keeps small ones (so the
// completeness check can read manifests back).
type hashSink struct {
	mu    sync.Mutex
	small map[digest.Digest][]byte
	seen  map[digest.Digest]bool
}

func (s *hashSink) Open(d digest.Digest) (io.ReadCloser, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b, ok := s.small[d]; ok {
		return io.NopCloser(bytes.NewReader(b)), int64(len(b)), nil
	}
	return nil, 0, fs.ErrNotExist
}

func (s *hashSink) Put(d digest.Digest, size int64, _ string, r io.Reader) error {
	dg := digest.SHA256.Digester()
	var keep bytes.Buffer
	w := io.Writer(dg.Hash())
	if size <= 1<<16 {
		w = io.MultiWriter(w, &keep)
	}
	n, err := io.CopyBuffer(w, r, make([]byte, 32<<10))
	if err != nil {
		return err
	}
	if n != size || dg.Digest() != d {
		return fmt.Errorf("mismatch")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen[d] = true
	if size <= 1<<16 {
		s.small[d] = keep.Bytes()
	}
	return nil
}

func (s *hashSink) Has(d digest.Digest) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[d]
}

// TestStreaming pushes a 64 MiB layer through Write and Read, connected by
// a pipe, and checks that memory does not grow with it: no Read of the
// layer asks for more than 1 MiB at once, and the whole run allocates far
// less than the layer's size. Not parallel, so that the allocation count
// is this test's own.
func TestStreaming(t *testing.T) {
	s, img := newBigSource(t)
	sink := &hashSink{small: make(map[digest.Digest][]byte), seen: make(map[digest.Digest]bool)}

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)

	pr, pw := io.Pipe()
	var (
		ws   WriteStats
		werr error
		done = make(chan struct{})
	)
	go func() {
		defer close(done)
		ws, werr = Write(t.Context(), pw, s, []Image{img}, nil)
		pw.CloseWithError(werr)
	}()
	imgs, added, rs, err := Read(t.Context(), pr, sink, nil)
	<-done
	runtime.ReadMemStats(&after)

	must(t, werr)
	must(t, err)
	if len(imgs) != 1 || len(added) != 3 || !sink.seen[s.layer] {
		t.Fatalf("imgs %v, added %v", imgs, added)
	}
	if ws.BlobBytes < bigBlock*bigBlocks || rs.Bytes != ws.Bytes {
		t.Fatalf("write %+v, read %+v", ws, rs)
	}
	if s.maxLen > bigBlock {
		t.Errorf("a single Read of the layer asked for %d bytes", s.maxLen)
	}
	const budget = bigBlock * bigBlocks / 4
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > budget {
		t.Errorf("allocated %d bytes moving a %d-byte layer (budget %d)", alloc, bigBlock*bigBlocks, budget)
	} else {
		t.Logf("allocated %d bytes moving a %d-byte layer", alloc, bigBlock*bigBlocks)
	}
}
