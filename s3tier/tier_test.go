package s3tier

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/cache"
	"github.com/regmirror/regmirror/internal/testlog"
	"github.com/regmirror/regmirror/internal/tests3"
	"github.com/regmirror/regmirror/upstream"
)

// sharedStore is a versitygw for one unit test (0.1 s to start); the node
// tests share theirs (nodes_test.go).
func sharedStore(t *testing.T) *tests3.Server {
	t.Helper()
	return tests3.Start(t)
}

func newTier(t *testing.T, s *tests3.Server, files Files, mod func(*Options)) *Tier {
	t.Helper()
	o := Options{
		Endpoint: s.Endpoint, Bucket: "regmirror", Prefix: t.Name() + "/", AccessKey: tests3.AccessKey,
		SecretKey: tests3.SecretKey, PathStyle: true, Files: files, Timeout: 2 * time.Second,
		PartSize: 5 << 20,
	}
	if mod != nil {
		mod(&o)
	}
	tier, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tier.Close() })
	if err := tier.EnsureBucket(context.Background()); err != nil {
		t.Fatal(err)
	}
	return tier
}

func openCache(t *testing.T) *cache.Store {
	t.Helper()
	st, err := cache.Open(cache.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func waitBacklog(t *testing.T, tier *Tier) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for tier.Stats().Backlog > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("backlog stuck at %d: %+v", tier.Stats().Backlog, tier.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// failingNext is a next source that must not be asked.
type failingNext struct{ calls int }

func (f *failingNext) Name() string               { return "test.io" }
func (f *failingNext) Repository(n string) string { return n }
func (f *failingNext) HeadManifest(context.Context, string, string) (upstream.Descriptor, error) {
	f.calls++
	return upstream.Descriptor{}, upstream.ErrUnavailable
}
func (f *failingNext) GetManifest(context.Context, string, string) ([]byte, upstream.Descriptor, error) {
	f.calls++
	return nil, upstream.Descriptor{}, upstream.ErrUnavailable
}
func (f *failingNext) HeadBlob(context.Context, string, digest.Digest) (int64, error) {
	f.calls++
	return 0, upstream.ErrUnavailable
}
func (f *failingNext) GetBlob(context.Context, string, digest.Digest, int64) (*upstream.Blob, error) {
	f.calls++
	return nil, upstream.ErrUnavailable
}
func (f *failingNext) ListTags(context.Context, string, string) (upstream.TagPage, error) {
	f.calls++
	return upstream.TagPage{}, upstream.ErrUnavailable
}

// TestUploadIfNoneMatchAndRangedRead: a committed blob (small: one PUT;
// large: multipart with PartSize parts) is uploaded once with its media
// type; a conditional PUT of the same content over it gets 412 (which an
// upload counts as done); reads from offset 0 and from the middle return
// the right bytes; deleting the blob from L1 (eviction) leaves the object.
func TestUploadIfNoneMatchAndRangedRead(t *testing.T) {
	s := sharedStore(t)
	for _, size := range []int{1000, 6<<20 + 1} {
		st := openCache(t)
		tier := newTier(t, s, st, nil)
		st.Subscribe(tier)
		data := randomBytes(t, size)
		d := digest.FromBytes(data)
		if _, err := st.Put(d, "application/vnd.test", data); err != nil {
			t.Fatal(err)
		}
		waitBacklog(t, tier)
		if got := tier.Stats(); got.Uploads != 1 || got.Failures != 0 {
			t.Fatalf("size %d: stats %+v", size, got)
		}
		info, err := tier.client.StatObject(context.Background(), "regmirror", tier.blobKey(d), minio.StatObjectOptions{})
		if err != nil || info.Size != int64(size) || mediaTypeOf(info) != "application/vnd.test" {
			t.Fatalf("object: %+v %v (media type %q)", info, err, mediaTypeOf(info))
		}
		// A conditional PUT of an existing object: 412, counted as done.
		tier.forget(d)
		f, _, _ := st.Open(d)
		if size > 5<<20 {
			err = tier.putMultipart(context.Background(), tier.blobKey(d), f, int64(size), minio.PutObjectOptions{}, func(context.Context) error { return nil })
		} else {
			opts := minio.PutObjectOptions{}
			opts.SetMatchETagExcept("*")
			_, err = tier.client.PutObject(context.Background(), "regmirror", tier.blobKey(d), f, int64(size), opts)
		}
		f.Close()
		if !isPreconditionFailed(err) {
			t.Errorf("size %d: conditional PUT over an existing object: %v, want 412", size, err)
		}

		next := &failingNext{}
		src := tier.Wrap(next).(*Source)
		for _, off := range []int64{0, int64(size / 2)} {
			blob, err := src.GetBlob(context.Background(), "r", d, off)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(blob.Body)
			blob.Body.Close()
			if err != nil || blob.Offset != off || blob.Size != int64(size) || !bytes.Equal(got, data[off:]) {
				t.Fatalf("size %d offset %d: offset %d size %d err %v equal %v", size, off, blob.Offset, blob.Size, err, bytes.Equal(got, data[off:]))
			}
		}
		if next.calls != 0 {
			t.Errorf("next asked %d times", next.calls)
		}
		// L1 eviction (a delete from the cache) leaves the object alone.
		if err := st.Delete(d); err != nil {
			t.Fatal(err)
		}
		if _, err := tier.client.StatObject(context.Background(), "regmirror", tier.blobKey(d), minio.StatObjectOptions{}); err != nil {
			t.Errorf("size %d: object gone after an L1 delete: %v", size, err)
		}
	}
}

// TestCorruptObjectDeleted: the tier does not hash what it serves; a
// caller that finds a whole body from offset 0 is not its digest refutes
// it, which deletes the object (once, however often refuted), and the next
// read goes to next. A resumed body cannot be refuted.
func TestCorruptObjectDeleted(t *testing.T) {
	s := sharedStore(t)
	tier := newTier(t, s, nil, nil)
	data := randomBytes(t, 300<<10)
	d := digest.FromBytes(data)
	junk := randomBytes(t, len(data))
	if _, err := tier.client.PutObject(context.Background(), "regmirror", tier.blobKey(d), bytes.NewReader(junk), int64(len(junk)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	next := &failingNext{}
	src := tier.Wrap(next).(*Source)
	resumed, err := src.GetBlob(context.Background(), "r", d, 10)
	if err != nil {
		t.Fatal(err)
	}
	resumed.Body.Close()
	if resumed.Refute != nil {
		t.Fatal("a body from offset 10 can be refuted")
	}
	blob, err := src.GetBlob(context.Background(), "r", d, 0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(blob.Body)
	blob.Body.Close()
	if err != nil || !bytes.Equal(got, junk) {
		t.Fatalf("read of the object: %d bytes, %v; want its %d bytes as stored", len(got), err, len(junk))
	}
	blob.Refuted()
	blob.Refuted()
	if _, err := tier.client.StatObject(context.Background(), "regmirror", tier.blobKey(d), minio.StatObjectOptions{}); !isNotFound(err) {
		t.Fatalf("refuted object still there: %v", err)
	}
	if _, err := src.GetBlob(context.Background(), "r", d, 0); !errors.Is(err, upstream.ErrUnavailable) || next.calls != 1 {
		t.Fatalf("after deletion: %v, next asked %d times (want the next source)", err, next.calls)
	}
	if tier.Stats().Corrupt != 1 {
		t.Errorf("corrupt count %d, want 1", tier.Stats().Corrupt)
	}
}

// TestGC: GC deletes the objects under the prefix written longer ago than
// the age given, and nothing else (another prefix, younger objects).
func TestGC(t *testing.T) {
	s := sharedStore(t)
	now := time.Now()
	clock := func() time.Time { return now }
	tier := newTier(t, s, nil, func(o *Options) { o.Now = func() time.Time { return clock() } })
	other := newTier(t, s, nil, func(o *Options) { o.Prefix = "other-" + o.Prefix })
	for _, tt := range []*Tier{tier, other} {
		for _, key := range []string{"blobs/sha256/ab/x", "tags/docker.io/library/a/v1"} {
			if _, err := tt.client.PutObject(context.Background(), "regmirror", tt.o.Prefix+key, bytes.NewReader([]byte("x")), 1, minio.PutObjectOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if res, err := tier.GC(context.Background(), 30*24*time.Hour); err != nil || res.Objects != 0 {
		t.Fatalf("GC of young objects: %+v %v", res, err)
	}
	later := now.Add(31 * 24 * time.Hour)
	clock = func() time.Time { return later }
	if res, err := tier.GC(context.Background(), 30*24*time.Hour); err != nil || res.Objects != 2 || res.Bytes != 2 {
		t.Fatalf("GC after 31 days: %+v %v", res, err)
	}
	n := 0
	for obj := range tier.client.ListObjects(context.Background(), "regmirror", minio.ListObjectsOptions{Recursive: true}) {
		if strings.HasPrefix(obj.Key, tier.o.Prefix) {
			t.Errorf("left %s", obj.Key)
		}
		if strings.HasPrefix(obj.Key, other.o.Prefix) {
			n++
		}
	}
	if n != 2 {
		t.Errorf("another prefix lost objects: %d left, want 2", n)
	}
}

// TestUploadHoldsUntilUploaded: a committed blob is held against eviction
// from its commit until its upload is done; while the store does not
// answer, the hold stays and the blob waits in the backlog.
func TestUploadHoldsUntilUploaded(t *testing.T) {
	s := tests3.Start(t)
	var mu sync.Mutex
	held := map[digest.Digest]int{}
	hold := func(d digest.Digest) func() {
		mu.Lock()
		held[d]++
		mu.Unlock()
		return func() {
			mu.Lock()
			held[d]--
			mu.Unlock()
		}
	}
	holds := func(d digest.Digest) int { mu.Lock(); defer mu.Unlock(); return held[d] }
	st := openCache(t)
	tier := newTier(t, s, st, func(o *Options) {
		o.Hold = hold
		o.Timeout = 300 * time.Millisecond
		o.Backoff = 200 * time.Millisecond
	})
	st.Subscribe(tier)

	s.Pause()
	data := randomBytes(t, 64<<10)
	d := digest.FromBytes(data)
	if _, err := st.Put(d, "application/octet-stream", data); err != nil {
		t.Fatal(err)
	}
	if holds(d) != 1 {
		t.Fatalf("holds after commit: %d, want 1", holds(d))
	}
	// The first attempt times out and opens the breaker.
	deadline := time.Now().Add(30 * time.Second)
	for tier.Stats().BreakerOpens == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the breaker never opened")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if holds(d) != 1 || tier.Stats().Backlog != 1 {
		t.Fatalf("store down: holds %d, backlog %d; want 1 and 1", holds(d), tier.Stats().Backlog)
	}
	s.Resume()
	waitBacklog(t, tier)
	if holds(d) != 0 || tier.Stats().Uploads != 1 {
		t.Fatalf("after the upload: holds %d, uploads %d", holds(d), tier.Stats().Uploads)
	}
}

// TestTagRecordNewerWins: a tag record is not overwritten by an older check.
func TestTagRecordNewerWins(t *testing.T) {
	s := sharedStore(t)
	tier := newTier(t, s, nil, nil)
	d1, d2 := digest.FromString("one"), digest.FromString("two")
	now := time.Now()
	key := tier.tagKey("docker.io", "library/a", "v1")
	if err := tier.putTag(key, tagRecord{Digest: d1, CheckedAt: now}); err != nil {
		t.Fatal(err)
	}
	if err := tier.putTag(key, tagRecord{Digest: d2, CheckedAt: now.Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if rec, ok := tier.getTag(context.Background(), "docker.io", "library/a", "v1"); !ok || rec.Digest != d1 {
		t.Fatalf("after an older check: %+v %v, want %s", rec, ok, d1)
	}
	if err := tier.putTag(key, tagRecord{Digest: d2, CheckedAt: now.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if rec, ok := tier.getTag(context.Background(), "docker.io", "library/a", "v1"); !ok || rec.Digest != d2 {
		t.Fatalf("after a newer check: %+v %v, want %s", rec, ok, d2)
	}
}

// brokenFiles is an L1 whose files cannot be read (a disk error, not an
// eviction).
type brokenFiles struct{}

func (brokenFiles) Open(digest.Digest) (*os.File, cache.BlobInfo, error) {
	return nil, cache.BlobInfo{}, errors.New("input/output error")
}

func (brokenFiles) OpenVerified(digest.Digest) (io.ReadCloser, cache.BlobInfo, error) {
	return nil, cache.BlobInfo{}, errors.New("input/output error")
}

// TestLocalReadFailureNotRetried: an upload whose cached file cannot be
// read fails once and is given up; S3 is not down, so the worker does not
// spin on it.
func TestLocalReadFailureNotRetried(t *testing.T) {
	s := sharedStore(t)
	tier := newTier(t, s, brokenFiles{}, nil)
	tier.BlobAdded(cache.BlobInfo{Digest: digest.FromString("unreadable")})
	waitBacklog(t, tier)
	if st := tier.Stats(); st.Failures != 1 || st.BreakerOpens != 0 {
		t.Fatalf("failures %d, breaker opens %d; want 1 and 0", st.Failures, st.BreakerOpens)
	}
}

// TestResumeRemembered: at New, the uploads a previous run left pending
// are queued again for the blobs still cached, each held against eviction
// until uploaded; marks of blobs gone since, and names that are not a
// digest's, are dropped.
func TestResumeRemembered(t *testing.T) {
	s := sharedStore(t)
	newTier(t, s, nil, nil) // the bucket exists before the resumed uploads start
	st := openCache(t)
	data := randomBytes(t, 32<<10)
	cached := digest.FromBytes(data)
	if _, err := st.Put(cached, "application/octet-stream", data); err != nil {
		t.Fatal(err)
	}
	gone := digest.FromString("evicted since")
	dir := t.TempDir()
	for _, name := range []string{"sha256-" + cached.Encoded(), "sha256-" + gone.Encoded(), "junk"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	taken, held := map[digest.Digest]int{}, map[digest.Digest]int{}
	tier := newTier(t, s, st, func(o *Options) {
		o.PendingDir = dir
		o.Hold = func(d digest.Digest) func() {
			mu.Lock()
			defer mu.Unlock()
			taken[d]++
			held[d]++
			return func() { mu.Lock(); held[d]--; mu.Unlock() }
		}
	})
	waitBacklog(t, tier)
	mu.Lock()
	defer mu.Unlock()
	if taken[cached] != 1 || held[cached] != 0 || taken[gone] != 0 {
		t.Errorf("holds taken %v, still held %v; want one on the cached blob, released", taken, held)
	}
	if st := tier.Stats(); st.Uploads != 1 {
		t.Errorf("uploads %d, want 1 (%+v)", st.Uploads, st)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("%d marks left, want none", len(left))
	}
}

// TestResumeStopsAtAFullQueue: more remembered uploads than the queue
// holds: resume queues what fits, stops at the first that does not (one
// drop, one warning, not one per mark) and keeps every mark for the next
// start.
func TestResumeStopsAtAFullQueue(t *testing.T) {
	st := openCache(t)
	dir := t.TempDir()
	for i := range 5 {
		data := randomBytes(t, 1024+i)
		d := digest.FromBytes(data)
		if _, err := st.Put(d, "application/octet-stream", data); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "sha256-"+d.Encoded()), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var held atomic.Int64
	logs := &testlog.Buffer{}
	log := testlog.Logger(logs, slog.LevelInfo)
	// Built by hand, not by New: without workers what is queued stays
	// queued, so the queue is full when resume meets the second mark.
	tier := &Tier{
		o: Options{Files: st, QueueSize: 1, Hold: func(digest.Digest) func() {
			held.Add(1)
			return func() { held.Add(-1) }
		}},
		log:     log,
		pending: pending{dir: dir, log: log},
		queue:   make(chan job, 1),
		stop:    make(chan struct{}),
	}
	tier.resume()
	if n := tier.stats.dropped.Load(); n != 1 {
		t.Errorf("%d uploads dropped, want 1 (resume stops at the full queue)", n)
	}
	if n := len(tier.queue); n != 1 || held.Load() != 1 {
		t.Errorf("queued %d, holds %d; want 1 and 1", n, held.Load())
	}
	if left, _ := os.ReadDir(dir); len(left) != 5 {
		t.Errorf("%d marks left, want all 5 for the next start", len(left))
	}
	if n := strings.Count(logs.String(), "upload queue full"); n != 1 {
		t.Errorf("%d queue-full warnings, want 1:\n%s", n, logs.String())
	}
}

// TestNewRefusesBadOptions: a missing endpoint or bucket, or an endpoint
// that is not http(s)://host[:port] (user info, a path, a query would be
// ignored by the client), is a configuration error before anything runs.
func TestNewRefusesBadOptions(t *testing.T) {
	for _, o := range []Options{
		{Bucket: "b"},
		{Endpoint: "http://s3:7070"},
		{Endpoint: "https://u:p@s3", Bucket: "b"},
		{Endpoint: "http://s3:7070/bucket", Bucket: "b"},
		{Endpoint: "http://s3:7070?x=1", Bucket: "b"},
	} {
		if tier, err := New(o); !errors.Is(err, ErrConfig) {
			if err == nil {
				tier.Close()
			}
			t.Errorf("New(endpoint %q, bucket %q): %v, want ErrConfig", o.Endpoint, o.Bucket, err)
		}
	}
}
