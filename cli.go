package main

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/regmirror/regmirror/internal/logline"

	"github.com/urfave/cli/v2"
)

// This file turns flags and REGMIRROR_* environment variables into the
// config. Every default shown in help comes from defaultConfig, the one
// place defaults live.

func newCLI(stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:      "regmirror",
		Usage:     "a pull-through caching mirror for container registries",
		Version:   buildVersion(),
		Writer:    stdout,
		ErrWriter: stderr,
		Commands: []*cli.Command{
			serveCommand(),
			preloadCommand(),
			exportCommand(),
			importCommand(),
			pushToCommand(),
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

func init() {
	// --version prints what the version command prints.
	cli.VersionPrinter = func(c *cli.Context) { fmt.Fprintln(c.App.Writer, "regmirror", c.App.Version) }
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

// commonFlags are taken by every command that reads the config.
func commonFlags() []cli.Flag {
	d := defaultConfig()
	return []cli.Flag{
		&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "TOML config file (see config.example.toml)", EnvVars: []string{"REGMIRROR_CONFIG"}},
		&cli.StringFlag{Name: "data-dir", Value: d.DataDir, Usage: "where the cache lives", EnvVars: []string{"REGMIRROR_DATA_DIR"}},
		&cli.StringFlag{Name: "log-level", Value: d.LogLevel, Usage: "debug, info, warn or error", EnvVars: []string{"REGMIRROR_LOG_LEVEL"}},
		&cli.StringFlag{Name: "log-format", Value: d.LogFormat, Usage: "text or json", EnvVars: []string{"REGMIRROR_LOG_FORMAT"}},
	}
}

// upstreamFlags are taken by every command that can make the mirror fetch
// from upstream (serve, preload, verify --repair): the default registry's
// URL and credentials.
func upstreamFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "upstream-url", Usage: "URL of the default registry", DefaultText: dockerHubURL + " for " + dockerHubName + ", else https://<name>",
			EnvVars: []string{"REGMIRROR_UPSTREAM_URL"}},
		&cli.StringFlag{Name: "upstream-username", Usage: "username for the default registry", EnvVars: []string{"REGMIRROR_UPSTREAM_USERNAME"}},
		&cli.StringFlag{Name: "upstream-password", Usage: "password for the default registry", EnvVars: []string{"REGMIRROR_UPSTREAM_PASSWORD"}},
	}
}

// maxSizeFlag is the cache byte budget (cache.max_size).
func maxSizeFlag() cli.Flag {
	return &cli.StringFlag{Name: "max-size", Value: defaultConfig().Cache.MaxSize,
		Usage: `cache byte budget, e.g. "200GiB" or "80%" of the filesystem; 0: no budget`, EnvVars: []string{"REGMIRROR_MAX_SIZE"}}
}

// serverFlag names the running server to ask when the data dir is busy.
var serverFlag = &cli.StringFlag{
	Name:        "server",
	Usage:       "URL of the regmirror that holds the data dir",
	DefaultText: "the URL it wrote into the data dir, else derived from listen",
	EnvVars:     []string{"REGMIRROR_SERVER"},
}

// manageFlags are the flags of commands that work on the data dir or
// through a server, local or remote.
func manageFlags(extra ...cli.Flag) []cli.Flag {
	return append(append(append(commonFlags(), serverFlag), remoteFlags()...), extra...)
}

// remoteFlags let a command manage a server on another box, as one of
// its auth.admins, over TLS.
func remoteFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "username", Usage: "with --server https://...: manage as this user (one of the server's auth.admins)", EnvVars: []string{"REGMIRROR_USERNAME"}},
		&cli.StringFlag{Name: "password-file", Usage: "file holding --username's password", EnvVars: []string{"REGMIRROR_PASSWORD_FILE"}},
		&cli.StringFlag{Name: "client-cert", Usage: "with --server https://...: a client certificate (PEM) whose CN is one of the server's auth.admins", EnvVars: []string{"REGMIRROR_CLIENT_CERT"}},
		&cli.StringFlag{Name: "client-key", Usage: "the PEM key of --client-cert", EnvVars: []string{"REGMIRROR_CLIENT_KEY"}},
		&cli.StringFlag{Name: "ca-file", Usage: "CA (PEM) that signed the server's certificate", DefaultText: "the system's", EnvVars: []string{"REGMIRROR_CA_FILE"}},
	}
}

// loadConfig applies the precedence: defaults < file < environment < flags.
// urfave/cli already resolves a flag over its REGMIRROR_* twin, so
// overlaying every flag that IsSet gives env and flags their rank (a flag
// a command does not take is never set).
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
	setString("max-size", &cfg.Cache.MaxSize)
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
		if c.IsSet("upstream-password") {
			// The flag (or its environment twin) beats the file's password
			// in every form, not only the literal one.
			def.Password, def.PasswordEnv, def.PasswordFile = c.String("upstream-password"), "", ""
		}
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
	switch strings.ToLower(cfg.LogFormat) {
	case "text", "":
		return logline.New(w, logline.Text, level), nil
	case "json":
		return logline.New(w, logline.JSON, level), nil
	}
	return nil, fmt.Errorf("log_format %q: want text or json", cfg.LogFormat)
}
