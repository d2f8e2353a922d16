package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/opencontainers/go-digest"
	"github.com/urfave/cli/v2"

	"github.com/regmirror/regmirror/cache"
	"github.com/regmirror/regmirror/s3tier"
)

// s3Config is the [s3] section: the shared S3 tier (README "Running several
// nodes"). Absent: a single box, as without it.
type s3Config struct {
	Endpoint      string `toml:"endpoint"`
	Bucket        string `toml:"bucket"`
	Prefix        string `toml:"prefix"`
	Region        string `toml:"region"`
	AccessKey     string `toml:"access_key"`
	SecretKey     string `toml:"secret_key"`
	SecretKeyEnv  string `toml:"secret_key_env"`
	SecretKeyFile string `toml:"secret_key_file"`
	PathStyle     bool   `toml:"path_style"`
	Redirect      bool   `toml:"redirect"`
	// Timeout bounds the wait for the store's answer (default 5s); Backoff
	// is how long a store that failed is skipped (default 30s).
	Timeout duration `toml:"timeout"`
	Backoff duration `toml:"backoff"`
}

// secret is the secret key from secret_key, the variable secret_key_env
// names, or secret_key_file (one of them).
func (c *s3Config) secret() (string, error) {
	set := 0
	for _, v := range []string{c.SecretKey, c.SecretKeyEnv, c.SecretKeyFile} {
		if v != "" {
			set++
		}
	}
	if set > 1 {
		return "", fmt.Errorf("s3: set one of secret_key, secret_key_env, secret_key_file")
	}
	switch {
	case c.SecretKeyEnv != "":
		v, ok := os.LookupEnv(c.SecretKeyEnv)
		if !ok {
			return "", fmt.Errorf("s3.secret_key_env: $%s is not set", c.SecretKeyEnv)
		}
		return v, nil
	case c.SecretKeyFile != "":
		b, err := os.ReadFile(c.SecretKeyFile)
		if err != nil {
			return "", fmt.Errorf("s3.secret_key_file: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	return c.SecretKey, nil
}

// check resolves the secret and has the tier check the rest (endpoint,
// bucket) when the config is loaded, before anything is written to disk.
func (c *s3Config) check(cfg config) error {
	o, err := c.options(cfg, nil)
	if err != nil {
		return err
	}
	t, err := s3tier.New(o) // no Files: no uploads, nothing on disk, no request
	if err != nil {
		return fmt.Errorf("[s3]: %w", err)
	}
	return t.Close()
}

// options maps [s3] to the tier's options (files and hold: serve's).
func (c *s3Config) options(cfg config, log *slog.Logger) (s3tier.Options, error) {
	secret, err := c.secret()
	if err != nil {
		return s3tier.Options{}, err
	}
	return s3tier.Options{
		Endpoint: c.Endpoint, Bucket: c.Bucket, Prefix: c.Prefix, Region: c.Region,
		AccessKey: c.AccessKey, SecretKey: secret, PathStyle: c.PathStyle, Redirect: c.Redirect,
		TagTTL: cfg.tagTTL(), Timeout: c.Timeout.Duration, Backoff: c.Backoff.Duration, Logger: log,
	}, nil
}

// openS3 opens the tier for serve: uploads from store's committed files,
// each held against eviction by hold until uploaded.
func openS3(cfg config, store *cache.Store, hold func(digest.Digest) func(), log *slog.Logger) (*s3tier.Tier, error) {
	o, err := cfg.S3.options(cfg, log)
	if err != nil {
		return nil, err
	}
	o.Files, o.Hold = store, hold
	o.PendingDir = filepath.Join(cfg.DataDir, "s3-pending") // uploads to resume after a restart
	return s3tier.New(o)
}

// gcS3 is `regmirror gc --s3 --older-than 30d`: deletes the bucket's
// objects under the prefix written longer ago than that, for stores
// without lifecycle rules.
func gcS3(c *cli.Context) error {
	cfg, log, err := setup(c)
	if err != nil {
		return err
	}
	if cfg.S3 == nil {
		return fmt.Errorf("gc --s3: the config has no [s3] section")
	}
	olderThan, err := parseAge(c.String("older-than"))
	if err != nil {
		return fmt.Errorf("--older-than: %w", err)
	}
	o, err := cfg.S3.options(cfg, log)
	if err != nil {
		return err
	}
	t, err := s3tier.New(o)
	if err != nil {
		return err
	}
	defer t.Close()
	res, err := t.GC(c.Context, olderThan)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "deleted %d objects (%s) older than %s from s3://%s/%s\n",
		res.Objects, humanize.IBytes(uint64(res.Bytes)), c.String("older-than"), cfg.S3.Bucket, cfg.S3.Prefix)
	return nil
}

// parseAge is a Go duration, or a number of days ("30d").
func parseAge(s string) (time.Duration, error) {
	if s == "" {
		return 0, fmt.Errorf("required with --s3, e.g. 30d")
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		var n int
		if _, err := fmt.Sscanf(days, "%d", &n); err != nil || n <= 0 || fmt.Sprint(n) != days {
			return 0, fmt.Errorf("%q: want e.g. 30d or 720h", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q: want e.g. 30d or 720h", s)
	}
	return d, nil
}
