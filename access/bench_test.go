package access

import (
	"net"
	"testing"
)

// BenchmarkAuthorize is what access control adds to each request: a
// password client whose credential is cached (bcrypt ran once, before
// the timer), a trusted-network client and a certificate client, each
// matched against a few rules.
func BenchmarkAuthorize(b *testing.B) {
	c, err := New(Options{
		HtpasswdFile:    writeHtpasswd(b, "ci", "ci-pw", "other", "other-pw"),
		TrustedNetworks: []string{"10.0.0.0/8"},
		ClientCerts:     true,
		Rules: []Rule{
			{Users: []string{"other"}, Allow: []string{"ghcr.io/**"}},
			{Users: []string{"ci", "anonymous", "node1"}, Allow: []string{"docker.io/**", "ghcr.io/myorg/**"}, Deny: []string{"docker.io/someuser/**"}},
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name   string
		client Client
	}{
		{"password", Client{IP: net.ParseIP("203.0.113.5"), Authorization: basic("ci", "ci-pw")}},
		{"trusted-network", Client{IP: net.ParseIP("10.1.2.3")}},
		{"certificate", Client{IP: net.ParseIP("203.0.113.5"), CertCN: "node1"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			if _, err := c.Authorize(bc.client, "docker.io", "library/alpine"); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := c.Authorize(bc.client, "docker.io", "library/alpine"); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
