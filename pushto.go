package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/dustin/go-humanize"
	"github.com/urfave/cli/v2"

	"github.com/regmirror/regmirror/airgap"
	"github.com/regmirror/regmirror/upstream"
)

// pushToCommand copies cached images into a site registry: see airgap.Push.
func pushToCommand() *cli.Command {
	return &cli.Command{
		Name:      "push-to",
		Usage:     "copy cached images into a registry (a site registry behind the air gap), digests preserved",
		ArgsUsage: "REGISTRY [IMAGE...]",
		Description: "REGISTRY is host[:port] (https) or http(s)://host[:port]. Images of the default registry keep\n" +
			"their repository (docker.io/library/alpine:3.20 → REGISTRY/library/alpine:3.20); other\n" +
			"registries' images get the registry as first path component (ghcr.io/org/app:v1 →\n" +
			"REGISTRY/ghcr.io/org/app:v1). Every manifest and blob is written byte for byte as cached.\n" +
			"Reads the cache like export: the data dir when free, else through the running server.\n" +
			"Flags go before REGISTRY.",
		Flags: manageFlags(fileFlag,
			&cli.BoolFlag{Name: "all", Usage: "push every cached tag and every image pinned by digest"},
			&cli.StringFlag{Name: "to-username", Usage: "user name at REGISTRY (default: --to-docker-config's, else anonymous)", EnvVars: []string{"REGMIRROR_TO_USERNAME"}},
			&cli.StringFlag{Name: "to-password-file", Usage: "file holding --to-username's password", EnvVars: []string{"REGMIRROR_TO_PASSWORD_FILE"}},
			&cli.StringFlag{Name: "to-docker-config", Usage: "a Docker config.json with REGISTRY's credentials", EnvVars: []string{"REGMIRROR_TO_DOCKER_CONFIG"}},
			&cli.StringFlag{Name: "to-ca-file", Usage: "CA (PEM) that signed REGISTRY's certificate (default: the system's)", EnvVars: []string{"REGMIRROR_TO_CA_FILE"}},
		),
		Action: runPushTo,
	}
}

func runPushTo(c *cli.Context) error {
	if c.NArg() == 0 {
		return errors.New("push-to: name the registry to push to")
	}
	dest, err := pushTarget(c)
	if err != nil {
		return err
	}
	refs, all, err := imageSelection(c, "push-to", c.Args().Tail(), "after the registry")
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	c.Context = ctx
	return withTarget(c, reachCache, func(ctx context.Context, t *target) error {
		items, skipped, err := planImages(ctx, c, t, refs, all, "push-to: nothing to push")
		if err != nil {
			return err
		}
		res := airgap.Push(ctx, t.Blobs, items, dest, airgap.PushOptions{DefaultRegistry: t.Config.DefaultRegistry,
			Out: c.App.Writer, Progress: newProgress(c.App.ErrWriter)})
		fmt.Fprintf(c.App.Writer, "pushed %d of %d images from %s to %s: %d blobs and manifests, %s\n",
			res.OK, len(items), t.Where, dest.Registry(), res.Blobs, humanize.IBytes(uint64(res.Bytes)))
		failed := res.Failed
		if !all {
			failed += len(skipped)
		}
		if failed > 0 {
			return fmt.Errorf("push-to: %d images not pushed", failed)
		}
		return nil
	})
}

// pushTarget is the registry named by push-to's first argument.
func pushTarget(c *cli.Context) (*upstream.Pusher, error) {
	u := strings.TrimRight(c.Args().First(), "/")
	if !strings.Contains(u, "://") {
		u = "https://" + u
	}
	o := upstream.PushOptions{URL: u, CAFile: c.String("to-ca-file"), UserAgent: "regmirror push-to"}
	if user := c.String("to-username"); user != "" {
		pwFile := c.String("to-password-file")
		if pwFile == "" {
			return nil, errors.New("--to-username needs --to-password-file")
		}
		b, err := os.ReadFile(pwFile)
		if err != nil {
			return nil, fmt.Errorf("--to-password-file: %w", err)
		}
		o.Username, o.Password = user, strings.TrimRight(string(b), "\r\n")
	} else if dc := c.String("to-docker-config"); dc != "" {
		if _, err := os.Stat(dc); err != nil {
			return nil, fmt.Errorf("--to-docker-config: %w", err)
		}
		o.Keychain = upstream.NewConfigKeychain(dc)
	}
	p, err := upstream.NewPusher(o)
	if err != nil {
		return nil, fmt.Errorf("push-to: %w", err)
	}
	return p, nil
}
