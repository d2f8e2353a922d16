package main

import (
	"log/slog"

	"github.com/regmirror/regmirror/eviction"
	"github.com/regmirror/regmirror/internal/stack"
)

// This file maps the validated config to each component's options: pure
// functions, no disk, no network (see options_test.go).

// stackOptions are the cache stack's options. background: serve loads
// eviction's view after opening, so that a large cache serves at once.
func (c config) stackOptions(log *slog.Logger, background bool) stack.Options {
	minFree, _ := eviction.ParseSize(c.Cache.MinFree) // checked by finish
	scrubRate, _ := parseRate(c.Cache.ScrubRate)      // checked by finish
	return stack.Options{
		Dir:              c.DataDir,
		MaxSize:          c.Cache.MaxSize,
		HighWatermark:    c.Cache.HighWatermark,
		LowWatermark:     c.Cache.LowWatermark,
		MinFree:          minFree,
		MinFreeIsDefault: c.Cache.MinFree == defaultConfig().Cache.MinFree,
		EvictInterval:    c.Cache.EvictInterval.Duration,
		ScrubInterval:    c.Cache.ScrubInterval.Duration,
		ScrubRate:        scrubRate,
		ScrubTrigger:     c.Cache.scrubTrigger,
		Background:       background,
		Logger:           log,
	}
}

// openStack opens the data dir as configured (see stack.Open).
func openStack(cfg config, log *slog.Logger) (*stack.Stack, error) {
	return stack.Open(cfg.stackOptions(log, false))
}
