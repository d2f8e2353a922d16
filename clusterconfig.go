package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/regmirror/regmirror/cluster"
)

// clusterConfig is the [cluster] section (README "Running several nodes"):
// with it, a cold blob is downloaded once for the whole cluster.
type clusterConfig struct {
	// Self is how the peers reach this node. REGMIRROR_CLUSTER_SELF
	// overrides it (a StatefulSet gives each pod its own name).
	Self string `toml:"self"`
	// Peers are the other nodes (this one may be listed too).
	Peers []string `toml:"peers"`
	// SecretFile holds the shared HMAC key for peer requests.
	SecretFile string `toml:"secret_file"`
	// CAFile adds PEM CA certificates for https peers.
	CAFile string `toml:"ca_file"`
}

// clusterSelfEnv overrides cluster.self.
const clusterSelfEnv = "REGMIRROR_CLUSTER_SELF"

// check applies the environment and checks the section.
func (c *clusterConfig) check() error {
	if v := os.Getenv(clusterSelfEnv); v != "" {
		c.Self = v
	}
	var errs []error
	if c.Self == "" {
		errs = append(errs, errors.New("cluster.self: must be set (how the peers reach this node), or "+clusterSelfEnv))
	}
	if len(c.Peers) == 0 {
		errs = append(errs, errors.New("cluster.peers: list the other nodes"))
	}
	if c.SecretFile == "" {
		errs = append(errs, errors.New("cluster.secret_file: must name the file holding the shared key"))
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	_, err := c.options()
	return err
}

// options reads the secret and checks the URLs by building the node's
// options; cluster.New checks the rest.
func (c *clusterConfig) options() (cluster.Options, error) {
	b, err := os.ReadFile(c.SecretFile)
	if err != nil {
		return cluster.Options{}, fmt.Errorf("cluster.secret_file: %w", err)
	}
	secret := []byte(strings.TrimSpace(string(b)))
	o := cluster.Options{Self: c.Self, Peers: c.Peers, Secret: secret, CAFile: c.CAFile}
	if _, err := cluster.New(o); err != nil {
		return cluster.Options{}, fmt.Errorf("[cluster]: %w", err)
	}
	return o, nil
}
