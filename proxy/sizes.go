package proxy

import (
	"encoding/json"
	"sync"

	"github.com/opencontainers/go-digest"
)

// maxKnownSizes bounds the descriptor sizes remembered (about 100 bytes
// each): enough for the layers of every image pulled recently.
const maxKnownSizes = 1 << 16

// knownSizes remembers the sizes manifests served to clients give their
// config, layers and child manifests, so that a fill can refuse an upstream
// that announces another size for the same digest before any client is
// answered (checkAnnouncedSize). Sizes are kept per repository: a manifest
// anyone may push elsewhere must not make another repository's blob fail.
// Bounded: when full, an arbitrary entry
// makes way; a forgotten size only means the digest check at the end
// catches the lie instead.
type knownSizes struct {
	mu    sync.Mutex
	sizes map[sizeKey]int64
	// noted are the manifests (by digest, per repository) already read
	// into sizes: a manifest is immutable, so a hot one is parsed once.
	// Cleared whenever sizes forgets an entry. A sync.Map, so that the
	// check of every manifest GET takes no lock two cores would contend
	// for; notedCount (under mu) bounds it.
	noted      sync.Map // sizeKey → struct{}
	notedCount int
}

type sizeKey struct {
	registry, repo string
	digest         digest.Digest
}

// note records the descriptor sizes of manifest body (whose digest is
// manifest); anything that does not parse is ignored (manifests are
// validated elsewhere).
func (k *knownSizes) note(registry, repo string, manifest digest.Digest, body []byte) {
	seen := sizeKey{registry, repo, manifest}
	if _, done := k.noted.Load(seen); done {
		return
	}
	type desc struct {
		Digest digest.Digest `json:"digest"`
		Size   int64         `json:"size"`
	}
	var m struct {
		Config    *desc  `json:"config"`
		Layers    []desc `json:"layers"`
		Manifests []desc `json:"manifests"`
	}
	if json.Unmarshal(body, &m) != nil {
		return
	}
	all := append(m.Layers, m.Manifests...)
	if m.Config != nil {
		all = append(all, *m.Config)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.sizes == nil {
		k.sizes = make(map[sizeKey]int64)
	}
	for _, d := range all {
		if d.Digest.Validate() != nil || d.Size < 0 {
			continue
		}
		key := sizeKey{registry, repo, d.Digest}
		if _, ok := k.sizes[key]; !ok && len(k.sizes) >= maxKnownSizes {
			for old := range k.sizes {
				delete(k.sizes, old)
				break
			}
			k.noted.Clear()
			k.notedCount = 0
		}
		k.sizes[key] = d.Size
	}
	if k.notedCount < maxKnownSizes {
		if _, loaded := k.noted.LoadOrStore(seen, struct{}{}); !loaded {
			k.notedCount++
		}
	}
}

func (k *knownSizes) get(registry, repo string, d digest.Digest) (int64, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	n, ok := k.sizes[sizeKey{registry, repo, d}]
	return n, ok
}
