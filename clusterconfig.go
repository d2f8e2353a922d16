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
	o, err := c.options()
	if err != nil {
		return err
	}
	if _, err := cluster.New(o); err != nil { // URLs, secret length, CA file
		return fmt.Errorf("[cluster]: %w", err)
	}
	return nil
}

// options reads the secret into the node's options; check has had
// cluster.New check them.
func (c *clusterConfig) options() (cluster.Options, error) {
	b, err := os.ReadFile(c.SecretFile)
	if err != nil {
		return cluster.Options{}, fmt.Errorf("cluster.secret_file: %w", err)
	}
	secret := []byte(strings.TrimSpace(string(b)))
	return cluster.Options{Self: c.Self, Peers: c.Peers, Secret: secret, CAFile: c.CAFile}, nil
}
