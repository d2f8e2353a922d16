package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/dustin/go-humanize"
	"github.com/opencontainers/go-digest"
	"github.com/urfave/cli/v2"

	"github.com/regmirror/regmirror/admin"
	"github.com/regmirror/regmirror/airgap"
	"github.com/regmirror/regmirror/internal/stack"
)

func gcCommand() *cli.Command {
	return &cli.Command{
		Name:  "gc",
		Usage: "evict least recently used content down to the low watermark now",
		Description: "Works on the data dir directly when no server uses it, " +
			"else asks the running server (see --server).",
		Flags: manageFlags(
			maxSizeFlag(),
			&cli.BoolFlag{Name: "s3", Usage: "instead: delete objects of the [s3] bucket written longer ago than --older-than"},
			&cli.StringFlag{Name: "older-than", Usage: `with --s3: age, e.g. "30d" or "720h"`},
		),
		Action: func(c *cli.Context) error {
			if c.Bool("s3") {
				return gcS3(c)
			}
			if c.IsSet("older-than") {
				return errors.New("gc: --older-than goes with --s3 (the local cache is evicted by its budget, least recently used first)")
			}
			return withTarget(c, reachCache, func(ctx context.Context, t *target) error {
				if err := sameBudget(ctx, c, t); err != nil {
					return err
				}
				res, err := t.Ops.GC(ctx)
				if err != nil {
					return err
				}
				u, err := t.Ops.Usage(ctx, 0)
				if err != nil {
					return err
				}
				fmt.Fprintf(c.App.Writer, "evicted %d blobs (%s) from %s\n", res.Blobs, humanize.IBytes(uint64(res.Bytes)), t.Where)
				fmt.Fprintf(c.App.Writer, "cache now %s\n", sizeVsBudget(u))
				if res.Failed > 0 {
					return fmt.Errorf("gc: %d blobs could not be deleted (see the log)", res.Failed)
				}
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
			maxSizeFlag(),
		),
		Action: func(c *cli.Context) error {
			return withTarget(c, reachCache, func(ctx context.Context, t *target) error {
				if err := sameBudget(ctx, c, t); err != nil {
					return err
				}
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
			if err := checkOperands(c, "pin", anImage); err != nil {
				return err
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

// pinName is the pin an argument of unpin names: an image's full reference,
// a digest as it is (import pins an image it has no name for under its
// digest), or a pin left by a command killed midway: a preload's
// ("<image> (preloading)", as du counts it) or the staging pin of a large
// pin being assembled ("<image> (pinning <nonce>)", see admin.CutPinning),
// of an image or of a preload.
func pinName(arg string) (string, error) {
	if _, err := digest.Parse(arg); err == nil {
		return arg, nil
	}
	image, staging := arg, ""
	if pin, ok := admin.CutPinning(arg); ok {
		image, staging = pin, arg[len(pin):]
	}
	image, preloading := strings.CutSuffix(image, airgap.PreloadingSuffix)
	ref, err := parseOperand(image)
	if err != nil {
		return "", err
	}
	name := ref.String()
	if preloading {
		name += airgap.PreloadingSuffix
	}
	return name + staging, nil
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
			if err := checkOperands(c, "unpin", func(a string) error { _, err := pinName(a); return err }); err != nil {
				return err
			}
			return withTarget(c, reachCache, func(ctx context.Context, t *target) error {
				var errs []error
				for _, arg := range c.Args().Slice() {
					name, err := pinName(arg)
					if err == nil {
						err = t.Ops.Unpin(ctx, name)
					}
					if err != nil {
						errs = append(errs, fmt.Errorf("%s: %w", arg, err))
						continue
					}
					fmt.Fprintf(c.App.Writer, "unpinned %s\n", name)
				}
				return errors.Join(errs...)
			})
		},
	}
}

// sameBudget refuses --max-size (or REGMIRROR_MAX_SIZE) when the cache is
// reached through a server whose budget differs: the server evicts to its
// own budget, and saying otherwise would be a lie. The same value (the
// server's own environment, say) is fine.
func sameBudget(ctx context.Context, c *cli.Context, t *target) error {
	if t.Stack != nil || !c.IsSet("max-size") {
		return nil
	}
	dir := t.Config.DataDir
	if t.Remote {
		dir = "" // not this box's filesystem
	}
	want, err := stack.Budget(c.String("max-size"), dir)
	if err != nil {
		return err
	}
	u, err := t.Ops.Usage(ctx, 0)
	if err != nil {
		return err
	}
	if u.MaxBytes != want {
		return fmt.Errorf("--max-size %s: the server at %s holds the data dir and evicts to its own budget (%s); set cache.max_size in its config and restart it, or stop it to work on the data dir directly",
			c.String("max-size"), t.Where, budgetString(u.MaxBytes))
	}
	return nil
}

func budgetString(n int64) string {
	if n == 0 {
		return "none"
	}
	return humanize.IBytes(uint64(n))
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
