package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/dustin/go-humanize"
	"github.com/urfave/cli/v2"

	"github.com/regmirror/regmirror/admin"
)

func purgeCommand() *cli.Command {
	return &cli.Command{
		Name:      "purge",
		Usage:     "throw images out of the cache: their tag records, and the blobs no other cached image or pin uses",
		ArgsUsage: "IMAGE... | --all-tags REPOSITORY...",
		Description: "A purged tag is asked of upstream at its next pull. Blobs another cached image " +
			"(tagged, pulled by digest, or pinned) uses are kept. Works on the data dir directly when " +
			"no server uses it, else asks the running server (see --server).",
		Flags: manageFlags(
			&cli.BoolFlag{Name: "all-tags", Usage: "the arguments are repositories: drop every tag of each, and their images"},
			&cli.BoolFlag{Name: "keep-blobs", Usage: "drop the tag records only (the next pull revalidates; content stays cached)"},
		),
		Action: func(c *cli.Context) error {
			if c.NArg() == 0 {
				return errors.New("purge: name at least one image (or repository, with --all-tags)")
			}
			if err := checkOperands(c, "purge", anImage); err != nil {
				return err
			}
			return withTarget(c, reachCache, func(ctx context.Context, ca *target) error {
				p, ok := ca.Ops.(admin.Purger)
				if !ok {
					return admin.ErrPurgeUnsupported
				}
				var errs []error
				for _, arg := range c.Args().Slice() {
					res, err := p.Purge(ctx, admin.PurgeRequest{Ref: arg, AllTags: c.Bool("all-tags"), KeepBlobs: c.Bool("keep-blobs")})
					if err != nil {
						errs = append(errs, fmt.Errorf("%s: %w", arg, err))
						continue
					}
					fmt.Fprintf(c.App.Writer, "purged %s: %d tags, %d blobs (%s)", res.Ref, len(res.Tags), res.Blobs, humanize.IBytes(uint64(res.Bytes)))
					if res.Shared > 0 {
						fmt.Fprintf(c.App.Writer, "; kept %d blobs other images or pins use", res.Shared)
					}
					fmt.Fprintln(c.App.Writer)
				}
				return errors.Join(errs...)
			})
		},
	}
}
