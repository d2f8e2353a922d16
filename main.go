// Command regmirror is a pull-through caching mirror for container
// registries. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := newCLI(os.Stdout, os.Stderr).Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "regmirror:", err)
		os.Exit(1)
	}
}

func newCLI(stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:      "regmirror",
		Usage:     "a pull-through caching mirror for container registries",
		Writer:    stdout,
		ErrWriter: stderr,
		Commands: []*cli.Command{
			serveCommand(),
			preloadCommand(),
			exportCommand(),
			importCommand(),
			pinCommand(),
			unpinCommand(),
			gcCommand(),
			duCommand(),
			policyCommand(),
			purgeCommand(),
			healthcheckCommand(),
			verifyCommand(),
			versionCommand(),
		},
		HideHelpCommand: true,
	}
}

// commonFlags are taken by every command that opens the data dir.
func commonFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "TOML config file (see config.example.toml)", EnvVars: []string{"REGMIRROR_CONFIG"}},
		&cli.StringFlag{Name: "data-dir", Usage: "where the cache lives (default ./data)", EnvVars: []string{"REGMIRROR_DATA_DIR"}},
		&cli.StringFlag{Name: "log-level", Usage: "debug, info, warn or error (default info)", EnvVars: []string{"REGMIRROR_LOG_LEVEL"}},
		&cli.StringFlag{Name: "log-format", Usage: "text or json (default text)", EnvVars: []string{"REGMIRROR_LOG_FORMAT"}},
	}
}

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "run the mirror",
		Flags: append(commonFlags(),
			&cli.StringFlag{Name: "listen", Usage: "address to listen on (default :5000)", EnvVars: []string{"REGMIRROR_LISTEN"}},
			&cli.StringFlag{Name: "upstream-url", Usage: "URL of the default registry (default " + dockerHubURL + ")", EnvVars: []string{"REGMIRROR_UPSTREAM_URL"}},
			&cli.StringFlag{Name: "upstream-username", Usage: "username for the default registry", EnvVars: []string{"REGMIRROR_UPSTREAM_USERNAME"}},
			&cli.StringFlag{Name: "upstream-password", Usage: "password for the default registry", EnvVars: []string{"REGMIRROR_UPSTREAM_PASSWORD"}},
			&cli.DurationFlag{Name: "tag-ttl", Usage: "how long a cached tag is served before it is revalidated (default 5m)", EnvVars: []string{"REGMIRROR_TAG_TTL"}},
			&cli.BoolFlag{Name: "offline", Usage: "never contact upstream; serve only what is cached", EnvVars: []string{"REGMIRROR_OFFLINE"}},
			&cli.StringFlag{Name: "tls-cert", Usage: "serve HTTPS with this PEM certificate (chain) file", EnvVars: []string{"REGMIRROR_TLS_CERT"}},
			&cli.StringFlag{Name: "tls-key", Usage: "the PEM private key for --tls-cert", EnvVars: []string{"REGMIRROR_TLS_KEY"}},
			&cli.StringFlag{Name: "max-size", Usage: `cache byte budget, e.g. "200GiB" or "80%" of the filesystem (default 0: no budget)`, EnvVars: []string{"REGMIRROR_MAX_SIZE"}},
		),
		Action: func(c *cli.Context) error {
			cfg, log, err := setup(c)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			defer stop()
			a, err := newApp(cfg, log)
			if err != nil {
				return err
			}
			go func() { // once the proxy itself answers (the startup server says 503 until then)
				select {
				case <-a.serving:
					log.Info("regmirror serving", "version", buildVersion(), "listen", a.Addr(), "data_dir", cfg.DataDir,
						"default_registry", cfg.DefaultRegistry, "offline", cfg.Offline)
				case <-ctx.Done():
				}
			}()
			return a.Run(ctx)
		},
	}
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version",
		Action: func(c *cli.Context) error {
			fmt.Fprintln(c.App.Writer, "regmirror", buildVersion())
			return nil
		},
	}
}

func buildVersion() string {
	if version != "dev" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return version
}

// loadConfig applies the precedence: defaults < file < environment < flags.
// urfave/cli already resolves a flag over its REGMIRROR_* twin, so
// overlaying every flag that IsSet gives env and flags their rank.
func loadConfig(c *cli.Context) (config, error) {
	cfg := defaultConfig()
	if path := c.String("config"); path != "" {
		if err := loadConfigFile(&cfg, path); err != nil {
			return cfg, err
		}
	}
	setString := func(flag string, dst *string) {
		if c.IsSet(flag) {
			*dst = c.String(flag)
		}
	}
	setString("data-dir", &cfg.DataDir)
	setString("log-level", &cfg.LogLevel)
	setString("log-format", &cfg.LogFormat)
	setString("listen", &cfg.Listen)
	if c.IsSet("max-size") {
		cfg.Cache.MaxSize = c.String("max-size")
	}
	setString("tls-cert", &cfg.Server.TLSCertFile)
	setString("tls-key", &cfg.Server.TLSKeyFile)
	if c.IsSet("tag-ttl") {
		cfg.TagTTL = duration{c.Duration("tag-ttl")}
	}
	if c.IsSet("offline") {
		cfg.Offline = c.Bool("offline")
	}
	if c.IsSet("upstream-url") || c.IsSet("upstream-username") || c.IsSet("upstream-password") {
		def := cfg.registry(cfg.DefaultRegistry)
		setString("upstream-url", &def.URL)
		setString("upstream-username", &def.Username)
		setString("upstream-password", &def.Password)
	}
	return cfg, cfg.finish()
}

// setup loads the configuration and the logger every command starts with.
func setup(c *cli.Context) (config, *slog.Logger, error) {
	cfg, err := loadConfig(c)
	if err != nil {
		return cfg, nil, err
	}
	log, err := newLogger(cfg, c.App.ErrWriter)
	return cfg, log, err
}

func newLogger(cfg config, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return nil, fmt.Errorf("log_level %q: want debug, info, warn or error", cfg.LogLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(cfg.LogFormat) {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log_format %q: want text or json", cfg.LogFormat)
}

var errShutdownTimeout = errors.New("shutdown did not finish in time")

// withTimeout is a context for the graceful end of something.
func withTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
