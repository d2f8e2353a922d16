package main

// A [[registries]] entry of the config file: an upstream registry, its
// credentials, TLS, mirrors and address allowances, checked and resolved
// by config.finish.

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/regmirror/regmirror/upstream"
)

// registryConfig is one [[registries]] entry.
type registryConfig struct {
	Name string `toml:"name"`
	URL  string `toml:"url"`
	endpointAuth
	HostAliases  []string `toml:"host_aliases"`
	DockerConfig string   `toml:"docker_config"`
	Private      bool     `toml:"private"`
	// Mirrors are tried before URL, in order (README "Upstream failover").
	Mirrors []mirrorConfig `toml:"mirrors"`
	// AllowPrivateAddresses: loopback, link-local or private addresses or
	// CIDR prefixes this registry's connections may reach besides its own
	// URL's (always allowed): a token server or blob store elsewhere on the LAN.
	AllowPrivateAddresses []string `toml:"allow_private_addresses"`
	allowPrivate          []netip.Prefix
}

// mirrorConfig is one entry of a registry's mirrors: a URL string
// (anonymous), or a table with the URL and the mirror's own credentials
// and TLS settings. The registry's credentials are never sent to a mirror.
type mirrorConfig struct {
	URL string `toml:"url"`
	endpointAuth
}

// endpointAuth is what a registry and each of its mirrors have alike:
// whom to log in as, and which TLS to trust.
type endpointAuth struct {
	Username           string `toml:"username"`
	Password           string `toml:"password"`
	PasswordEnv        string `toml:"password_env"`
	PasswordFile       string `toml:"password_file"`
	CAFile             string `toml:"ca_file"`
	InsecureSkipVerify bool   `toml:"insecure_skip_verify"`
}

// options is o with a's credentials (the password resolved) and TLS
// settings.
func (a endpointAuth) options(o upstream.Options) upstream.Options {
	o.Username, o.Password = a.Username, a.Password
	o.CAFile, o.InsecureSkipVerify = a.CAFile, a.InsecureSkipVerify
	return o
}

// UnmarshalTOML reads a string or a table; unknown table keys are errors.
func (m *mirrorConfig) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case string:
		*m = mirrorConfig{URL: v}
		return nil
	case map[string]any:
		// The table goes through the same decoder as the rest of the
		// file, so types and unknown keys are checked the usual way.
		var buf bytes.Buffer
		if err := toml.NewEncoder(&buf).Encode(v); err != nil {
			return fmt.Errorf("mirror: %w", err)
		}
		type table mirrorConfig // without this method, or decoding recurses
		var t table
		md, err := toml.Decode(buf.String(), &t)
		if err != nil {
			return fmt.Errorf("mirror: %w", err)
		}
		if keys := md.Undecoded(); len(keys) > 0 {
			return fmt.Errorf("mirror: unknown key %q", keys[0].String())
		}
		*m = mirrorConfig(t)
		return nil
	}
	return fmt.Errorf("mirror: want a URL string or a table with url (and credentials), got %T", v)
}

// resolvePassword reads password_env or password_file into Password; who
// names the endpoint in errors.
func (a *endpointAuth) resolvePassword(who string) error {
	switch {
	case a.PasswordEnv != "":
		v, ok := os.LookupEnv(a.PasswordEnv)
		if !ok {
			return fmt.Errorf("%s: password_env %s is not set", who, a.PasswordEnv)
		}
		a.Password = v
	case a.PasswordFile != "":
		b, err := os.ReadFile(a.PasswordFile)
		if err != nil {
			return fmt.Errorf("%s: password_file: %w", who, err)
		}
		a.Password = strings.TrimRight(string(b), "\r\n")
	}
	if a.Password != "" && a.Username == "" {
		return fmt.Errorf("%s: a password needs a username", who)
	}
	return nil
}

// checkMirrors resolves each mirror's password and checks its URL.
func (r *registryConfig) checkMirrors() error {
	var errs []error
	seen := map[string]bool{strings.TrimSuffix(r.URL, "/"): true}
	for i := range r.Mirrors {
		m := &r.Mirrors[i]
		if !isBaseURL(m.URL) {
			errs = append(errs, badBaseURL(fmt.Sprintf("registry %q: mirror", r.Name), m.URL))
			continue
		}
		if seen[strings.TrimSuffix(m.URL, "/")] {
			errs = append(errs, fmt.Errorf("registry %q: mirror %q: listed twice (or is the registry's url)", r.Name, m.URL))
		}
		seen[strings.TrimSuffix(m.URL, "/")] = true
		// The mirror's own credentials, resolved like a registry's.
		if err := m.resolvePassword(fmt.Sprintf("registry %q mirror %s", r.Name, m.URL)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// badBaseURL is the error for what's URL raw, which is not a base URL. The
// URL is shown without a password in it (credentials belong in username
// and password), and the example is built from its host.
func badBaseURL(what, raw string) error {
	shown, example := raw, "https://registry.example.com"
	if u, err := url.Parse(raw); err == nil {
		shown = u.Redacted()
		if u.Host != "" {
			example = "https://" + u.Host
		}
	}
	return fmt.Errorf("%s %q: want http(s)://host[:port] with nothing after it, e.g. %s", what, shown, example)
}

// isBaseURL: http(s)://host[:port], nothing after it (a registry's or a
// mirror's url), as the registry client will parse it.
func isBaseURL(s string) bool {
	_, _, err := upstream.ParseBaseURL(s)
	return err == nil
}

// parseAllowPrivate reads allow_private_addresses: IP addresses or CIDR
// prefixes.
func (r *registryConfig) parseAllowPrivate() error {
	r.allowPrivate = nil
	for _, v := range r.AllowPrivateAddresses {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			ip, ierr := netip.ParseAddr(v)
			if ierr != nil {
				return fmt.Errorf("registry %q: allow_private_addresses: %q is neither an IP address nor a CIDR prefix", r.Name, v)
			}
			p = netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen())
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 { // the guard compares unmapped addresses
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		r.allowPrivate = append(r.allowPrivate, p.Masked())
	}
	return nil
}

// checkName accepts what clients put before the first '/' of an image
// name: a host, optionally with a port ("ghcr.io", "registry.corp:5000").
// Requests name their registry this way (?ns=, a path prefix), so anything
// else could never be addressed.
func (r *registryConfig) checkName() error {
	if strings.ContainsAny(r.Name, "/@ \t") || strings.Contains(r.Name, "://") {
		return fmt.Errorf("registry %q: name must be a registry host[:port] as clients write it, without scheme or path", r.Name)
	}
	return nil
}

// resolveDockerConfig applies the global docker_config to a registry that
// has neither its own nor a username, and checks that private registries
// have credentials: upstream is what decides who may see their content.
func (r *registryConfig) resolveDockerConfig(global string) error {
	if r.DockerConfig == "" && r.Username == "" {
		r.DockerConfig = global
	}
	if r.DockerConfig != "" {
		if _, err := os.Stat(r.DockerConfig); err != nil {
			return fmt.Errorf("registry %q: docker_config: %w", r.Name, err)
		}
	}
	if r.Private && r.Username == "" && r.DockerConfig == "" {
		return fmt.Errorf("registry %q: private = true needs credentials (username and password, or docker_config)", r.Name)
	}
	return nil
}

// keychain is where the registry's credentials come from when no username
// is configured: its Docker config.json, or nothing (anonymous).
func (r *registryConfig) keychain() authn.Keychain {
	if r.Username != "" || r.DockerConfig == "" {
		return nil
	}
	return upstream.NewConfigKeychain(r.DockerConfig)
}
