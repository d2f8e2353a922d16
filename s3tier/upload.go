package s3tier

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/cache"
)

// job is one upload: a committed blob (held against eviction until done),
// or a tag record.
type job struct {
	d    digest.Digest
	hold func()

	tagKey string
	tag    tagRecord
}

func (j job) release() {
	if j.hold != nil {
		j.hold()
	}
}

// BlobAdded queues a blob the cache just committed (verified) for upload;
// it never blocks. Subscribe the Tier to the cache's commits. A private
// registry's content (info.Scoped) is not uploaded: the tier serves any
// node by digest alone, and a private registry's upstream decides per
// repository who may read it (proxy/private.go).
func (t *Tier) BlobAdded(info cache.BlobInfo) {
	if t.o.Files == nil || info.Scoped || !usableDigest(info.Digest) || t.isKnown(info.Digest) {
		return
	}
	release := func() {}
	if t.o.Hold != nil {
		release = t.o.Hold(info.Digest)
	}
	t.pending.add(info.Digest)
	t.enqueue(job{d: info.Digest, hold: release})
}

// BlobAccessed is part of cache.Observer; accesses do not concern L2.
func (t *Tier) BlobAccessed(digest.Digest, time.Time) {}

// BlobRemoved is part of cache.Observer: L1 eviction never deletes from L2.
func (t *Tier) BlobRemoved(digest.Digest) {}

// recordTag queues a tag record for writing.
func (t *Tier) recordTag(registry, repo, tag string, rec tagRecord) {
	t.enqueue(job{tagKey: t.tagKey(registry, repo, tag), tag: rec})
}

// enqueue queues j for a worker and reports whether it was queued.
func (t *Tier) enqueue(j job) bool {
	if t.stopping() {
		j.release()
		return false
	}
	t.stats.backlog.Add(1)
	select {
	case t.queue <- j:
		return true
	default:
		t.stats.backlog.Add(-1)
		t.stats.dropped.Add(1)
		j.release()
		t.log.Warn("s3 upload queue full: not uploading now (a blob's is tried again at the next start)", "digest", j.d, "tag", j.tagKey, "queue", t.o.QueueSize)
		return false
	}
}

// work uploads queued jobs, one at a time; while the store is down it waits
// for the breaker's back-off, then retries the same job.
func (t *Tier) work() {
	defer t.workers.Done()
	for {
		var j job
		select {
		case <-t.stop:
			return
		case j = <-t.queue:
		}
		for {
			if wait := t.downFor(); wait > 0 {
				timer := time.NewTimer(wait)
				select {
				case <-t.stop:
					timer.Stop()
					t.stats.backlog.Add(-1)
					j.release()
					return
				case <-timer.C:
				}
				continue
			}
			err := t.upload(j)
			if err != nil && t.stopping() {
				// Cut by Close: the mark stays, the next start uploads it.
				t.stats.backlog.Add(-1)
				j.release()
				return
			}
			if !errors.Is(err, errDown) {
				if err != nil {
					t.log.Warn("s3 upload failed; not retried", "digest", j.d, "tag", j.tagKey, "err", err)
				}
				break
			}
			// Down: the breaker is open now; wait for it and retry.
		}
		if j.d != "" {
			t.pending.done(j.d)
		}
		t.stats.backlog.Add(-1)
		j.release()
	}
}

func (t *Tier) stopping() bool {
	select {
	case <-t.stop:
		return true
	default:
		return false
	}
}

func (t *Tier) upload(j job) error {
	if j.tagKey != "" {
		return t.putTag(j.tagKey, j.tag)
	}
	return t.putBlob(j.d)
}

// putBlob uploads d's committed L1 file, unless L2 has it already. What
// is uploaded is checked against d on the way (the file may have been
// damaged on disk since its commit, its size unchanged): an object is
// written only if every byte of it was.
func (t *Tier) putBlob(d digest.Digest) error {
	ctx, cancel := context.WithTimeout(t.ctx, t.o.UploadTimeout)
	defer cancel()
	if _, ok := t.statBlob(ctx, d); ok {
		t.stats.already.Add(1)
		t.remember(d)
		return nil
	}
	if !t.usable() {
		return errDown
	}
	vr, info, err := t.o.Files.OpenVerified(d)
	if err != nil {
		return t.unreadable(err)
	}
	defer vr.Close()
	check := &checkedReader{r: vr}
	opts := minio.PutObjectOptions{
		ContentType:  "application/octet-stream",
		UserMetadata: map[string]string{mediaTypeMeta: info.MediaType},
		PartSize:     t.o.PartSize,
	}
	if info.MediaType != "" {
		opts.ContentType = info.MediaType
	}
	if info.Size > int64(t.o.PartSize) {
		// Parts are read in parallel from the file; the verified reader
		// reads it once more in order, and the upload completes only if
		// that read matched d.
		var f *os.File
		if f, _, err = t.o.Files.Open(d); err != nil {
			return t.unreadable(err)
		}
		defer f.Close()
		err = t.putMultipart(ctx, t.blobKey(d), f, info.Size, opts, func(ctx context.Context) error { return drain(ctx, check) })
	} else {
		opts.SetMatchETagExcept("*")
		_, err = t.client.PutObject(ctx, t.o.Bucket, t.blobKey(d), check, info.Size, opts)
	}
	if lerr := check.failure(); lerr != nil {
		if err == nil {
			t.corruptObject(d) // cannot be, the body having been cut short; but never leave it
		}
		t.stats.failures.Add(1)
		if errors.Is(lerr, cache.ErrDigestMismatch) {
			t.log.Warn("s3: not uploading a cached blob that no longer matches its digest (the cache removed it)", "digest", d, "err", lerr)
			return nil
		}
		return fmt.Errorf("s3: reading the cached file: %w", lerr) // not errDown: no retry
	}
	switch {
	case err == nil:
		t.answered()
		t.stats.uploads.Add(1)
		t.stats.uploadedBytes.Add(info.Size)
		t.remember(d)
		return nil
	case isPreconditionFailed(err):
		t.answered()
		t.stats.already.Add(1)
		t.remember(d)
		return nil
	}
	return t.uploadFailed("PUT "+d.String(), err)
}

// unreadable handles an L1 file that could not be opened for upload.
func (t *Tier) unreadable(err error) error {
	if errors.Is(err, cache.ErrNotFound) {
		t.stats.dropped.Add(1) // evicted or purged before its turn
		return nil
	}
	t.stats.failures.Add(1)
	return fmt.Errorf("s3: reading the cached file: %w", err) // not errDown: no retry
}

// checkedReader keeps the first error of the cache's verified reader: a
// local failure (the file is not d, or cannot be read) that no retry of
// the store would fix, and that must not count as the store's.
type checkedReader struct {
	r   io.Reader
	mu  sync.Mutex
	err error
}

func (c *checkedReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err != nil && err != io.EOF {
		c.mu.Lock()
		if c.err == nil {
			c.err = err
		}
		c.mu.Unlock()
	}
	return n, err
}

// failure is the local error met, if any. The transport may still be
// reading the body when an upload returns (the store answered early).
func (c *checkedReader) failure() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// drain reads r to its end, or until ctx is done.
func drain(ctx context.Context, r io.Reader) error {
	buf := make([]byte, 256<<10)
	for ctx.Err() == nil {
		if _, err := r.Read(buf); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
	}
	return ctx.Err()
}

// errDown: the store could not answer (the breaker was open, or an
// upload's request found it down). Only errDown is retried by the upload
// worker, after the breaker's back-off; any other failure (refused, a
// local file that cannot be read) would fail again at once.
var errDown = errors.New("s3tier: store unavailable")

// uploadFailed records a failed request of an upload and says whether it
// is worth retrying: an outage, which opens the breaker, comes back as
// errDown.
func (t *Tier) uploadFailed(what string, err error) error {
	t.stats.failures.Add(1)
	t.failed(what, err)
	if isOutage(err) {
		return fmt.Errorf("%w: %s: %w", errDown, what, err)
	}
	return err
}

// putTag writes a tag record unless the stored one was checked later.
func (t *Tier) putTag(key string, rec tagRecord) error {
	if !t.usable() {
		return errDown
	}
	ctx, cancel := t.smallContext(t.ctx)
	defer cancel()
	body, _, _, err := t.core.GetObject(ctx, t.o.Bucket, key, minio.GetObjectOptions{})
	if err == nil {
		var old tagRecord
		data, rerr := io.ReadAll(io.LimitReader(body, 64<<10))
		body.Close()
		if rerr == nil && json.Unmarshal(data, &old) == nil && !old.CheckedAt.Before(rec.CheckedAt) {
			return nil // the newer check wins
		}
	} else if !isNotFound(err) {
		return t.uploadFailed("GET "+key, err)
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	_, err = t.client.PutObject(ctx, t.o.Bucket, key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{ContentType: "application/json"})
	if err != nil {
		return t.uploadFailed("PUT "+key, err)
	}
	t.answered()
	t.stats.uploads.Add(1)
	return nil
}

// uploadThreads is how many parts of one multipart upload are sent at once.
const uploadThreads = 4

// putMultipart uploads size bytes of f as PartSize parts read with ReadAt
// (parallel, nothing buffered beyond the transport's), and completes the
// upload with If-None-Match: * (minio-go's PutObject drops that header on
// the completion, so the parts are driven here) once verify, run alongside
// the parts, has returned nil. A failure of either aborts it.
func (t *Tier) putMultipart(ctx context.Context, key string, f io.ReaderAt, size int64, opts minio.PutObjectOptions, verify func(context.Context) error) error {
	id, err := t.core.NewMultipartUpload(ctx, t.o.Bucket, key, opts)
	if err != nil {
		return err
	}
	partSize := int64(t.o.PartSize)
	n := int((size + partSize - 1) / partSize)
	parts := make([]minio.CompletePart, n)
	errs := make(chan error, n)
	next := make(chan int)
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	verified := make(chan error, 1)
	go func() {
		err := verify(pctx)
		if err != nil {
			cancel() // the parts stop: this upload is not completed
		}
		verified <- err
	}()
	var wg sync.WaitGroup
	for range min(uploadThreads, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				off := int64(i) * partSize
				length := min(partSize, size-off)
				p, err := t.core.PutObjectPart(pctx, t.o.Bucket, key, id, i+1, io.NewSectionReader(f, off, length), length, minio.PutObjectPartOptions{})
				if err != nil {
					errs <- err
					cancel()
					continue
				}
				parts[i] = minio.CompletePart{PartNumber: i + 1, ETag: p.ETag}
			}
		}()
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-pctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	verr := <-verified
	select {
	case err = <-errs:
	default:
		err = pctx.Err()
	}
	if err == nil {
		err = verr
	}
	if err == nil {
		var done minio.PutObjectOptions
		done.SetMatchETagExcept("*")
		_, err = t.core.CompleteMultipartUpload(ctx, t.o.Bucket, key, id, parts, done)
		if err == nil {
			return nil
		}
	}
	actx, acancel := context.WithTimeout(context.Background(), t.o.Timeout)
	defer acancel()
	if aerr := t.core.AbortMultipartUpload(actx, t.o.Bucket, key, id); aerr != nil {
		t.log.Info("aborting an s3 multipart upload", "key", key, "err", aerr)
	}
	return err
}
