package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/regmirror/regmirror/airgap"
	"github.com/regmirror/regmirror/imageref"
)

// fileFlag names a list of images (preload, export, push-to).
var fileFlag = &cli.StringFlag{
	Name:    "file",
	Aliases: []string{"f"},
	Usage:   "read image references from this file, one per line (# starts a comment; - is stdin)",
}

// imageArgs gathers the references given as arguments and with --file.
func imageArgs(c *cli.Context) ([]imageref.Ref, error) {
	return imageRefs(c, c.Args().Slice())
}

// imageRefs gathers the references in args and in --file's list (see
// airgap.ParseImageList), each once.
func imageRefs(c *cli.Context, args []string) ([]imageref.Ref, error) {
	var refs []imageref.Ref
	var errs []error
	seen := map[string]bool{}
	add := func(r imageref.Ref) {
		if !seen[r.String()] {
			seen[r.String()] = true
			refs = append(refs, r)
		}
	}
	for _, a := range args {
		r, err := parseOperand(a)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		add(r)
	}
	if path := c.String("file"); path != "" {
		var in io.Reader = os.Stdin
		if path != "-" {
			f, err := os.Open(path)
			if err != nil {
				return nil, err
			}
			defer f.Close()
			in = f
		}
		list, err := airgap.ParseImageList(in, path)
		if err != nil {
			errs = append(errs, err)
		}
		for _, r := range list {
			add(r)
		}
	}
	return refs, errors.Join(errs...)
}

// parseOperand parses an image named as an argument. An argument that
// looks like a flag is refused with its own message: urfave/cli reads flags
// only before the arguments, so "purge alpine --keep-blobs" would
// otherwise purge alpine without --keep-blobs, then fail on the flag.
func parseOperand(arg string) (imageref.Ref, error) {
	if strings.HasPrefix(arg, "-") && arg != "-" {
		return imageref.Ref{}, fmt.Errorf("%q comes after the images: flags go before them", arg)
	}
	return imageref.Parse(arg)
}

// anImage is checkOperands' check for commands whose arguments are images.
func anImage(arg string) error {
	_, err := parseOperand(arg)
	return err
}

// checkOperands checks every argument of a command that acts on each in
// turn (purge, pin, unpin) with valid, before it acts on any.
func checkOperands(c *cli.Context, cmd string, valid func(string) error) error {
	var errs []error
	for _, a := range c.Args().Slice() {
		if err := valid(a); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%s: nothing done: %w", cmd, err)
	}
	return nil
}

// imageSelection reads a command's choice of images: those in args (and
// --file), or --all; where says where names go, for the message when
// there are none.
func imageSelection(c *cli.Context, cmd string, args []string, where string) ([]imageref.Ref, bool, error) {
	refs, err := imageRefs(c, args)
	if err != nil {
		return nil, false, err
	}
	all := c.Bool("all")
	switch {
	case all && len(refs) > 0:
		return nil, false, fmt.Errorf("%s: name images or give --all, not both", cmd)
	case !all && len(refs) == 0:
		return nil, false, fmt.Errorf("%s: no images: name them %s, with --file, or give --all", cmd, where)
	}
	return refs, all, nil
}
