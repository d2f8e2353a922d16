package cache

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// The Badger index: its options, writes and logging.

// Badger's file sizes, which DefaultIndexReserve is computed from.
const (
	memTableSize     = 16 << 20
	valueLogFileSize = 64 << 20
)

// badgerOptions are the index's Badger options.
func badgerOptions(dir string, log *slog.Logger) badger.Options {
	return badger.DefaultOptions(dir).
		WithLogger(badgerLogger{log.With("component", "badger")}).
		WithLoggingLevel(badger.WARNING).
		// Commit's crash-safety argument relies on the index record being
		// durable once Commit returns; index writes are rare next to the
		// blob fsyncs they follow.
		WithSyncWrites(true).
		// The index is small: records are tens of bytes. Keep Badger's
		// memory and preallocated files modest.
		WithMemTableSize(memTableSize).
		WithNumMemtables(2).
		WithBlockCacheSize(16 << 20).
		WithCompression(options.None).
		WithValueLogFileSize(valueLogFileSize).
		WithNumCompactors(2).
		WithMetricsEnabled(false)
}

// update runs fn in a read-write transaction, retrying on conflicts with
// concurrent transactions (the access flush touches the same keys).
func (s *Store) update(fn func(txn *badger.Txn) error) error {
	for i := 0; ; i++ {
		s.indexWrites.Add(1)
		err := s.db.Update(fn)
		if errors.Is(err, badger.ErrConflict) && i < 10 {
			continue
		}
		return classify(err)
	}
}

// badgerLogger adapts Badger's logger to slog. Badger is set to log at
// WARNING, so Infof and Debugf are rarely called.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any) {
	b.l.Error(strings.TrimSpace(fmt.Sprintf(f, a...)))
}

func (b badgerLogger) Warningf(f string, a ...any) {
	b.l.Warn(strings.TrimSpace(fmt.Sprintf(f, a...)))
}

func (b badgerLogger) Infof(f string, a ...any) {
	b.l.Debug(strings.TrimSpace(fmt.Sprintf(f, a...)))
}

func (b badgerLogger) Debugf(f string, a ...any) {
	b.l.Debug(strings.TrimSpace(fmt.Sprintf(f, a...)))
}
