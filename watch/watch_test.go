package watch

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

type fakeWarmer struct {
	mu    sync.Mutex
	calls []bool // full flags
	errs  []error
	moved bool
}

func (f *fakeWarmer) Warm(_ context.Context, t Target, full bool) (Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, full)
	if len(f.errs) > 0 {
		err := f.errs[0]
		f.errs = f.errs[1:]
		if err != nil {
			return Result{}, err
		}
	}
	return Result{Digest: "sha256:x", Moved: f.moved, Fetched: 2}, nil
}

// TestScheduler: a pass at start, then one per RunNow (an interval of a
// day never elapses); a failure is counted and makes the next run full; a
// deferred run is no failure.
func TestScheduler(t *testing.T) {
	w := &fakeWarmer{errs: []error{nil, errors.New("boom"), nil, ErrDeferred}}
	s := New(Options{
		Groups: []Group{{Interval: 24 * time.Hour, Targets: func() ([]Target, error) {
			return []Target{{Image: "docker.io/library/a:latest"}}, nil
		}}},
		Warmer: w,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	<-s.RunNow(ctx) // after the startup pass
	st := s.Status()
	if len(st) != 1 || st[0].Failures != 1 || st[0].Result != "failed" || st[0].LastError != "boom" {
		t.Fatalf("after a failed pass: %+v", st)
	}
	if !st[0].NextRun.After(st[0].LastRun) || st[0].NextRun.Sub(st[0].LastRun) > 24*time.Hour*11/10+time.Second {
		t.Errorf("next run %v, last %v: want one interval plus at most 10%%", st[0].NextRun, st[0].LastRun)
	}
	<-s.RunNow(ctx)
	w.moved = true
	<-s.RunNow(ctx)
	st = s.Status()
	if st[0].Result != "deferred" || st[0].Failures != 1 {
		t.Errorf("deferred: %+v", st[0])
	}
	w.mu.Lock()
	calls := append([]bool(nil), w.calls...)
	w.mu.Unlock()
	// start (full), failed (not full), after failure (full), deferred (not full)
	want := []bool{true, false, true, false}
	if len(calls) != len(want) {
		t.Fatalf("calls %v, want %v", calls, want)
	}
	for i := range want {
		if calls[i] != want[i] {
			t.Errorf("call %d full=%v, want %v", i, calls[i], want[i])
		}
	}
	<-s.RunNow(ctx)
	if st := s.Status(); st[0].Result != "moved" || st[0].Moves != 1 || st[0].Fetched != 2*3 {
		t.Errorf("moved: %+v", st[0])
	}
}

// TestSchedulerForgetsUnlistedImages: an image taken off the list (a
// watch file edited) leaves the status, from the next pass on.
func TestSchedulerForgetsUnlistedImages(t *testing.T) {
	var mu sync.Mutex
	images := []string{"docker.io/library/a:latest", "docker.io/library/b:latest"}
	s := New(Options{
		Groups: []Group{{Interval: 24 * time.Hour, Targets: func() ([]Target, error) {
			mu.Lock()
			defer mu.Unlock()
			var ts []Target
			for _, i := range images {
				ts = append(ts, Target{Image: i})
			}
			return ts, nil
		}}},
		Warmer: &fakeWarmer{},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-s.RunNow(ctx)
	if st := s.Status(); len(st) != 2 {
		t.Fatalf("status of two watched images: %+v", st)
	}
	mu.Lock()
	images = images[:1]
	mu.Unlock()
	<-s.RunNow(ctx)
	if st := s.Status(); len(st) != 1 || st[0].Image != "docker.io/library/a:latest" {
		t.Fatalf("status after b was taken off the list: %+v", st)
	}
}

// TestImageInTwoGroups: an image two groups list stays watched when one of
// them drops it (before: forgotten, then warmed again in full by the other
// group's next pass), and goes when the last one does.
func TestImageInTwoGroups(t *testing.T) {
	var mu sync.Mutex
	a, b := "docker.io/library/a:latest", "docker.io/library/b:latest"
	lists := [][]string{{a, b}, {b}}
	group := func(i int) Group {
		return Group{Interval: 24 * time.Hour, Targets: func() ([]Target, error) {
			mu.Lock()
			defer mu.Unlock()
			var ts []Target
			for _, img := range lists[i] {
				ts = append(ts, Target{Image: img})
			}
			return ts, nil
		}}
	}
	w := &imageWarmer{}
	s := New(Options{Groups: []Group{group(0), group(1)}, Warmer: w})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-s.RunNow(ctx)
	mu.Lock()
	lists[0] = []string{a}
	mu.Unlock()
	for range 3 {
		<-s.RunNow(ctx)
	}
	if st := s.Status(); len(st) != 2 {
		t.Fatalf("status after one of b's two groups dropped it: %+v", st)
	}
	if n := w.fullRuns(b); n != 1 {
		t.Errorf("b was warmed in full %d times, want once (the first run)", n)
	}
	mu.Lock()
	lists[1] = nil
	mu.Unlock()
	<-s.RunNow(ctx)
	if st := s.Status(); len(st) != 1 || st[0].Image != a {
		t.Fatalf("status after both groups dropped b: %+v", st)
	}
}

// imageWarmer records which images were warmed in full.
type imageWarmer struct {
	mu   sync.Mutex
	full map[string]int
}

func (w *imageWarmer) Warm(_ context.Context, t Target, full bool) (Result, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if full {
		if w.full == nil {
			w.full = map[string]int{}
		}
		w.full[t.Image]++
	}
	return Result{Digest: "sha256:x"}, nil
}

func (w *imageWarmer) fullRuns(image string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.full[image]
}
