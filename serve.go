package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/regmirror/regmirror/internal/logbuf"
)

// listenFlags say where serve listens and whether with TLS; healthcheck
// takes them too, with their environment twins, to ask the server where
// it listens.
func listenFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "listen", Value: defaultConfig().Listen, Usage: "address to listen on", EnvVars: []string{"REGMIRROR_LISTEN"}},
		&cli.StringFlag{Name: "tls-cert", Usage: "serve HTTPS with this PEM certificate (chain) file", EnvVars: []string{"REGMIRROR_TLS_CERT"}},
		&cli.StringFlag{Name: "tls-key", Usage: "the PEM private key for --tls-cert", EnvVars: []string{"REGMIRROR_TLS_KEY"}},
	}
}

func serveCommand() *cli.Command {
	d := defaultConfig()
	return &cli.Command{
		Name:  "serve",
		Usage: "run the mirror",
		Flags: append(append(append(commonFlags(), upstreamFlags()...), listenFlags()...),
			&cli.DurationFlag{Name: "tag-ttl", Value: d.TagTTL.Duration, Usage: "how long a cached tag is served before it is revalidated", EnvVars: []string{"REGMIRROR_TAG_TTL"}},
			&cli.BoolFlag{Name: "offline", Value: d.Offline, Usage: "never contact upstream; serve only what is cached", EnvVars: []string{"REGMIRROR_OFFLINE"}},
			maxSizeFlag(),
		),
		Action: func(c *cli.Context) error {
			cfg, err := loadConfig(c)
			if err != nil {
				return err
			}
			// Log lines are written in batches, off the requests' path;
			// Close writes the last ones when serve returns.
			logw := logbuf.New(c.App.ErrWriter, logbuf.Options{})
			defer logw.Close()
			log, err := newLogger(cfg, logw)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			defer stop()
			// After the first signal a second one ends the process at
			// once (the default), for a shutdown an admin will not wait out.
			context.AfterFunc(ctx, stop)
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
