package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/regmirror/regmirror/airgap"
	"github.com/regmirror/regmirror/imageref"
	"github.com/regmirror/regmirror/proxy"
	"github.com/regmirror/regmirror/watch"
)

// defaultWatchInterval applies to a [[watch]] entry without interval.
const defaultWatchInterval = 30 * time.Minute

// check validates a [[watch]] entry and fills its defaults.
func (w *watchConfig) check(i int) error {
	var errs []error
	if w.Interval.Duration == 0 {
		w.Interval.Duration = defaultWatchInterval
	}
	if w.Interval.Duration < time.Second {
		errs = append(errs, fmt.Errorf("watch[%d]: interval %s: must be at least 1s", i, w.Interval.Duration))
	}
	if len(w.Images) == 0 && w.File == "" {
		errs = append(errs, fmt.Errorf("watch[%d]: give images, a file, or both", i))
	}
	for _, img := range w.Images {
		if _, err := imageref.Parse(img); err != nil {
			errs = append(errs, fmt.Errorf("watch[%d]: image %q: %w", i, img, err))
		}
	}
	if w.File != "" {
		if _, err := w.readFile(); err != nil {
			errs = append(errs, fmt.Errorf("watch[%d]: %w", i, err))
		}
	}
	if _, err := w.platforms(); err != nil {
		errs = append(errs, fmt.Errorf("watch[%d]: platforms: %w", i, err))
	}
	return errors.Join(errs...)
}

func (w *watchConfig) readFile() ([]imageref.Ref, error) {
	f, err := os.Open(w.File)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return airgap.ParseImageList(f, w.File)
}

// platforms: the entry's, else preload's default (linux/amd64 and the
// host's own).
func (w *watchConfig) platforms() ([]v1.Platform, error) {
	return airgap.ChoosePlatforms(strings.Join(w.Platforms, ","), false)
}

// targets lists the entry's images: the config's, then the file's, read
// again at every pass so that edits apply without a restart.
func (w *watchConfig) targets() ([]watch.Target, error) {
	var out []watch.Target
	seen := map[string]bool{}
	add := func(r imageref.Ref) {
		if !seen[r.String()] {
			seen[r.String()] = true
			out = append(out, watch.Target{Image: r.String(), Platforms: w.Platforms, Pin: w.Pin})
		}
	}
	for _, img := range w.Images {
		if r, err := imageref.Parse(img); err == nil {
			add(r)
		}
	}
	var err error
	if w.File != "" {
		var refs []imageref.Ref
		refs, err = w.readFile()
		for _, r := range refs {
			add(r)
		}
	}
	return out, err
}

// newWatch builds the watch list's scheduler, or nil if there is none.
func (a *app) newWatch() *watch.Scheduler {
	if len(a.cfg.Watch) == 0 {
		return nil
	}
	var groups []watch.Group
	for _, w := range a.cfg.Watch {
		groups = append(groups, watch.Group{Targets: w.targets, Interval: w.Interval.Duration})
	}
	return watch.New(watch.Options{Groups: groups, Warmer: &warmer{a: a}, Logger: a.log.With("component", "watch")})
}

// warmer warms one watched image with the running server: the tag is
// revalidated by the proxy (a HEAD, shared with any client pulling it at
// the same moment) and, when it moved (or on a full run), the graph is
// read through the server's own HTTP endpoint exactly as preload reads it,
// so every blob goes through the one fill per digest that clients join.
type warmer struct{ a *app }

func (w *warmer) Warm(ctx context.Context, t watch.Target, full bool) (watch.Result, error) {
	ref, err := imageref.Parse(t.Image)
	if err != nil {
		return watch.Result{}, err
	}
	plats, err := airgap.ChoosePlatforms(strings.Join(t.Platforms, ","), false)
	if err != nil {
		return watch.Result{}, err
	}
	var res watch.Result
	top := ref
	if ref.Digest == "" {
		check, err := w.a.proxy.RevalidateTag(ctx, ref.Registry, ref.Repo, ref.Tag)
		switch {
		case errors.Is(err, proxy.ErrUpstreamOut):
			return res, fmt.Errorf("%w: %v", watch.ErrDeferred, err)
		case err != nil:
			return res, err
		case check.Outcome == proxy.OutcomeStale:
			return res, fmt.Errorf("%s: upstream did not answer; the cached tag stays", ref)
		}
		// Moved since the cache's record, or since this image was last
		// warmed (a client's pull may have seen the move first).
		moved := check.Moved() || t.Warmed != "" && check.Digest.String() != t.Warmed
		res.Digest, res.Moved = check.Digest.String(), moved && (check.Previous != "" || t.Warmed != "")
		if check.Outcome == proxy.OutcomeMiss {
			res.Fetched++ // the new manifest
		}
		if !moved && !full {
			return res, nil
		}
		top.Digest = check.Digest
	} else {
		res.Digest = ref.Digest.String()
		if !full {
			return res, nil
		}
	}
	// The tag was just recorded: read the graph by digest, through the server.
	p, err := airgap.NewPuller(w.a.target().mirror()) // its transport's token passes access control
	if err != nil {
		return res, err
	}
	defer p.Close()
	opts := airgap.PullOptions{Platforms: plats}
	if t.Pin {
		opts.Pin = func(ctx context.Context, ds []digest.Digest) error { return w.a.cache.Ops.Pin(ctx, ref.String(), ds) }
	}
	pulled, err := p.Pull(ctx, top, opts)
	res.Fetched += pulled.Fetched
	digests := pulled.Digests
	if err != nil {
		return res, err
	}
	if t.Pin {
		if err := w.a.cache.Ops.Pin(ctx, ref.String(), digests); err != nil {
			return res, err
		}
	}
	return res, nil
}

// watchStatus is what the status page reads of the watch list (nil when
// there is none).
func (a *app) watchStatus() []watch.Status {
	if a.watch == nil {
		return nil
	}
	return a.watch.Status()
}

// watchCollector exports the watch list's state at scrape time.
type watchCollector struct{ a *app }

var (
	watchLastRun = prometheus.NewDesc("regmirror_watch_last_run_timestamp_seconds",
		"When the watch list last warmed the image (Unix time).", []string{"image"}, nil)
	watchNextRun = prometheus.NewDesc("regmirror_watch_next_run_timestamp_seconds",
		"When the watch list warms the image next (Unix time).", []string{"image"}, nil)
	watchFailures = prometheus.NewDesc("regmirror_watch_failures_total",
		"Failed warm-ups of the image since start.", []string{"image"}, nil)
	watchMoves = prometheus.NewDesc("regmirror_watch_tag_moves_total",
		"Tag moves the watch list found (and fetched) since start.", []string{"image"}, nil)
	watchFetched = prometheus.NewDesc("regmirror_watch_fetched_total",
		"Manifests and blobs the watch list fetched from upstream since start.", []string{"image"}, nil)
	watchOK = prometheus.NewDesc("regmirror_watch_last_run_ok",
		"1 if the image's last warm-up succeeded (or was deferred), else 0.", []string{"image"}, nil)
)

func (c watchCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{watchLastRun, watchNextRun, watchFailures, watchMoves, watchFetched, watchOK} {
		ch <- d
	}
}

func (c watchCollector) Collect(ch chan<- prometheus.Metric) {
	unix := func(t time.Time) float64 {
		if t.IsZero() {
			return 0
		}
		return float64(t.UnixNano()) / 1e9
	}
	for _, st := range c.a.watchStatus() {
		ok := 1.0
		if st.Result == "failed" {
			ok = 0
		}
		ch <- prometheus.MustNewConstMetric(watchLastRun, prometheus.GaugeValue, unix(st.LastRun), st.Image)
		ch <- prometheus.MustNewConstMetric(watchNextRun, prometheus.GaugeValue, unix(st.NextRun), st.Image)
		ch <- prometheus.MustNewConstMetric(watchFailures, prometheus.CounterValue, float64(st.Failures), st.Image)
		ch <- prometheus.MustNewConstMetric(watchMoves, prometheus.CounterValue, float64(st.Moves), st.Image)
		ch <- prometheus.MustNewConstMetric(watchFetched, prometheus.CounterValue, float64(st.Fetched), st.Image)
		ch <- prometheus.MustNewConstMetric(watchOK, prometheus.GaugeValue, ok, st.Image)
	}
}
