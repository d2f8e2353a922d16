package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	digest "github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/internal/testlog"
)

// blob returns n pseudo-random bytes (seeded) and their digest.
func blob(n int, seed uint64) ([]byte, digest.Digest) {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	sum := sha256.Sum256(b)
	return b, digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(sum[:]))
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer = testlog.Buffer

func testLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// openStore opens a Store in dir (a new temp dir if empty) and closes it at
// the end of the test.
func openStore(t *testing.T, dir string, mod ...func(*Options)) *Store {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	opts := Options{Dir: dir, Logger: testLogger(io.Discard), AccessFlushInterval: time.Hour}
	for _, m := range mod {
		m(&opts)
	}
	s, err := Open(opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mustPut(t *testing.T, s *Store, data []byte, d digest.Digest, mt string) BlobInfo {
	t.Helper()
	info, err := s.Put(d, mt, data)
	if err != nil {
		t.Fatalf("Put(%s): %v", d, err)
	}
	return info
}

// files lists the regular files under root, relative to it.
func files(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.IsDir() {
			rel, _ := filepath.Rel(root, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func blobFile(s *Store, d digest.Digest) string {
	return filepath.Join(s.Dir(), "blobs", "sha256", d.Encoded()[:2], d.Encoded())
}

type event struct {
	kind string
	d    digest.Digest
}

// recorder is an Observer that remembers what it heard.
type recorder struct {
	mu     sync.Mutex
	events []event
}

func (r *recorder) BlobAdded(i BlobInfo) { r.add("added", i.Digest) }
func (r *recorder) BlobAccessed(d digest.Digest, _ time.Time) {
	r.add("accessed", d)
}
func (r *recorder) BlobRemoved(d digest.Digest) { r.add("removed", d) }

func (r *recorder) add(k string, d digest.Digest) {
	r.mu.Lock()
	r.events = append(r.events, event{k, d})
	r.mu.Unlock()
}

func (r *recorder) count(kind string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.events {
		if e.kind == kind {
			n++
		}
	}
	return n
}

var _ Observer = (*recorder)(nil)

type badgerTxn = badger.Txn

// simulateCrash makes a closed store look as if its process had died
// instead of closing: it removes the clean-shutdown marker Close wrote, so
// the next Open reconciles fully.
func simulateCrash(t *testing.T, dir string) {
	t.Helper()
	if err := os.Remove(filepath.Join(dir, cleanMarkerName)); err != nil {
		t.Fatalf("no clean-shutdown marker after Close: %v", err)
	}
}
