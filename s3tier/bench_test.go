package s3tier_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/internal/tests3"
	"github.com/regmirror/regmirror/internal/testupstream"
	"github.com/regmirror/regmirror/s3tier"
)

// timedGet downloads url, checks the digest, and returns how long it took.
func timedGet(b *testing.B, url string, want digest.Digest) time.Duration {
	b.Helper()
	start := time.Now()
	resp, err := http.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	h := digest.SHA256.Digester()
	if _, err := io.Copy(h.Hash(), resp.Body); err != nil {
		b.Fatal(err)
	}
	took := time.Since(start)
	if resp.StatusCode != http.StatusOK || h.Digest() != want {
		b.Fatalf("GET %s: %s, digest %s", url, resp.Status, h.Digest())
	}
	return took
}

func mbps(size int64, d time.Duration) float64 { return float64(size) / (1 << 20) / d.Seconds() }

// BenchmarkS3Tier measures, once per run (use -benchtime 1x):
//   - one large blob served by a node that lacks it, read from L2 (S3)
//     through the fill (hashed, written to L1 as it streams): l2_MB/s;
//   - the same blob again from that node's disk: l1_MB/s;
//   - the same object straight from the S3 server (a presigned GET):
//     s3_direct_MB/s;
//   - a fresh node serving a working set of 10 images (3 layers each) that
//     another node uploaded: fresh_node_10_images_s, against a cold node
//     pulling them from upstream: cold_upstream_10_images_s.
//
// REGMIRROR_BENCH_BLOB sets the large blob's size in MiB (default 256).
func BenchmarkS3Tier(b *testing.B) {
	size := int64(256) << 20
	if v := os.Getenv("REGMIRROR_BENCH_BLOB"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			b.Fatal(err)
		}
		size = int64(n) << 20
	}
	s := tests3.Start(b)
	makeBucket(b, s)
	up := testupstream.Start(b)
	_, big := up.PushLargeBlobImage(b, "library/big", "v1", size)
	const images = 10
	for i := range images {
		up.PushRandomImage(b, fmt.Sprintf("library/set%d", i), "v1", 3, 4<<20)
	}
	prefix := "bench/"
	a := startNode(b, up, s, prefix, "")
	blobURL := "/v2/library/big/blobs/" + big.String()
	timedGet(b, a.URL+blobURL, big)
	cold := time.Now()
	total := 0
	for i := range images {
		total += len(pull(b, a.URL, fmt.Sprintf("library/set%d", i), "v1").blobs) + 2
	}
	coldTook := time.Since(cold)
	a.waitUploaded(b, total+1) // + the large blob (its manifest was not pulled)

	b.ResetTimer()
	for range b.N {
		n := startNode(b, up, s, prefix, "")
		l2 := timedGet(b, n.URL+blobURL, big)
		l1 := timedGet(b, n.URL+blobURL, big)
		direct := timedGet(b, presign(b, s, prefix, big), big)
		b.ReportMetric(mbps(size, l2), "l2_MB/s")
		b.ReportMetric(mbps(size, l1), "l1_MB/s")
		b.ReportMetric(mbps(size, direct), "s3_direct_MB/s")

		fresh := startNode(b, up, s, prefix, "")
		up.Reset()
		start := time.Now()
		for i := range images {
			pull(b, fresh.URL, fmt.Sprintf("library/set%d", i), "v1")
		}
		b.ReportMetric(time.Since(start).Seconds(), "fresh_node_10_images_s")
		b.ReportMetric(coldTook.Seconds(), "cold_upstream_10_images_s")
		if n := up.Requests(); n != 0 {
			b.Fatalf("the fresh node asked upstream %d times", n)
		}
	}
}

// presign is a presigned GET of d's object, through a tier with redirects.
func presign(tb testing.TB, s *tests3.Server, prefix string, d digest.Digest) string {
	tb.Helper()
	tier, err := s3tier.New(s3tier.Options{Endpoint: s.Endpoint, Bucket: bucket, Prefix: prefix, AccessKey: tests3.AccessKey,
		SecretKey: tests3.SecretKey, PathStyle: true, Redirect: true})
	if err != nil {
		tb.Fatal(err)
	}
	defer tier.Close()
	src := tier.Wrap(nil).(interface {
		BlobRedirect(ctx context.Context, repo string, d digest.Digest) (string, bool)
	})
	u, ok := src.BlobRedirect(context.Background(), "", d)
	if !ok {
		tb.Fatal("no presigned URL")
	}
	return u
}
