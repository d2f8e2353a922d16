// Package realclient drives real container clients (the Docker daemon,
// skopeo, containerd's ctr and podman) against a registry mirror, for tests
// only.
//
// Every helper takes a testing.TB. A missing binary (or missing root where
// root is needed) makes the test skip, naming the Debian package to install;
// with REGMIRROR_REQUIRE_CLIENTS=1 in the environment it fails instead, so CI
// cannot pass by skipping.
//
// Each client runs with private state in temporary directories and is torn
// down in t.Cleanup: nothing is read from or written to the host's
// /var/lib/docker, /var/lib/containerd, /etc/docker/daemon.json or the
// invoking user's credentials. Every external command runs under a timeout
// and its combined output is quoted in failure messages.
//
//	d := realclient.StartDockerd(t, "http://"+mirrorHost)   // --registry-mirror
//	d.Pull(t, "alpine")                                       // docker.io/library/alpine:latest via the mirror
//	dig := d.RepoDigest(t, "alpine")                          // "sha256:…"
//
//	dig = realclient.SkopeoCopy(t, mirrorHost, "docker.io/library/alpine:latest", t.TempDir())
//
//	c := realclient.StartContainerd(t)
//	dig = c.PullWithHostsDir(t, "docker.io/library/alpine:latest", realclient.WriteHostsDir(t, "http://"+mirrorHost))
//
//	conf := realclient.WriteRegistriesConf(t, realclient.Mirror("docker.io", mirrorHost))
//	dig = realclient.PodmanPull(t, conf, "docker.io/library/alpine:latest")
package realclient
