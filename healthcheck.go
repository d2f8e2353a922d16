package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
)

// healthcheckCommand asks a running server whether it is ready: the
// container image's HEALTHCHECK (the distroless image has no curl).
func healthcheckCommand() *cli.Command {
	return &cli.Command{
		Name:  "healthcheck",
		Usage: "exit 0 when the running server is ready (GET /readyz), 1 otherwise",
		Description: "Asks the server this config describes (listen, TLS), or --server. " +
			"With --liveness it asks /healthz instead: the process answers at all.",
		Flags: append(append(commonFlags(), listenFlags()...), serverFlag,
			&cli.BoolFlag{Name: "liveness", Usage: "check /healthz (alive) instead of /readyz (ready to serve)"},
			&cli.DurationFlag{Name: "timeout", Value: 5 * time.Second, Usage: "give up after this long"},
		),
		Action: func(c *cli.Context) error {
			cfg, _, err := setup(c)
			if err != nil {
				return err
			}
			base := serverURL(c.String("server"), cfg.Listen)
			if c.String("server") == "" && cfg.Server.TLSCertFile != "" {
				base = "https://" + strings.TrimPrefix(base, "http://")
			}
			path := "/readyz"
			if c.Bool("liveness") {
				path = "/healthz"
			}
			client := &http.Client{Timeout: c.Duration("timeout"), Transport: &http.Transport{
				// The probe runs beside the server, which may serve a
				// certificate for its public name only.
				TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // a local probe, no secrets sent
				Proxy:           nil,
			}}
			resp, err := client.Get(base + path)
			if err != nil {
				return fmt.Errorf("healthcheck: %w", err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("healthcheck: %s answered %s: %s", base+path, resp.Status, strings.TrimSpace(string(body)))
			}
			fmt.Fprintf(c.App.Writer, "%s: %s\n", base+path, strings.TrimSpace(string(body)))
			return nil
		},
	}
}
