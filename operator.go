package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/dustin/go-humanize"

	"github.com/regmirror/regmirror/imageref"
	"github.com/regmirror/regmirror/internal/stack"
	"github.com/regmirror/regmirror/proxy"
	"github.com/regmirror/regmirror/status"
)

// operatorOptions wires the status page, /readyz and the rate-limit shield.
func operatorOptions(cfg config, a *app) proxy.OperatorOptions {
	st := a.cache
	pulls, fraction, _ := parseReserve(cfg.Server.RateLimitReserve) // checked by finish
	return proxy.OperatorOptions{
		Version:                  buildVersion(),
		Cache:                    func() status.CacheFigures { return cacheFigures(st) },
		Ready:                    func() []proxy.Check { return readiness(st) },
		Watch:                    a.watchedForStatus,
		RateLimitReservePulls:    pulls,
		RateLimitReserveFraction: fraction,
	}
}

// watchedForStatus is the watch list as the status page shows it.
func (a *app) watchedForStatus() []status.Watched {
	var out []status.Watched
	for _, w := range a.watchStatus() {
		ref, err := imageref.Parse(w.Image)
		if err != nil {
			continue
		}
		out = append(out, status.Watched{
			Image: ref.String(), Registry: ref.Registry, Repo: ref.Repo, Result: w.Result, Digest: w.Digest,
			LastRun: w.LastRun, NextRun: w.NextRun, Failures: w.Failures, Moves: w.Moves,
		})
	}
	return out
}

// parseReserve reads server.ratelimit_reserve: "10%" (a share of the
// limit), "20" (pulls) or "0" (no shield). A negative fraction means none.
func parseReserve(s string) (pulls int, fraction float64, err error) {
	s = strings.TrimSpace(s)
	bad := fmt.Errorf("server.ratelimit_reserve %q: want a share of the limit like \"10%%\", a number of pulls, or \"0\"", s)
	if pct, ok := strings.CutSuffix(s, "%"); ok {
		f, err := strconv.ParseFloat(strings.TrimSpace(pct), 64)
		if err != nil || f < 0 || f > 100 {
			return 0, 0, bad
		}
		if f == 0 {
			return 0, -1, nil
		}
		return 0, f / 100, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, 0, bad
	}
	if n == 0 {
		return 0, -1, nil
	}
	return n, 0, nil
}

// figures are the cache's numbers for the status page.
func cacheFigures(st *stack.Stack) status.CacheFigures {
	s := st.Evictor.Stats()
	f := status.CacheFigures{
		UsedBytes: s.Bytes, Blobs: s.Blobs, PinnedBytes: s.PinnedBytes, PinnedBlobs: s.PinnedBlobs,
		MinFree: s.MinFree, FreeBytes: -1, BudgetBytes: st.Ops.MaxBytes,
	}
	if st.Ops.FreeSpace != nil {
		if free, err := st.Ops.FreeSpace(); err == nil {
			f.FreeBytes = free
		}
	}
	return f
}

// readiness is what /readyz checks: the index answers, and the disk has
// min_free or eviction can still make it.
func readiness(st *stack.Stack) []proxy.Check {
	index := proxy.Check{Name: "index", OK: true}
	if !st.Ready() {
		index = proxy.Check{Name: "index", Reason: "opening and reconciling the cache"}
	} else if err := st.Store.Check(); err != nil {
		index = proxy.Check{Name: "index", Reason: "the index is failing: " + err.Error()}
	}
	disk := proxy.Check{Name: "disk", OK: true}
	s := st.Evictor.Stats()
	if st.Ops.FreeSpace != nil {
		free, err := st.Ops.FreeSpace()
		switch {
		case err != nil:
			disk = proxy.Check{Name: "disk", Reason: "cannot read free space: " + err.Error()}
		case free < s.MinFree && s.Bytes-s.PinnedBytes <= 0:
			disk = proxy.Check{Name: "disk", Reason: fmt.Sprintf("%s free, below min_free %s, and nothing left to evict",
				humanize.IBytes(uint64(max(free, 0))), humanize.IBytes(uint64(s.MinFree)))}
		case free < s.MinFree:
			disk.Reason = "below min_free; eviction is making room"
		}
	}
	return []proxy.Check{index, disk}
}
