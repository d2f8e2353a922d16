package s3tier

import (
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/opencontainers/go-digest"
)

// pending remembers the blob uploads queued and not yet done, as one empty
// file per digest under dir, so that a restart (a deploy, a crash, a
// store that was down when the node stopped) resumes them: the queue
// itself is memory. Marks are written when a commit is queued and removed
// when its upload is over (done, found present, or failed for good);
// a stop keeps them. Tag records are not remembered: the next resolution
// of the tag writes one again.
type pending struct {
	dir    string // "": remember nothing
	log    *slog.Logger
	warned atomic.Bool
}

func (p *pending) path(d digest.Digest) string {
	return filepath.Join(p.dir, d.Algorithm().String()+"-"+d.Encoded())
}

func (p *pending) add(d digest.Digest) {
	if p.dir == "" {
		return
	}
	if err := os.WriteFile(p.path(d), nil, 0o600); err != nil && !p.warned.Swap(true) {
		p.log.Warn("s3: cannot remember a queued upload across restarts", "dir", p.dir, "err", err)
	}
}

func (p *pending) done(d digest.Digest) {
	if p.dir == "" {
		return
	}
	if err := os.Remove(p.path(d)); err != nil && !errors.Is(err, fs.ErrNotExist) && !p.warned.Swap(true) {
		p.log.Warn("s3: cannot forget a finished upload", "dir", p.dir, "err", err)
	}
}

// list is the digests remembered; names that are not a digest's are
// removed.
func (p *pending) list() []digest.Digest {
	if p.dir == "" {
		return nil
	}
	entries, err := os.ReadDir(p.dir)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			p.log.Warn("s3: cannot read the uploads queued before the last stop", "dir", p.dir, "err", err)
		}
		return nil
	}
	var out []digest.Digest
	for _, e := range entries {
		algo, hex, ok := strings.Cut(e.Name(), "-")
		d := digest.NewDigestFromEncoded(digest.Algorithm(algo), hex)
		if !ok || !e.Type().IsRegular() || d.Validate() != nil {
			os.Remove(filepath.Join(p.dir, e.Name()))
			continue
		}
		out = append(out, d)
	}
	return out
}
