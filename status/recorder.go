package status

import (
	"sort"
	"sync"
	"time"
)

// Event is one finished client request, as the proxy reports it.
type Event struct {
	Time     time.Time
	Client   string // the client's address
	Registry string // "" for requests that name none
	Repo     string
	Ref      string // tag or digest
	Endpoint string // manifest, blob, tags, referrers, …
	Outcome  string // hit, miss, join, revalidated, stale, bypass, or "" (the proxy's Outcome)
	// FromCache: the answer came from what the mirror held (hit,
	// revalidated, stale), not from upstream now; the proxy decides.
	FromCache bool
	Status    int
	Bytes     int64
}

// Sources are the live readings a Model is built from. Every field may be
// nil.
type Sources struct {
	Cache      func() CacheFigures
	Registries func() []State
	Downloads  func() []Download
	Watch      func() []Watched
}

// Options configures a Recorder. Zero values take the defaults named.
type Options struct {
	Version string
	Offline bool
	Sources Sources
	// Now is the clock (default time.Now); tests step it.
	Now func() time.Time
	// RecentPulls is the length of the last-pulls list (default 50).
	RecentPulls int
	// MaxRepos bounds how many repositories are counted (default 10000).
	MaxRepos int
	// Top is how many repositories each top list shows (default 10).
	Top int
}

// Recorder keeps the figures. It is safe for concurrent use.
type Recorder struct {
	opts  Options
	start time.Time

	mu     sync.Mutex
	total  counts
	window [windowBuckets]bucket
	regs   map[string]*regCounts
	repos  map[repoKey]*Repo
	recent []Pull // ring
	next   int    // next slot of recent
}

// windowBuckets minutes make the "last hour" window.
const windowBuckets = 60

type counts struct {
	requests, hits, misses int64
	bytes, hitBytes        int64
	upstreamBytes          int64
}

type bucket struct {
	minute int64 // Unix minute this bucket holds; stale buckets are skipped
	counts
}

type regCounts struct {
	requests, hits               int64
	upstream, upstreamErrs, upBy int64
}

type repoKey struct{ registry, repo string }

// New returns a Recorder started now.
func New(o Options) *Recorder {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.RecentPulls <= 0 {
		o.RecentPulls = 50
	}
	if o.MaxRepos <= 0 {
		o.MaxRepos = 10000
	}
	if o.Top <= 0 {
		o.Top = 10
	}
	return &Recorder{
		opts:   o,
		start:  o.Now(),
		regs:   map[string]*regCounts{},
		repos:  map[repoKey]*Repo{},
		recent: make([]Pull, 0, o.RecentPulls),
	}
}

// Request records a finished request.
func (r *Recorder) Request(ev Event) {
	if ev.Registry == "" {
		return
	}
	// Only cache answers count: errors and other endpoints have no outcome.
	hit, counted := ev.FromCache, ev.Outcome != ""
	r.mu.Lock()
	defer r.mu.Unlock()
	reg := r.reg(ev.Registry)
	if counted {
		reg.requests++
		add := func(c *counts) {
			c.requests++
			c.bytes += ev.Bytes
			if hit {
				c.hits++
				c.hitBytes += ev.Bytes
			} else {
				c.misses++
			}
		}
		add(&r.total)
		add(&r.bucket(ev.Time).counts)
		if hit {
			reg.hits++
		}
	}
	if ev.Repo == "" {
		return
	}
	rp := r.repo(ev.Registry, ev.Repo)
	rp.Bytes += ev.Bytes
	if ev.Endpoint == "manifest" && ev.Status < 400 {
		rp.Pulls++
	}
	if ev.Endpoint == "manifest" {
		p := Pull{Time: ev.Time, Client: ev.Client, Registry: ev.Registry, Repo: ev.Repo, Ref: ev.Ref, Outcome: ev.Outcome, Status: ev.Status}
		switch {
		case p.Outcome != "":
		case ev.Status == 404:
			p.Outcome = "not found"
		default:
			p.Outcome = "error"
		}
		if len(r.recent) < cap(r.recent) {
			r.recent = append(r.recent, p)
		} else {
			r.recent[r.next] = p
		}
		r.next = (r.next + 1) % cap(r.recent)
	}
}

// Upstream records one request to registry's upstream: bytes of body
// received and whether it failed (answers that say "not found" are not
// failures).
func (r *Recorder) Upstream(registry string, bytes int64, failed bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	reg := r.reg(registry)
	reg.upstream++
	if failed {
		reg.upstreamErrs++
	}
	r.addUpstreamBytesLocked(reg, bytes)
}

// UpstreamBytes records body bytes received from registry's upstream after
// its request was counted (a blob body as it streams).
func (r *Recorder) UpstreamBytes(registry string, bytes int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.addUpstreamBytesLocked(r.reg(registry), bytes)
}

func (r *Recorder) addUpstreamBytesLocked(reg *regCounts, bytes int64) {
	reg.upBy += bytes
	r.total.upstreamBytes += bytes
	r.bucket(r.opts.Now()).upstreamBytes += bytes
}

func (r *Recorder) reg(name string) *regCounts {
	c := r.regs[name]
	if c == nil {
		c = &regCounts{}
		r.regs[name] = c
	}
	return c
}

// bucket returns the window's bucket for t, cleared if it held an older
// minute.
func (r *Recorder) bucket(t time.Time) *bucket {
	m := t.Unix() / 60
	b := &r.window[m%windowBuckets]
	if b.minute != m {
		*b = bucket{minute: m}
	}
	return b
}

// repo returns the counts of registry/repo, forgetting the least pulled
// tenth of the repositories when the map is full.
func (r *Recorder) repo(registry, repo string) *Repo {
	k := repoKey{registry, repo}
	if rp := r.repos[k]; rp != nil {
		return rp
	}
	if len(r.repos) >= r.opts.MaxRepos {
		all := make([]*Repo, 0, len(r.repos))
		for _, rp := range r.repos {
			all = append(all, rp)
		}
		sort.Slice(all, func(i, j int) bool {
			if all[i].Pulls != all[j].Pulls {
				return all[i].Pulls < all[j].Pulls
			}
			return all[i].Bytes < all[j].Bytes
		})
		for _, rp := range all[:max(1, len(all)/10)] {
			delete(r.repos, repoKey{rp.Registry, rp.Repo})
		}
	}
	rp := &Repo{Registry: registry, Repo: repo}
	r.repos[k] = rp
	return rp
}

func ratios(c counts) Ratios {
	out := Ratios{
		Requests: c.requests, Hits: c.hits, Misses: c.misses,
		BytesServed: c.bytes, BytesFromHits: c.hitBytes, UpstreamBytes: c.upstreamBytes,
	}
	if c.requests > 0 {
		out.HitRatio = float64(c.hits) / float64(c.requests)
	}
	if c.bytes > 0 {
		out.ByteHitRatio = float64(c.hitBytes) / float64(c.bytes)
	}
	out.SavedBytes = c.hitBytes
	return out
}

// Model builds the page's data now. visible, if not nil, says whether the
// asking client may see a repository: the others' names are left out of
// downloads, top lists and recent pulls (their bytes stay in the totals,
// which name nothing).
func (r *Recorder) Model(visible func(registry, repo string) bool) Model {
	if visible == nil {
		visible = func(string, string) bool { return true }
	}
	now := r.opts.Now()
	m := Model{
		Version: r.opts.Version, GeneratedAt: now, StartedAt: r.start, Offline: r.opts.Offline,
		Cache:       CacheFigures{FreeBytes: -1},
		Registries:  []Registry{},
		Downloads:   []Download{},
		TopByBytes:  []Repo{},
		TopByPulls:  []Repo{},
		RecentPulls: []Pull{},
		Watch:       []Watched{},
	}
	src := r.opts.Sources
	if src.Cache != nil {
		m.Cache = src.Cache()
	}
	var states []State
	if src.Registries != nil {
		states = src.Registries()
	}
	if src.Downloads != nil {
		for _, d := range src.Downloads() {
			if visible(d.Registry, d.Repo) {
				m.Downloads = append(m.Downloads, d)
			}
		}
		sort.Slice(m.Downloads, func(i, j int) bool { return m.Downloads[i].Digest < m.Downloads[j].Digest })
	}
	if src.Watch != nil {
		for _, w := range src.Watch() {
			if visible(w.Registry, w.Repo) {
				m.Watch = append(m.Watch, w)
			}
		}
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	m.SinceStart = ratios(r.total)
	var hour counts
	nowMinute := now.Unix() / 60
	for _, b := range r.window {
		if b.minute > nowMinute-windowBuckets && b.minute <= nowMinute {
			hour.requests += b.requests
			hour.hits += b.hits
			hour.misses += b.misses
			hour.bytes += b.bytes
			hour.hitBytes += b.hitBytes
			hour.upstreamBytes += b.upstreamBytes
		}
	}
	m.LastHour = ratios(hour)
	for _, st := range states {
		c := r.regs[st.Name]
		if c == nil {
			c = &regCounts{}
		}
		reg := Registry{Name: st.Name, Requests: c.requests, Hits: c.hits,
			UpstreamRequests: c.upstream, UpstreamErrors: c.upstreamErrs, UpstreamBytes: c.upBy, State: st}
		if c.requests > 0 {
			reg.HitRatio = float64(c.hits) / float64(c.requests)
		}
		m.Registries = append(m.Registries, reg)
	}
	var repos []Repo
	for _, rp := range r.repos {
		if visible(rp.Registry, rp.Repo) {
			repos = append(repos, *rp)
		}
	}
	m.TopByBytes = top(repos, r.opts.Top, func(a, b Repo) bool { return a.Bytes > b.Bytes })
	m.TopByPulls = top(repos, r.opts.Top, func(a, b Repo) bool { return a.Pulls > b.Pulls })
	for i := range len(r.recent) { // newest first
		p := r.recent[(r.next-1-i+2*cap(r.recent))%cap(r.recent)]
		if visible(p.Registry, p.Repo) {
			m.RecentPulls = append(m.RecentPulls, p)
		}
	}
	return m
}

// top returns the first n of repos ordered by less, ties by name.
func top(repos []Repo, n int, less func(a, b Repo) bool) []Repo {
	out := append([]Repo(nil), repos...)
	sort.Slice(out, func(i, j int) bool {
		if less(out[i], out[j]) {
			return true
		}
		if less(out[j], out[i]) {
			return false
		}
		return out[i].Registry+"/"+out[i].Repo < out[j].Registry+"/"+out[j].Repo
	})
	if len(out) > n {
		out = out[:n]
	}
	if out == nil {
		out = []Repo{}
	}
	return out
}
