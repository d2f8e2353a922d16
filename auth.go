package main

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/regmirror/regmirror/access"
)

// authConfig is the [auth] section (see config.example.toml).
type authConfig struct {
	HtpasswdFile    string     `toml:"htpasswd_file"`
	TrustedNetworks []string   `toml:"trusted_networks"`
	ClientCAFile    string     `toml:"client_ca_file"`
	Admins          []string   `toml:"admins"`
	RatePerClient   rateValue  `toml:"rate_per_client"`
	Rules           []authRule `toml:"rule"`
}

type authRule struct {
	Users []string `toml:"users"`
	Allow []string `toml:"allow"`
	Deny  []string `toml:"deny"`
}

// rateValue is requests per second, written as a string ("0", "20",
// "0.5") or a TOML number.
type rateValue float64

func (r *rateValue) UnmarshalTOML(v any) error {
	var f float64
	switch x := v.(type) {
	case string:
		var err error
		if f, err = strconv.ParseFloat(strings.TrimSpace(x), 64); err != nil {
			return fmt.Errorf("rate_per_client %q: want requests per second, e.g. \"20\"; \"0\" for no limit", x)
		}
	case int64:
		f = float64(x)
	case float64:
		f = x
	default:
		return fmt.Errorf("rate_per_client: want requests per second, e.g. \"20\"")
	}
	if f < 0 || math.IsNaN(f) || math.IsInf(f, 0) {
		return fmt.Errorf("rate_per_client %v: want a number >= 0", f)
	}
	*r = rateValue(f)
	return nil
}

// check is what can be said of [auth] without reading its files besides
// the client CA; the htpasswd file, CIDRs, globs and rule users are
// checked by access.New when the server starts (newAccess).
func (a *authConfig) check(s serverConfig) error {
	var errs []error
	if a.ClientCAFile != "" {
		if s.TLSCertFile == "" {
			errs = append(errs, errors.New("auth.client_ca_file: client certificates need TLS (server.tls_cert_file and server.tls_key_file)"))
		}
		if _, err := os.Stat(a.ClientCAFile); err != nil {
			errs = append(errs, fmt.Errorf("auth.client_ca_file: %w", err))
		}
	}
	if len(a.Admins) > 0 && s.TLSCertFile == "" {
		errs = append(errs, errors.New("auth.admins: remote management needs TLS (server.tls_cert_file and server.tls_key_file); loopback with the token works without admins"))
	}
	return errors.Join(errs...)
}

// newAccess builds access control from [auth]; nil without the section.
func newAccess(a *authConfig, log *slog.Logger) (*access.Control, error) {
	if a == nil {
		return nil, nil
	}
	opts := access.Options{
		HtpasswdFile:    a.HtpasswdFile,
		TrustedNetworks: a.TrustedNetworks,
		ClientCerts:     a.ClientCAFile != "",
		Admins:          a.Admins,
		RatePerClient:   float64(a.RatePerClient),
		Logger:          log,
	}
	for _, r := range a.Rules {
		opts.Rules = append(opts.Rules, access.Rule{Users: r.Users, Allow: r.Allow, Deny: r.Deny})
	}
	c, err := access.New(opts)
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	return c, nil
}
