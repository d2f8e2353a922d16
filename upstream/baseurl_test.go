package upstream

import "testing"

// CheckBaseURL is the one check of an operator's registry, mirror, peer,
// push-to or S3 address: http(s)://host[:port], nothing after it but a
// slash.
func TestCheckBaseURL(t *testing.T) {
	for _, c := range []struct {
		raw string
		ok  bool
	}{
		{"http://h", true},
		{"https://h:5000", true},
		{"http://h/", true},
		{"http://h/v2", false},
		{"http://u:p@h", false},
		{"http://h?q=1", false},
		{"http://h#x", false},
		{"ftp://h", false},
		{"h:5000", false},
		{"http://", false},
		{"", false},
	} {
		u, err := CheckBaseURL(c.raw)
		if (err == nil) != c.ok {
			t.Errorf("CheckBaseURL(%q) = %v, %v; want ok %v", c.raw, u, err, c.ok)
		}
	}
}
