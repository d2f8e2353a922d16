package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/dustin/go-humanize"
	"github.com/urfave/cli/v2"

	"github.com/regmirror/regmirror/admin"
)

// serverFlag names the running server to ask when the data dir is busy.
var serverFlag = &cli.StringFlag{
	Name:    "server",
	Usage:   "URL of the regmirror that holds the data dir (default: derived from listen)",
	EnvVars: []string{"REGMIRROR_SERVER"},
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
		&cli.StringFlag{Name: "ca-file", Usage: "CA (PEM) that signed the server's certificate (default: the system's)", EnvVars: []string{"REGMIRROR_CA_FILE"}},
	}
}

func gcCommand() *cli.Command {
	return &cli.Command{
		Name:  "gc",
		Usage: "evict least recently used content down to the low watermark now",
		Description: "Works on the data dir directly when no server uses it, " +
			"else asks the running server (see --server).",
		Flags: manageFlags(
			&cli.StringFlag{Name: "max-size", Usage: `cache byte budget, e.g. "200GiB" or "80%"`, EnvVars: []string{"REGMIRROR_MAX_SIZE"}},
		),
		Action: func(c *cli.Context) error {
			return withTarget(c, reachCache, func(ctx context.Context, t *target) error {
				res, err := t.Ops.GC(ctx)
				if err != nil {
					return err
				}
				u, err := t.Ops.Usage(ctx, 0)
				if err != nil {
					return err
				}
				fmt.Fprintf(c.App.Writer, "evicted %d blobs (%s) from %s\n", res.Blobs, humanize.IBytes(uint64(res.Bytes)), t.Where)
				if res.Failed > 0 {
					fmt.Fprintf(c.App.Writer, "%d blobs could not be deleted (see the log)\n", res.Failed)
				}
				fmt.Fprintf(c.App.Writer, "cache now %s\n", sizeVsBudget(u))
				return nil
			})
		},
	}
}

func duCommand() *cli.Command {
	return &cli.Command{
		Name:  "du",
		Usage: "show the cache's size, budget and top repositories",
		Flags: manageFlags(
			&cli.IntFlag{Name: "top", Value: 10, Usage: "how many repositories to list"},
			&cli.StringFlag{Name: "max-size", Usage: `cache byte budget, e.g. "200GiB" or "80%"`, EnvVars: []string{"REGMIRROR_MAX_SIZE"}},
		),
		Action: func(c *cli.Context) error {
			return withTarget(c, reachCache, func(ctx context.Context, t *target) error {
				u, err := t.Ops.Usage(ctx, c.Int("top"))
				if err != nil {
					return err
				}
				printUsage(c.App.Writer, u)
				return nil
			})
		},
	}
}

func pinCommand() *cli.Command {
	return &cli.Command{
		Name:      "pin",
		Usage:     "protect cached images from eviction (their index, manifests, configs and layers)",
		ArgsUsage: "IMAGE...",
		Flags:     manageFlags(),
		Action: func(c *cli.Context) error {
			if c.NArg() == 0 {
				return errors.New("pin: name at least one image")
			}
			return withTarget(c, reachCache, func(ctx context.Context, t *target) error {
				var failed int
				for _, ref := range c.Args().Slice() {
					res, err := t.Ops.PinRef(ctx, ref)
					if err != nil {
						failed++
						fmt.Fprintf(c.App.ErrWriter, "%s: %v\n", ref, err)
						continue
					}
					fmt.Fprintf(c.App.Writer, "pinned %s (%s): %d blobs, %s", res.Name, res.Digest, res.Blobs, humanize.IBytes(uint64(res.Bytes)))
					if res.Missing > 0 {
						fmt.Fprintf(c.App.Writer, "; %d not cached (pinned when they arrive)", res.Missing)
					}
					fmt.Fprintln(c.App.Writer)
				}
				if failed > 0 {
					return fmt.Errorf("pin: %d of %d images not pinned (preload fetches images that are not cached)", failed, c.NArg())
				}
				return nil
			})
		},
	}
}

func unpinCommand() *cli.Command {
	return &cli.Command{
		Name:      "unpin",
		Usage:     "let pinned images be evicted again",
		ArgsUsage: "IMAGE...",
		Flags:     manageFlags(),
		Action: func(c *cli.Context) error {
			if c.NArg() == 0 {
				return errors.New("unpin: name at least one image")
			}
			return withTarget(c, reachCache, func(ctx context.Context, t *target) error {
				var errs []error
				for _, arg := range c.Args().Slice() {
					ref, err := admin.ParseRef(arg)
					if err == nil {
						err = t.Ops.Unpin(ctx, ref.String())
					}
					if err != nil {
						errs = append(errs, fmt.Errorf("%s: %w", arg, err))
						continue
					}
					fmt.Fprintf(c.App.Writer, "unpinned %s\n", ref)
				}
				return errors.Join(errs...)
			})
		},
	}
}

func sizeVsBudget(u admin.Usage) string {
	s := fmt.Sprintf("%s in %d blobs", humanize.IBytes(uint64(u.Bytes)), u.Blobs)
	if u.MaxBytes > 0 {
		s += fmt.Sprintf(", budget %s (%.0f%%; evicts above %s down to %s)", humanize.IBytes(uint64(u.MaxBytes)),
			100*float64(u.Bytes)/float64(u.MaxBytes), humanize.IBytes(uint64(u.HighBytes)), humanize.IBytes(uint64(u.LowBytes)))
	} else {
		s += ", no byte budget"
	}
	return s
}

func printUsage(w io.Writer, u admin.Usage) {
	fmt.Fprintf(w, "data dir:  %s\n", u.DataDir)
	fmt.Fprintf(w, "cache:     %s\n", sizeVsBudget(u))
	fmt.Fprintf(w, "pinned:    %s in %d blobs (%d pins)\n", humanize.IBytes(uint64(u.PinnedBytes)), u.PinnedBlobs, u.Pins)
	if u.FreeBytes >= 0 {
		fmt.Fprintf(w, "disk free: %s (keeping at least %s)\n", humanize.IBytes(uint64(u.FreeBytes)), humanize.IBytes(uint64(u.MinFree)))
	}
	if len(u.TopRepos) == 0 {
		return
	}
	fmt.Fprintln(w, "\ntop repositories:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "SIZE\tBLOBS\t REPOSITORY\t")
	for _, r := range u.TopRepos {
		fmt.Fprintf(tw, "%s\t%d\t %s/%s\t\n", humanize.IBytes(uint64(r.Bytes)), r.Blobs, r.Registry, r.Repo)
	}
	tw.Flush()
}
