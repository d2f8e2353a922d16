package stack

import (
	"crypto/rand"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/internal/testlog"
)

// TestMinFreeCappedOnSmallFilesystem: on a real 64 MiB filesystem the
// default min_free (1 GiB) can never be met. The mirror starts, says it
// keeps 10% free instead (or the index's reserve, if more), and eviction
// deletes nothing while the cache is
// far from that (the old rule emptied the cache on every pass). A
// min_free set in the config is kept as given.
func TestMinFreeCappedOnSmallFilesystem(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=64m"); err != nil {
		t.Skipf("cannot mount tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })

	opts := Options{Dir: dir, MinFree: 1 << 30, MinFreeIsDefault: true} // the default min_free, no budget
	var logs testlog.Buffer
	opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	st, err := Open(opts)
	if err != nil {
		t.Fatalf("the mirror refused a 64 MiB filesystem: %v", err)
	}
	if !strings.Contains(logs.String(), "keeping 10% free instead") {
		t.Errorf("no warning about the capped min_free:\n%s", logs.String())
	}
	// 10% of 64 MiB, unless the index's reserve, which downloads leave
	// free (half of so small a filesystem), is more: eviction makes room
	// to where downloads may go.
	if got, want := st.Evictor.Stats().MinFree, max(int64(64<<20)/10, st.Store.IndexReserve()); got != want || want != 32<<20 {
		t.Errorf("min_free applied: %d, want %d (the index's reserve, half of 64 MiB)", got, want)
	}
	for range 4 {
		data := make([]byte, 1<<20)
		rand.Read(data)
		if _, err := st.Store.Put(digest.FromBytes(data), "application/octet-stream", data); err != nil {
			t.Fatal(err)
		}
	}
	res, err := st.Evictor.EvictNow(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if bytes, blobs := st.Store.Usage(); res.Blobs != 0 || blobs != 4 {
		t.Fatalf("eviction on a 64 MiB filesystem with 4 MiB cached: evicted %d blobs, %d left (%d bytes)", res.Blobs, blobs, bytes)
	}
	st.Close()

	// A min_free the operator chose is kept as given, with a warning.
	opts.MinFree, opts.MinFreeIsDefault = 32<<20, false
	var logs2 testlog.Buffer
	opts.Logger = slog.New(slog.NewTextHandler(&logs2, nil))
	st, err = Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if got := st.Evictor.Stats().MinFree; got != 32<<20 {
		t.Errorf("an explicit min_free of 32MiB became %d", got)
	}
	if !strings.Contains(logs2.String(), "eviction deletes whatever it must") {
		t.Errorf("no warning about the large explicit min_free:\n%s", logs2.String())
	}
}
