package s3tier

import (
	"context"
	"fmt"
	"time"

	"github.com/minio/minio-go/v7"
)

// GCResult is what GC deleted.
type GCResult struct {
	Objects int
	Bytes   int64
}

// GC deletes the objects under the prefix (blobs and tag records) last
// written more than olderThan ago, for stores without lifecycle rules.
// A node that still needs a deleted blob fetches it again (from a peer's
// L1 or upstream) and uploads it anew.
func (t *Tier) GC(ctx context.Context, olderThan time.Duration) (GCResult, error) {
	var res GCResult
	if olderThan <= 0 {
		return res, fmt.Errorf("%w: --older-than must be positive", ErrConfig)
	}
	cutoff := t.o.Now().Add(-olderThan)
	for _, dir := range []string{"blobs/", "tags/"} {
		for obj := range t.client.ListObjects(ctx, t.o.Bucket, minio.ListObjectsOptions{Prefix: t.o.Prefix + dir, Recursive: true}) {
			if obj.Err != nil {
				return res, fmt.Errorf("listing %s: %w", t.o.Prefix+dir, obj.Err)
			}
			if !obj.LastModified.Before(cutoff) {
				continue
			}
			if err := t.client.RemoveObject(ctx, t.o.Bucket, obj.Key, minio.RemoveObjectOptions{}); err != nil && !isNotFound(err) {
				return res, fmt.Errorf("deleting %s: %w", obj.Key, err)
			}
			res.Objects++
			res.Bytes += obj.Size
		}
	}
	return res, nil
}

// EnsureBucket creates the bucket when it does not exist (tests, first
// start against an empty store).
func (t *Tier) EnsureBucket(ctx context.Context) error {
	ok, err := t.client.BucketExists(ctx, t.o.Bucket)
	if err != nil {
		return err
	}
	if ok {
		return nil
	}
	err = t.client.MakeBucket(ctx, t.o.Bucket, minio.MakeBucketOptions{Region: t.o.Region})
	if err != nil && minio.ToErrorResponse(err).Code == "BucketAlreadyOwnedByYou" {
		return nil
	}
	return err
}
