package cache

import (
	"errors"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	digest "github.com/opencontainers/go-digest"
)

// Last-access times: recorded in memory on every hit, written to Badger in
// batches (see the package doc), so a hit costs no disk write.

// withAccess returns info with LastAccess raised to the newest unflushed
// access.
func (s *Store) withAccess(info BlobInfo) BlobInfo {
	s.accessMu.Lock()
	if t, ok := s.pending[info.Digest]; ok && t.After(info.LastAccess) {
		info.LastAccess = t
	}
	if t, ok := s.inflight[info.Digest]; ok && t.After(info.LastAccess) {
		info.LastAccess = t
	}
	s.accessMu.Unlock()
	return info
}

// recordAccess notes an access in memory and tells the observers.
func (s *Store) recordAccess(d digest.Digest) time.Time {
	now := s.now().Round(0) // stored without a monotonic reading; return the same
	s.accessMu.Lock()
	if t, ok := s.pending[d]; !ok || now.After(t) {
		s.pending[d] = now
	}
	s.accessMu.Unlock()
	s.obs.accessed(d, now)
	return now
}

func (s *Store) forgetAccess(d digest.Digest) {
	s.accessMu.Lock()
	delete(s.pending, d)
	s.accessMu.Unlock()
}

// flushLoop writes access times every flushEvery until Close.
func (s *Store) flushLoop() {
	defer s.loops.Done()
	tick := s.flushTick // a test's hand, or the ticker
	if tick == nil {
		t := time.NewTicker(s.flushEvery)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-s.stop:
			return // Close flushes once more
		case <-tick:
			if err := s.rlock(); err != nil {
				return
			}
			err := s.flushAccess()
			s.closeMu.RUnlock()
			if err != nil {
				s.log.Warn("flushing access times", "err", err)
			}
		}
	}
}

// flushChunk bounds one access-flush transaction, well under Badger's
// transaction size limit.
const flushChunk = 2048

// flushAccess writes pending access times to the index. The caller holds
// closeMu (read or write) and only one flush runs at a time (the flush loop,
// or Close after the loop has stopped).
func (s *Store) flushAccess() error {
	s.accessMu.Lock()
	batch := s.pending
	if len(batch) == 0 {
		s.accessMu.Unlock()
		return nil
	}
	s.pending = make(map[digest.Digest]time.Time)
	s.inflight = batch
	s.accessMu.Unlock()

	ds := make([]digest.Digest, 0, len(batch))
	for d := range batch {
		ds = append(ds, d)
	}
	var err error
	for len(ds) > 0 && err == nil {
		chunk := ds[:min(flushChunk, len(ds))]
		ds = ds[len(chunk):]
		if s.flushHook != nil {
			if err = s.flushHook(); err != nil {
				break
			}
		}
		err = s.update(func(txn *badger.Txn) error {
			for _, d := range chunk {
				rec, err := blobInTxn(txn, d)
				if errors.Is(err, badger.ErrKeyNotFound) || errors.Is(err, errCorrupt) {
					continue // deleted meanwhile, or for reconcile to handle
				}
				if err != nil {
					return err
				}
				if t := batch[d]; t.After(rec.lastAccess) {
					rec.lastAccess = t
					if err := txn.Set(blobKey(d), rec.encode()); err != nil {
						return err
					}
				}
			}
			return nil
		})
	}

	s.accessMu.Lock()
	if err != nil {
		// Keep what was not written for the next flush.
		for d, t := range batch {
			if p, ok := s.pending[d]; !ok || t.After(p) {
				s.pending[d] = t
			}
		}
	}
	s.inflight = nil
	s.accessMu.Unlock()
	return err
}
