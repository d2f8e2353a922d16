package s3tier

import (
	"testing"

	"github.com/regmirror/regmirror/internal/depcheck"
)

// TestImports: the S3 client stays here; of the project only the cache's
// types (what an upload reads) and upstream's (what a source returns).
func TestImports(t *testing.T) {
	depcheck.Allow(t,
		"github.com/minio/minio-go/v7/...",
		"github.com/opencontainers/go-digest",
		"github.com/regmirror/regmirror/cache",
		"github.com/regmirror/regmirror/upstream",
	)
}
