package upstream

import (
	"fmt"
	"hash"
	"io"

	"github.com/opencontainers/go-digest"
)

// VerifyingBody hashes rc as it is read. At its end, content that is not
// want fails the read with ErrCorrupt (naming source, e.g. "the source"
// or "the s3 object", and what it held) and calls onBad once; later reads
// fail the same way. want's algorithm must be available. Sources of a
// download (a Failover's mirrors, the S3 tier) use it so that a bad
// source is known as such, not only the download refused: the cache's
// writer checks the whole again at commit either way.
func VerifyingBody(rc io.ReadCloser, want digest.Digest, source string, onBad func()) io.ReadCloser {
	return &verifyingBody{ReadCloser: rc, h: want.Algorithm().Hash(), want: want, source: source, onBad: onBad}
}

type verifyingBody struct {
	io.ReadCloser
	h      hash.Hash
	want   digest.Digest
	source string
	onBad  func()
	bad    error
}

func (b *verifyingBody) Read(p []byte) (int, error) {
	if b.bad != nil {
		return 0, b.bad
	}
	n, err := b.ReadCloser.Read(p)
	b.h.Write(p[:n])
	if err == io.EOF {
		if got := digest.NewDigest(b.want.Algorithm(), b.h); got != b.want {
			b.bad = fmt.Errorf("%w: blob %s: %s held %s", ErrCorrupt, b.want, b.source, got)
			b.onBad()
			return n, b.bad
		}
	}
	return n, err
}
