package watch

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sort"
	"sync"
	"time"
)

// ErrDeferred is returned by a Warmer that did not try because upstream is
// backing off (an outage, a rate limit); the image waits for the next pass.
var ErrDeferred = errors.New("watch: deferred: upstream is backing off")

// Target is one watched image.
type Target struct {
	// Image is the reference as configured ("docker.io/library/alpine:latest").
	Image string
	// Platforms are "os/arch[/variant]" to fetch of a multi-platform image;
	// empty means the Warmer's default.
	Platforms []string
	// Pin keeps the image's current graph pinned.
	Pin bool
	// Warmed is the digest the image's last successful warm-up left it at
	// ("" before the first), set by the Scheduler for each run: a tag that
	// moved since has moved for the watch list even when a client's pull
	// saw the move first and updated the cache's record.
	Warmed string
}

// Result is what one warm-up did.
type Result struct {
	// Digest is what the image's tag points to now.
	Digest string
	// Moved: the tag pointed elsewhere before this run.
	Moved bool
	// Fetched is how many manifests and blobs came from upstream.
	Fetched int64
}

// Warmer warms one image. full asks for the whole graph even when the tag
// did not move (first pass, or after a failure).
type Warmer interface {
	Warm(ctx context.Context, t Target, full bool) (Result, error)
}

// Group is one [[watch]] entry: images sharing an interval.
type Group struct {
	// Targets lists the images; it is called at every pass, so a list read
	// from a file follows the file's edits. An error is logged and the
	// images it did return are warmed.
	Targets  func() ([]Target, error)
	Interval time.Duration
}

// Options configures a Scheduler.
type Options struct {
	Groups []Group
	Warmer Warmer
	// Jitter is the largest random delay added to each interval, as a
	// fraction of it (default 0.1; negative: none).
	Jitter float64
	Logger *slog.Logger
	// Now is the clock (tests).
	Now func() time.Time
}

// Status is one watched image's state.
type Status struct {
	Image    string
	Interval time.Duration
	// LastRun is when the last attempt ended (zero before the first);
	// NextRun when the next pass is due.
	LastRun, NextRun time.Time
	// Result of the last attempt: "ok" (unchanged), "moved" (a new graph
	// was fetched), "warmed" (the whole graph checked), "deferred" or
	// "failed".
	Result    string
	LastError string
	Digest    string
	// Failures counts failed attempts since start; Moves counts tag moves
	// seen; Fetched counts manifests and blobs fetched upstream.
	Failures, Moves, Fetched int64
}

// Scheduler runs the watch list.
type Scheduler struct {
	o    Options
	log  *slog.Logger
	kick []chan chan struct{} // one per group

	mu     sync.Mutex
	status map[string]*Status
	full   map[string]bool         // images whose next run walks the whole graph
	groups map[string]map[int]bool // the groups whose last pass listed each image
}

// New builds a Scheduler; Run starts it.
func New(o Options) *Scheduler {
	if o.Jitter == 0 {
		o.Jitter = 0.1
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Scheduler{o: o, log: o.Logger, status: map[string]*Status{}, full: map[string]bool{}, groups: map[string]map[int]bool{}}
	for range o.Groups {
		s.kick = append(s.kick, make(chan chan struct{}))
	}
	return s
}

// Run runs every group's schedule until ctx ends.
func (s *Scheduler) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for i, g := range s.o.Groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.loop(ctx, i, g, s.kick[i])
		}()
	}
	wg.Wait()
	return nil
}

// RunNow starts a pass of every group (after the one running, if any) and
// returns a channel closed when all of them are done. Run must be running.
func (s *Scheduler) RunNow(ctx context.Context) <-chan struct{} {
	all := make(chan struct{})
	var wg sync.WaitGroup
	for _, k := range s.kick {
		wg.Add(1)
		go func() {
			defer wg.Done()
			done := make(chan struct{})
			select {
			case k <- done:
				select {
				case <-done:
				case <-ctx.Done():
				}
			case <-ctx.Done():
			}
		}()
	}
	go func() {
		wg.Wait()
		close(all)
	}()
	return all
}

func (s *Scheduler) loop(ctx context.Context, gi int, g Group, kick chan chan struct{}) {
	var done chan struct{} // a RunNow caller waiting for this pass
	for {
		s.pass(ctx, gi, g)
		if done != nil {
			close(done)
			done = nil
		}
		wait := g.Interval
		if s.o.Jitter > 0 {
			wait += time.Duration(rand.Int64N(int64(float64(g.Interval)*s.o.Jitter) + 1))
		}
		s.scheduled(g, s.o.Now().Add(wait))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case done = <-kick:
			t.Stop()
		}
	}
}

// scheduled records the next run of g's images.
func (s *Scheduler) scheduled(g Group, next time.Time) {
	targets, _ := g.Targets()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range targets {
		if st := s.status[t.Image]; st != nil {
			st.NextRun = next
		}
	}
}

func (s *Scheduler) pass(ctx context.Context, gi int, g Group) {
	targets, err := g.Targets()
	if err != nil {
		s.log.Warn("watch list: reading the images", "err", err)
	} else {
		s.forgetUnlisted(gi, targets)
	}
	for _, t := range targets {
		if ctx.Err() != nil {
			return
		}
		s.mu.Lock()
		if s.groups[t.Image] == nil {
			s.groups[t.Image] = map[int]bool{}
		}
		s.groups[t.Image][gi] = true
		s.mu.Unlock()
		s.warm(ctx, g, t)
	}
}

// forgetUnlisted drops the state of the images group gi listed before and
// lists no more (taken off a watch file) unless another group still lists
// them: the status page and /metrics show only what is watched.
func (s *Scheduler) forgetUnlisted(gi int, targets []Target) {
	listed := map[string]bool{}
	for _, t := range targets {
		listed[t.Image] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for image, gs := range s.groups {
		if !gs[gi] || listed[image] {
			continue
		}
		delete(gs, gi)
		if len(gs) == 0 {
			delete(s.status, image)
			delete(s.full, image)
			delete(s.groups, image)
		}
	}
}

func (s *Scheduler) warm(ctx context.Context, g Group, t Target) {
	s.mu.Lock()
	st := s.status[t.Image]
	if st == nil {
		st = &Status{Image: t.Image}
		s.status[t.Image] = st
		s.full[t.Image] = true
	}
	st.Interval = g.Interval
	full := s.full[t.Image]
	t.Warmed = st.Digest
	s.mu.Unlock()

	start := s.o.Now()
	res, err := s.o.Warmer.Warm(ctx, t, full)
	if ctx.Err() != nil {
		return // shutting down: not a failure of the image
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st.LastRun = s.o.Now()
	st.LastError = ""
	st.Fetched += res.Fetched
	switch {
	case errors.Is(err, ErrDeferred):
		st.Result = "deferred"
		s.log.Info("watch: deferred", "image", t.Image, "err", err)
		return
	case err != nil:
		st.Result, st.LastError = "failed", err.Error()
		st.Failures++
		s.full[t.Image] = true
		s.log.Warn("watch: warming failed", "image", t.Image, "err", err)
		return
	}
	s.full[t.Image] = false
	st.Digest = res.Digest
	switch {
	case res.Moved:
		st.Result = "moved"
		st.Moves++
	case full:
		st.Result = "warmed"
	default:
		st.Result = "ok"
	}
	s.log.Info("watch: warmed", "image", t.Image, "result", st.Result, "digest", res.Digest, "fetched", res.Fetched,
		"took_s", st.LastRun.Sub(start).Round(time.Millisecond).Seconds())
}

// Status returns every watched image's state, by image name.
func (s *Scheduler) Status() []Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Status, 0, len(s.status))
	for _, st := range s.status {
		out = append(out, *st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Image < out[j].Image })
	return out
}
