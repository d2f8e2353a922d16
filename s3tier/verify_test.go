package s3tier

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/cache"
)

// TestDamagedL1FileNotUploaded: a committed L1 file damaged on disk since
// (one byte changed, the size unchanged) is not uploaded, neither in one
// PUT nor in parts (the multipart upload is aborted, not completed): no
// object appears under its digest, the cache no longer holds it, and the
// store is not taken for down. An intact blob is uploaded as before.
func TestDamagedL1FileNotUploaded(t *testing.T) {
	s := sharedStore(t)
	st := openCache(t)
	tier := newTier(t, s, st, nil) // parts of 5 MiB
	ctx := context.Background()
	for i, size := range []int{64 << 10, 12 << 20} {
		data := randomBytes(t, size)
		d := digest.FromBytes(data)
		info, err := st.Put(d, "application/octet-stream", data)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(st.Dir(), "blobs", "sha256", d.Encoded()[:2], d.Encoded())
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte{data[size/3] ^ 0xff}, int64(size/3)); err != nil {
			t.Fatal(err)
		}
		f.Close()

		tier.BlobAdded(info)
		waitBacklog(t, tier)
		if _, err := tier.client.StatObject(ctx, "regmirror", tier.blobKey(d), minio.StatObjectOptions{}); !isNotFound(err) {
			t.Errorf("size %d: the damaged file was uploaded (stat: %v)", size, err)
		}
		if got := tier.Stats(); got.Uploads != 0 || got.Corrupt != 0 || got.Failures != int64(i+1) || got.BreakerOpens != 0 {
			t.Errorf("size %d: stats %+v; want no upload (none written, then deleted), %d failures, the store not down", size, got, i+1)
		}
		if _, err := st.Stat(d); !errors.Is(err, cache.ErrNotFound) {
			t.Errorf("size %d: the damaged blob is still cached (%v)", size, err)
		}
	}
	uploads, err := tier.core.ListMultipartUploads(ctx, "regmirror", tier.o.Prefix, "", "", "", 100)
	if err != nil || len(uploads.Uploads) != 0 {
		t.Errorf("multipart uploads left: %+v %v", uploads.Uploads, err)
	}

	data := randomBytes(t, 6<<20)
	d := digest.FromBytes(data)
	info, err := st.Put(d, "application/octet-stream", data)
	if err != nil {
		t.Fatal(err)
	}
	tier.BlobAdded(info)
	waitBacklog(t, tier)
	if oi, err := tier.client.StatObject(ctx, "regmirror", tier.blobKey(d), minio.StatObjectOptions{}); err != nil || oi.Size != int64(len(data)) {
		t.Errorf("an intact blob: %+v %v", oi, err)
	}
}
