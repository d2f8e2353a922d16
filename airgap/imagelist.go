package airgap

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/regmirror/regmirror/imageref"
)

// ParseImageList reads an image list: one reference per line (a tag or a
// digest, any configured registry, Docker's defaulting: "alpine" is
// docker.io/library/alpine:latest); blank lines are skipped and "#" starts
// a comment, on its own line or after a reference (a reference never
// contains "#"). Every bad line is reported, with its number, in one
// error. Repeated references are kept once, in first-seen order.
func ParseImageList(r io.Reader, name string) ([]imageref.Ref, error) {
	var refs []imageref.Ref
	var errs []error
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if strings.ContainsAny(line, " \t") {
			errs = append(errs, fmt.Errorf("%s:%d: one reference per line, got %q", name, n, line))
			continue
		}
		ref, err := imageref.Parse(line)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %v", name, n, err))
			continue
		}
		if !seen[ref.String()] {
			seen[ref.String()] = true
			refs = append(refs, ref)
		}
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", name, err))
	}
	return refs, errors.Join(errs...)
}
