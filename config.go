package main

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/regmirror/regmirror/eviction"

	"github.com/regmirror/regmirror/imageref"
	"github.com/regmirror/regmirror/tagpolicy"
	"github.com/regmirror/regmirror/upstream"
)

// dockerHub is the registry the Docker daemon's mirror requests mean.
const (
	dockerHubName = imageref.DockerHub
	dockerHubURL  = upstream.DefaultDockerHubURL
)

// config is regmirror's whole configuration. Precedence, lowest first:
// these defaults, the TOML file (--config), REGMIRROR_* environment
// variables, flags. config.example.toml documents every key.
type config struct {
	Listen          string            `toml:"listen"`
	DataDir         string            `toml:"data_dir"`
	TagTTL          duration          `toml:"tag_ttl"`
	Offline         bool              `toml:"offline"`
	LogLevel        string            `toml:"log_level"`
	LogFormat       string            `toml:"log_format"`
	DefaultRegistry string            `toml:"default_registry"`
	DockerConfig    string            `toml:"docker_config"`
	Registries      []registryConfig  `toml:"registry"`
	Server          serverConfig      `toml:"server"`
	Cache           cacheConfig       `toml:"cache"`
	Pin             []string          `toml:"pin"`
	TagPolicy       []tagPolicyConfig `toml:"tag_policy"`
	Watch           []watchConfig     `toml:"watch"`
	// Auth is nil without an [auth] section: everyone may pull everything.
	Auth *authConfig `toml:"auth"`
	// Cluster is nil without a [cluster] section: a single node.
	Cluster *clusterConfig `toml:"cluster"`
	// S3 is nil without an [s3] section: no shared tier (s3config.go).
	S3 *s3Config `toml:"s3"`
}

// watchConfig is one [[watch]] entry (README "Watch list").
type watchConfig struct {
	Images    []string `toml:"images"`
	File      string   `toml:"file"`
	Interval  duration `toml:"interval"`
	Platforms []string `toml:"platforms"`
	Pin       bool     `toml:"pin"`
}

// tagPolicyConfig is one [[tag_policy]] rule (see package tagpolicy).
type tagPolicyConfig struct {
	Match                string    `toml:"match"`
	TTL                  *duration `toml:"ttl"`
	Immutable            bool      `toml:"immutable"`
	StaleWhileRevalidate bool      `toml:"stale_while_revalidate"`
}

type serverConfig struct {
	ReadTimeout       duration `toml:"read_timeout"`
	WriteTimeout      duration `toml:"write_timeout"`
	IdleTimeout       duration `toml:"idle_timeout"`
	ShutdownTimeout   duration `toml:"shutdown_timeout"`
	TLSCertFile       string   `toml:"tls_cert_file"`
	TLSKeyFile        string   `toml:"tls_key_file"`
	FillTimeout       duration `toml:"fill_timeout"`
	UpstreamTimeout   duration `toml:"upstream_timeout"`
	RevalidateTimeout duration `toml:"revalidate_timeout"`
	OutageBackoff     duration `toml:"outage_backoff"`
	// Connection caps (see proxy.Options): 0 = automatic, negative = none.
	MaxConnections      int    `toml:"max_connections"`
	MaxConnectionsPerIP int    `toml:"max_connections_per_ip"`
	RateLimitReserve    string `toml:"ratelimit_reserve"`

	// MinUpstreamRate ("10KiB" per second; "0" turns the guard off) over
	// MinUpstreamRateWindow: a slower blob body is resumed, then given up.
	MinUpstreamRate       string   `toml:"min_upstream_rate"`
	MinUpstreamRateWindow duration `toml:"min_upstream_rate_window"`
}

type cacheConfig struct {
	MaxSize       string   `toml:"max_size"`
	HighWatermark float64  `toml:"high_watermark"`
	LowWatermark  float64  `toml:"low_watermark"`
	MinFree       string   `toml:"min_free"`
	EvictInterval duration `toml:"evict_interval"`
	ScrubInterval duration `toml:"scrub_interval"`
	ScrubRate     string   `toml:"scrub_rate"`
	// HotSize bounds the memory of the proxy's hot cache (manifest bodies
	// and blob information of recent hits); "0" turns it off.
	HotSize string `toml:"hot_size"`

	// scrubTrigger, set by tests only, starts scrub passes instead of
	// scrub_interval's ticker.
	scrubTrigger <-chan time.Time
}

// duration reads "5m"-style strings from TOML.
type duration struct{ time.Duration }

func (d *duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

func (d duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

func defaultConfig() config {
	return config{
		Listen:          ":5000",
		DataDir:         "./data",
		TagTTL:          duration{5 * time.Minute},
		LogLevel:        "info",
		LogFormat:       "text",
		DefaultRegistry: dockerHubName,
		Server: serverConfig{
			ReadTimeout:       duration{time.Minute},
			WriteTimeout:      duration{time.Hour},
			IdleTimeout:       duration{2 * time.Minute},
			ShutdownTimeout:   duration{30 * time.Second},
			FillTimeout:       duration{2 * time.Hour},
			UpstreamTimeout:   duration{30 * time.Second},
			RevalidateTimeout: duration{5 * time.Second},
			OutageBackoff:     duration{30 * time.Second},
			RateLimitReserve:  "10%",

			MinUpstreamRate:       "10KiB",
			MinUpstreamRateWindow: duration{time.Minute},
		},
		Cache: cacheConfig{
			MaxSize:       "0",
			HighWatermark: 0.95,
			LowWatermark:  0.85,
			MinFree:       "1GiB",
			EvictInterval: duration{30 * time.Second},
			ScrubRate:     "10MiB/s",
			HotSize:       "32MiB",
		},
	}
}

// loadConfigFile overlays a TOML file on c. Unknown keys are an error: a
// typo must not silently leave a default in force.
func loadConfigFile(c *config, path string) error {
	md, err := toml.DecodeFile(path, c)
	if err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		keys := make([]string, len(undecoded))
		for i, k := range undecoded {
			keys[i] = k.String()
		}
		return fmt.Errorf("config %s: unknown keys: %s", path, strings.Join(keys, ", "))
	}
	return nil
}

// registry returns the entry for name, adding an empty one if absent.
func (c *config) registry(name string) *registryConfig {
	for i := range c.Registries {
		if c.Registries[i].Name == name {
			return &c.Registries[i]
		}
	}
	c.Registries = append(c.Registries, registryConfig{Name: name})
	return &c.Registries[len(c.Registries)-1]
}

// finish fills implied values and checks the whole configuration.
func (c *config) finish() error {
	// Registry names are canonical (lowercase; Docker Hub's aliases are
	// docker.io) before anything looks one up.
	for i := range c.Registries {
		c.Registries[i].Name = imageref.CanonicalRegistry(c.Registries[i].Name)
	}
	c.DefaultRegistry = imageref.CanonicalRegistry(c.DefaultRegistry)
	hub := c.registry(dockerHubName)
	if hub.URL == "" {
		hub.URL = dockerHubURL
	}
	var errs []error
	seen := map[string]bool{}
	aliasOf := map[string]string{}
	for i := range c.Registries {
		r := &c.Registries[i]
		if r.Name == "" {
			errs = append(errs, errors.New("registry: an entry has no name"))
			continue
		}
		if seen[r.Name] {
			errs = append(errs, fmt.Errorf("registry %q: configured twice", r.Name))
		}
		seen[r.Name] = true
		if r.URL == "" {
			r.URL = "https://" + r.Name
		}
		if !isBaseURL(r.URL) {
			errs = append(errs, badBaseURL(fmt.Sprintf("registry %q: url", r.Name), r.URL))
		}
		if err := r.resolvePassword(fmt.Sprintf("registry %q", r.Name)); err != nil {
			errs = append(errs, err)
		}
		errs = append(errs, r.checkMirrors())
		errs = append(errs, r.checkName(), r.resolveDockerConfig(c.DockerConfig), r.parseAllowPrivate())
		for j, h := range r.HostAliases {
			h = strings.ToLower(h)
			r.HostAliases[j] = h
			if other, dup := aliasOf[h]; dup {
				errs = append(errs, fmt.Errorf("registry %q: host alias %q is already %q's", r.Name, h, other))
			}
			aliasOf[h] = r.Name
		}
	}
	if !seen[c.DefaultRegistry] {
		errs = append(errs, fmt.Errorf("default_registry %q is not a configured registry", c.DefaultRegistry))
	}
	for _, p := range c.Pin {
		if _, err := imageref.Parse(p); err != nil {
			errs = append(errs, fmt.Errorf("pin %q: %w", p, err))
		}
	}
	if c.TagTTL.Duration < 0 {
		errs = append(errs, errors.New("tag_ttl: must not be negative"))
	}
	if _, err := c.tagPolicy(); err != nil {
		errs = append(errs, err)
	}
	for i := range c.Watch {
		errs = append(errs, c.Watch[i].check(i))
	}
	if (c.Server.TLSCertFile == "") != (c.Server.TLSKeyFile == "") {
		errs = append(errs, errors.New("server.tls_cert_file and server.tls_key_file: give both or neither"))
	}
	if c.Auth != nil {
		errs = append(errs, c.Auth.check(c.Server))
	}
	if c.Cluster != nil {
		errs = append(errs, c.Cluster.check())
	}
	if c.S3 != nil {
		errs = append(errs, c.S3.check(*c))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data_dir: must be set"))
	}
	errs = append(errs, c.Cache.check())
	if _, _, err := parseReserve(c.Server.RateLimitReserve); err != nil {
		errs = append(errs, err)
	}
	if _, err := c.Server.minUpstreamRate(); err != nil {
		errs = append(errs, err)
	}
	if c.Server.MinUpstreamRateWindow.Duration < 0 {
		errs = append(errs, errors.New("server.min_upstream_rate_window: must not be negative"))
	}
	return errors.Join(errs...)
}

// check validates [cache] without the disk: a percentage budget is
// resolved against the filesystem later, but its syntax is checked here.
func (c cacheConfig) check() error {
	var errs []error
	if c.MaxSize != "" && c.MaxSize != "0" {
		if _, err := eviction.ParseBudget(c.MaxSize, 1<<50); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := eviction.ParseSize(c.MinFree); err != nil {
		errs = append(errs, fmt.Errorf("cache.min_free: %w", err))
	}
	if _, err := c.hotCacheBytes(); err != nil {
		errs = append(errs, err)
	}
	high, low := c.HighWatermark, c.LowWatermark
	if high == 0 {
		high = eviction.DefaultHighWatermark
	}
	if low == 0 {
		low = eviction.DefaultLowWatermark
	}
	if !(low > 0 && low < high && high <= 1) {
		errs = append(errs, fmt.Errorf("cache.low_watermark %v, cache.high_watermark %v: want 0 < low < high ≤ 1", low, high))
	}
	if c.EvictInterval.Duration < 0 {
		errs = append(errs, errors.New("cache.evict_interval: must not be negative"))
	}
	if _, err := parseRate(c.ScrubRate); err != nil {
		errs = append(errs, fmt.Errorf("cache.scrub_rate: %w", err))
	}
	if c.ScrubInterval.Duration < 0 {
		errs = append(errs, errors.New("cache.scrub_interval: must not be negative"))
	}
	return errors.Join(errs...)
}

// hotCacheBytes is cache.hot_size for the proxy's options.
func (c cacheConfig) hotCacheBytes() (int64, error) {
	return optionalSize(c.HotSize, "cache.hot_size")
}

// minUpstreamRate is server.min_upstream_rate in bytes per second for the
// proxy's options ("/s" optional).
func (s serverConfig) minUpstreamRate() (int64, error) {
	return optionalSize(strings.TrimSuffix(strings.TrimSpace(s.MinUpstreamRate), "/s"), "server.min_upstream_rate")
}

// optionalSize reads a size whose option has a default and an off switch:
// 0 (the default) when empty, -1 (off) for "0", else the size; key names
// it in the error.
func optionalSize(v, key string) (int64, error) {
	if strings.TrimSpace(v) == "" {
		return 0, nil
	}
	n, err := eviction.ParseSize(v)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", key, err)
	}
	if n == 0 {
		return -1, nil
	}
	return n, nil
}

// tagPolicy compiles the [[tag_policy]] rules; tags none matches get tag_ttl.
func (c *config) tagPolicy() (*tagpolicy.Policy, error) {
	rules := make([]tagpolicy.Rule, len(c.TagPolicy))
	for i, r := range c.TagPolicy {
		rules[i] = tagpolicy.Rule{Match: r.Match, Immutable: r.Immutable, StaleWhileRevalidate: r.StaleWhileRevalidate}
		if r.TTL != nil {
			ttl := r.TTL.Duration
			rules[i].TTL = &ttl
		}
	}
	return tagpolicy.New(rules, c.TagTTL.Duration)
}

// tagTTL is tag_ttl as the proxy and the S3 tier take it. A tag_ttl of 0
// means "revalidate on every request" (as a tag policy's ttl = "0s" does);
// their Options read 0 as "the default" (5 minutes), so 0 is passed as
// the shortest TTL there is.
func (c config) tagTTL() time.Duration {
	if c.TagTTL.Duration == 0 {
		return time.Nanosecond
	}
	return c.TagTTL.Duration
}

// privateRegistries names the registries whose cached content is served to
// a repository only once upstream has shown it there.
func (c *config) privateRegistries() map[string]bool {
	private := map[string]bool{}
	for _, r := range c.Registries {
		if r.Private {
			private[r.Name] = true
		}
	}
	return private
}
