package main

import (
	"errors"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/regmirror/regmirror/imageref"
)

// policyCommand groups the tag policy's commands: today "explain".
func policyCommand() *cli.Command {
	return &cli.Command{
		Name:  "policy",
		Usage: "show how the tag freshness rules ([[tag_policy]]) treat an image",
		Subcommands: []*cli.Command{{
			Name:      "explain",
			Usage:     "print which [[tag_policy]] rule applies to IMAGE and why (reads the config only; no server, no network)",
			ArgsUsage: "IMAGE",
			Flags:     commonFlags(),
			Action: func(c *cli.Context) error {
				if c.NArg() != 1 {
					return errors.New("policy explain: name one image, e.g. docker.io/library/alpine:latest")
				}
				cfg, err := loadConfig(c)
				if err != nil {
					return err
				}
				return explainPolicy(c.App.Writer, cfg, c.Args().First())
			},
		}},
	}
}

// explainPolicy writes, for image, every rule checked in order (each with
// what did not match) up to the one that applies, then the decision.
func explainPolicy(w io.Writer, cfg config, image string) error {
	ref, err := imageref.Parse(image)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "image:    %s\n", ref)
	if !cfg.hasRegistry(ref.Registry) {
		fmt.Fprintf(w, "warning:  registry %q is not configured: the mirror refuses to fetch it\n", ref.Registry)
	}
	if ref.Digest != "" && ref.Tag == "" {
		fmt.Fprintln(w, "applies:  a digest reference: content by digest never changes, so it is never revalidated (no rule is consulted)")
		return nil
	}
	pol, err := cfg.tagPolicy()
	if err != nil {
		return err
	}
	checks, d := pol.Explain(ref.Registry, ref.Repo, ref.Tag)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range checks {
		var why string
		switch {
		case c.NameOK && c.TagOK:
			why = "matches"
		case c.NameOK:
			why = fmt.Sprintf("no: %s/%s matches, tag %q does not", ref.Registry, ref.Repo, ref.Tag)
		case c.TagOK:
			why = fmt.Sprintf("no: tag %q matches, %s/%s does not", ref.Tag, ref.Registry, ref.Repo)
		default:
			why = "no: neither the name nor the tag matches"
		}
		fmt.Fprintf(tw, "rule %d\t%s\t%s\n", c.Rule+1, c.Match, why)
	}
	tw.Flush()
	if d.Rule < 0 {
		if pol.Rules() == 0 {
			fmt.Fprintln(w, "no [[tag_policy]] rules are configured")
		}
		fmt.Fprintf(w, "applies:  no rule matched: the global tag_ttl (%s); %s\n", cfg.TagTTL.Duration, d)
		return nil
	}
	fmt.Fprintf(w, "applies:  rule %d (%s), the first that matches: %s\n", d.Rule+1, d.Match, d)
	return nil
}

// hasRegistry reports whether name is a configured registry.
func (c *config) hasRegistry(name string) bool {
	for _, r := range c.Registries {
		if r.Name == name {
			return true
		}
	}
	return false
}
