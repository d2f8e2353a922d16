package cache

import (
	"errors"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// gcLoop runs Badger's value-log GC every gcEvery until Close.
func (s *Store) gcLoop() {
	defer s.loops.Done()
	t := time.NewTicker(s.gcEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		for n := 0; ; n++ {
			select {
			case <-s.stop:
				return
			default:
			}
			err := s.db.RunValueLogGC(0.5)
			if err == nil {
				continue
			}
			if !errors.Is(err, badger.ErrNoRewrite) && !errors.Is(err, badger.ErrRejected) {
				s.log.Warn("index value-log GC", "err", err)
			} else if n > 0 {
				s.log.Debug("index value-log GC", "rewrites", n)
			}
			break
		}
	}
}
