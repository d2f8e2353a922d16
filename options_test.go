package main

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// The mapping from config to each component's options is pure: these
// tables pin it down without a disk, a port or a registry.

func TestStackOptions(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		name   string
		mutate func(*config)
		check  func(t *testing.T, c config)
	}{
		{"defaults", func(*config) {}, func(t *testing.T, c config) {
			o := c.stackOptions(log, true)
			if o.Dir != "./data" || o.MaxSize != "0" || o.MinFree != 1<<30 || !o.MinFreeIsDefault ||
				o.HighWatermark != 0.95 || o.LowWatermark != 0.85 || o.EvictInterval != 30*time.Second ||
				o.ScrubRate != 10<<20 || !o.Background {
				t.Errorf("%+v", o)
			}
		}},
		{"operator's choices", func(c *config) {
			c.DataDir, c.Cache.MaxSize, c.Cache.MinFree, c.Cache.ScrubRate = "/srv/cache", "80%", "2GiB", "0"
		}, func(t *testing.T, c config) {
			o := c.stackOptions(log, false)
			if o.Dir != "/srv/cache" || o.MaxSize != "80%" || o.MinFree != 2<<30 || o.MinFreeIsDefault || o.ScrubRate != 0 || o.Background {
				t.Errorf("%+v", o)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := defaultConfig()
			tc.mutate(&c)
			if err := c.finish(); err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func TestRegistryOptions(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	c := defaultConfig()
	c.Server.OutageBackoff = duration{time.Minute}
	c.Registries = []registryConfig{
		{Name: "ghcr.io", endpointAuth: endpointAuth{Username: "u", Password: "p"}, HostAliases: []string{"GHCR.LAN"}},
		{Name: "quay.io", URL: "https://quay.example", Mirrors: []mirrorConfig{{URL: "https://m1.lan"}, {URL: "http://m2.lan:5000", endpointAuth: endpointAuth{Username: "mu", Password: "mp"}}}},
	}
	if err := c.finish(); err != nil {
		t.Fatal(err)
	}
	ros := c.registryOptions(log)
	byName := map[string]registryOptions{}
	for _, ro := range ros {
		byName[ro.Primary.Name] = ro
	}
	if len(ros) != 3 { // docker.io is always there
		t.Fatalf("%d registries, want 3: %+v", len(ros), ros)
	}
	if hub := byName["docker.io"].Primary; hub.URL != dockerHubURL || hub.Username != "" || hub.Keychain != nil {
		t.Errorf("docker.io: %+v", hub)
	}
	if gh := byName["ghcr.io"]; gh.Primary.URL != "https://ghcr.io" || gh.Primary.Username != "u" || gh.Primary.Password != "p" || len(gh.Mirrors) != 0 {
		t.Errorf("ghcr.io: %+v", gh)
	}
	q := byName["quay.io"]
	if q.Primary.URL != "https://quay.example" || len(q.Mirrors) != 2 || q.Failover.OutageBackoff != time.Minute {
		t.Fatalf("quay.io: %+v", q)
	}
	for i, m := range q.Mirrors {
		if m.Name != "quay.io" || m.Retries != -1 || m.ResponseHeaderTimeout != 10*time.Second {
			t.Errorf("mirror %d: %+v", i, m)
		}
	}
	if m := q.Mirrors[1]; m.URL != "http://m2.lan:5000" || m.Username != "mu" || m.Password != "mp" {
		t.Errorf("a mirror's own credentials: %+v", m)
	}
	if q.Mirrors[0].Username != "" {
		t.Errorf("a registry's credentials reached its mirror: %+v", q.Mirrors[0])
	}
	if got := c.hostAliases(); len(got) != 1 || got["ghcr.lan"] != "ghcr.io" {
		t.Errorf("host aliases %v", got)
	}
}

func TestProxyOptions(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	c := defaultConfig()
	c.Offline = true
	c.TagTTL = duration{time.Minute}
	c.Server.MinUpstreamRate = "0"
	c.Cache.HotSize = "64MiB"
	c.Registries = []registryConfig{{Name: "corp.lan", Private: true, endpointAuth: endpointAuth{Username: "u"}}}
	if err := c.finish(); err != nil {
		t.Fatal(err)
	}
	o, err := c.proxyOptions(log)
	if err != nil {
		t.Fatal(err)
	}
	if !o.Offline || o.TagTTL != time.Minute || o.DefaultRegistry != "docker.io" || o.TagPolicy == nil ||
		o.ReadTimeout != time.Minute || o.WriteTimeout != time.Hour || o.FillTimeout != 2*time.Hour ||
		o.MinUpstreamRate != -1 || !o.PrivateRegistries["corp.lan"] || o.PrivateRegistries["docker.io"] || o.HotCacheBytes != 64<<20 {
		t.Errorf("%+v", o)
	}
	if o.Store != nil || o.Registries != nil || o.Admin != nil {
		t.Error("proxyOptions set components; serve adds those")
	}
	for size, want := range map[string]int64{"0": -1, "": 0, "1MiB": 1 << 20} {
		c.Cache.HotSize = size
		if o, err := c.proxyOptions(log); err != nil || o.HotCacheBytes != want {
			t.Errorf("hot_size %q: %d, %v; want %d", size, o.HotCacheBytes, err, want)
		}
	}
	c.Cache.HotSize = "lots"
	if err := c.finish(); err == nil || !strings.Contains(err.Error(), "cache.hot_size") {
		t.Errorf("hot_size \"lots\": %v, want an error naming cache.hot_size", err)
	}
}
