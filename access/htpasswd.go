package access

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// htpasswd is the user table read from an htpasswd file, re-read when the
// file changes. The format is registry:2's: one `user:hash` a line, hash
// a bcrypt hash ($2y$, $2a$ or $2b$, as `htpasswd -B` writes); blank lines
// and lines starting with '#' are ignored.
//
// go-htpasswd (tg123) was considered: it accepts every historic hash kind,
// returns false at once for an unknown user (so the time of an answer
// tells whether a user exists) and reports bad lines without their
// number; the parsing needed here is a dozen lines.
type htpasswd struct {
	path string
	now  func() time.Time
	mu   sync.Mutex
	tbl  *userTable
	// checked is when the file was last stat'ed; mtime and size identify
	// the version the table was read from.
	checked time.Time
	mtime   time.Time
	size    int64
	// onReload is told of each reload and of each failed one (err set).
	onReload func(users int, err error)
}

type userTable struct {
	gen    uint64 // bumped on each reload; cached credentials of an older one are void
	hashes map[string][]byte
	dummy  []byte // compared against for unknown users
}

// reloadEvery is how often the file is stat'ed at most.
const reloadEvery = time.Second

func openHtpasswd(path string, now func() time.Time) (*htpasswd, error) {
	h := &htpasswd{path: path, now: now}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("htpasswd_file: %w", err)
	}
	tbl, err := readHtpasswd(path, 1)
	if err != nil {
		return nil, err
	}
	h.tbl, h.mtime, h.size, h.checked = tbl, fi.ModTime(), fi.Size(), now()
	return h, nil
}

// table returns the current users, re-reading the file if it changed. A
// file that became unreadable or invalid keeps the last good table (and is
// reported through onReload) so that a half-written edit locks nobody out.
func (h *htpasswd) table() *userTable {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.now()
	if now.Sub(h.checked) < reloadEvery && !now.Before(h.checked) {
		return h.tbl
	}
	h.checked = now
	fi, err := os.Stat(h.path)
	if err != nil {
		h.report(0, fmt.Errorf("htpasswd_file: %w", err))
		return h.tbl
	}
	if fi.ModTime().Equal(h.mtime) && fi.Size() == h.size {
		return h.tbl
	}
	tbl, err := readHtpasswd(h.path, h.tbl.gen+1)
	if err != nil {
		h.report(0, err)
		return h.tbl
	}
	h.tbl, h.mtime, h.size = tbl, fi.ModTime(), fi.Size()
	h.report(len(tbl.hashes), nil)
	return h.tbl
}

func (h *htpasswd) report(users int, err error) {
	if h.onReload != nil {
		h.onReload(users, err)
	}
}

// readHtpasswd parses the file; every bad line is an error naming it.
func readHtpasswd(path string, gen uint64) (*userTable, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("htpasswd_file: %w", err)
	}
	tbl := &userTable{gen: gen, hashes: map[string][]byte{}}
	var errs []error
	maxCost := bcrypt.MinCost
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		switch {
		case !ok || user == "":
			errs = append(errs, fmt.Errorf("%s line %d: want user:bcrypt-hash", path, n))
			continue
		case user == Anonymous || user == "*":
			errs = append(errs, fmt.Errorf("%s line %d: %q is reserved and cannot be a user name", path, n, user))
			continue
		case reservedUsers[user]:
			errs = append(errs, fmt.Errorf("%s line %d: %q is reserved for the mirror's own requests and cannot be a user name", path, n, user))
			continue
		case tbl.hashes[user] != nil:
			errs = append(errs, fmt.Errorf("%s line %d: user %q appears twice", path, n, user))
			continue
		}
		cost, err := bcrypt.Cost([]byte(hash))
		if err != nil || !(strings.HasPrefix(hash, "$2y$") || strings.HasPrefix(hash, "$2a$") || strings.HasPrefix(hash, "$2b$")) {
			errs = append(errs, fmt.Errorf("%s line %d: user %q: not a bcrypt hash (create entries with `htpasswd -B`)", path, n, user))
			continue
		}
		maxCost = max(maxCost, cost)
		tbl.hashes[user] = []byte(hash)
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", path, err))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	// The dummy costs what the dearest real entry costs, so that an
	// unknown user is not answered faster than a known one.
	tbl.dummy, err = bcrypt.GenerateFromPassword([]byte("regmirror dummy password"), maxCost)
	if err != nil {
		return nil, err
	}
	return tbl, nil
}

// credCache remembers verified and refused credentials for a short time,
// so that bcrypt runs once per client and TTL, not once per request. Keys
// are HMACs of user and password under a per-process random key: the
// passwords themselves are never kept. Refusals are kept apart, so that a
// flood of wrong credentials, which fills and clears them, never drops an
// accepted one.
type credCache struct {
	key      []byte
	macs     sync.Pool // of hash.Hash: HMAC-SHA256 under key
	ttl      time.Duration
	mu       sync.Mutex
	accepted map[[sha256.Size]byte]credEntry
	refused  map[[sha256.Size]byte]credEntry
	// flights are the verifications running: parallel requests with one
	// credential (a client pulling layers at once) share one.
	flights map[[sha256.Size]byte]*credFlight
}

type credEntry struct {
	gen     uint64
	expires time.Time
}

type credFlight struct {
	gen  uint64
	addr string        // whose address verifies: set by the owner before done
	done chan struct{} // closed once ok and err are set
	ok   bool
	err  error // the verification was refused (not run)
}

// maxCredEntries bounds each of accepted and refused; past it expired
// entries are dropped, and if that is not enough, all of that map.
const maxCredEntries = 4096

func (c *credCache) keyOf(user, password string) [sha256.Size]byte {
	m, ok := c.macs.Get().(hash.Hash)
	if !ok {
		m = hmac.New(sha256.New, c.key)
	}
	m.Reset()
	m.Write([]byte(user))
	m.Write([]byte{0})
	m.Write([]byte(password))
	var k [sha256.Size]byte
	m.Sum(k[:0])
	c.macs.Put(m)
	return k
}

// lookup finds k's verdict (found), else the verification of k running
// (fl), else records that the caller verifies k (fl, own): in one critical
// section, so that two requests with one credential never both verify it.
func (c *credCache) lookup(k [sha256.Size]byte, gen uint64, now time.Time) (fl *credFlight, own, ok, found bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, in := c.accepted[k]; in && e.gen == gen && now.Before(e.expires) {
		return nil, false, true, true
	}
	if e, in := c.refused[k]; in && e.gen == gen && now.Before(e.expires) {
		return nil, false, false, true
	}
	if fl := c.flights[k]; fl != nil && fl.gen == gen {
		return fl, false, false, false
	}
	fl = &credFlight{gen: gen, done: make(chan struct{})}
	c.flights[k] = fl
	return fl, true, false, false
}

// land hands fl's outcome to those waiting and keeps its verdict; a
// refusal (err) is not a verdict and is not kept.
func (c *credCache) land(k [sha256.Size]byte, fl *credFlight, ok bool, err error, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.flights[k] == fl {
		delete(c.flights, k)
	}
	fl.ok, fl.err = ok, err
	close(fl.done)
	if err != nil {
		return
	}
	m := c.refused
	if ok {
		m = c.accepted
	}
	if len(m) >= maxCredEntries {
		for key, e := range m {
			if e.gen != fl.gen || !now.Before(e.expires) {
				delete(m, key)
			}
		}
		if len(m) >= maxCredEntries {
			clear(m)
		}
	}
	ttl := c.ttl
	if !ok {
		// A refusal is kept as long as failures count: a client repeating
		// a stale password then costs one failure, not one a minute.
		// (The table's generation ends it when the password changes.)
		ttl = max(ttl, failWindow)
	}
	m[k] = credEntry{gen: fl.gen, expires: now.Add(ttl)}
}

// compareHash is bcrypt's comparison; tests count its calls.
var compareHash = bcrypt.CompareHashAndPassword

func bcryptMatch(hash []byte, password string) bool {
	return compareHash(hash, []byte(password)) == nil
}
