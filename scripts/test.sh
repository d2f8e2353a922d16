#!/usr/bin/env bash
# Run every test of regmirror, including the ones that pull through the
# mirror with real clients (docker, skopeo, containerd's ctr, podman) and
# the status page test in headless Chromium.
#
#   bash scripts/test.sh                 # all packages
#   bash scripts/test.sh -run TestDocker # extra arguments go to `go test`
#
# As root it installs the missing clients with apt-get (Debian). Otherwise
# it says what to install; the client tests then skip, or fail when
# REGMIRROR_REQUIRE_CLIENTS=1 (which this script sets unless it is already
# set: export REGMIRROR_REQUIRE_CLIENTS=0 to let them skip).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

section() { printf '\n==== %s ====\n' "$*"; }

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }

section "real clients"
missing=()
have skopeo || missing+=(skopeo)
have dockerd || missing+=(docker.io)
{ have containerd && have ctr; } || missing+=(containerd)
have podman || missing+=(podman)
have chromium || missing+=(chromium)

if [ ${#missing[@]} -eq 0 ]; then
	echo "all present: skopeo, dockerd, containerd + ctr, podman, chromium"
elif [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt_opts=(-o DPkg::Lock::Timeout=600 -o Dpkg::Use-Pty=0)
	if apt-get "${apt_opts[@]}" update -q &&
		apt-get "${apt_opts[@]}" install -y -q --no-install-recommends "${missing[@]}" </dev/null; then
		echo "installed: ${missing[*]}"
	else
		echo "WARNING: apt-get install ${missing[*]} failed; the tests that need them will skip or fail" >&2
	fi
else
	echo "missing: ${missing[*]}"
	echo "install them with: sudo apt-get install --no-install-recommends ${missing[*]}"
	echo "(not root or no apt-get: continuing; the tests that need them will skip or fail)"
fi

export REGMIRROR_REQUIRE_CLIENTS="${REGMIRROR_REQUIRE_CLIENTS:-1}"
echo "REGMIRROR_REQUIRE_CLIENTS=$REGMIRROR_REQUIRE_CLIENTS"

if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
	export PATH="$PATH:/usr/local/go/bin"
fi

section "go version"
go version

section "versitygw (the real S3 server of the s3tier tests)"
# Installed like the clients when missing; without it those tests skip, or
# fail with REGMIRROR_REQUIRE_CLIENTS=1.
if command -v versitygw >/dev/null 2>&1 || [ -x "$(go env GOPATH)/bin/versitygw" ]; then
	echo "present"
else
	echo "installing: go install github.com/versity/versitygw/cmd/versitygw@v1.8.0 (about a minute)"
	go install github.com/versity/versitygw/cmd/versitygw@v1.8.0 ||
		echo "WARNING: installing versitygw failed; the s3tier tests will skip or fail" >&2
fi

section "go vet ./..."
go vet ./...

section "staticcheck ./..."
go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

section "govulncheck ./..."
# Pinned like staticcheck. It needs its vulnerability database
# (https://vuln.go.dev, or GOVULNCHECK_DB=file:///path/to/a/copy). Where the
# database cannot be reached (a box whose only way out is the Go module
# proxy) the check is skipped with a line that says so; a finding, or any
# other failure, fails the run.
vuln_out=$(mktemp)
vuln_rc=0
go run golang.org/x/vuln/cmd/govulncheck@v1.9.0 ${GOVULNCHECK_DB:+-db "$GOVULNCHECK_DB"} ./... >"$vuln_out" 2>&1 || vuln_rc=$?
if [ "$vuln_rc" -ne 0 ] && grep -q '^govulncheck: fetching vulnerabilities' "$vuln_out"; then
	echo "govulncheck skipped: vulnerability database unreachable"
	sed 's/^/  /' "$vuln_out"
else
	cat "$vuln_out"
	if [ "$vuln_rc" -ne 0 ]; then
		rm -f "$vuln_out"
		echo "govulncheck failed (exit $vuln_rc)" >&2
		exit "$vuln_rc"
	fi
fi
rm -f "$vuln_out"

section "go test -race ./..."
go test -race -count=1 -timeout 40m ./... "$@"

section "fuzz targets (${REGMIRROR_FUZZTIME:-4s} each)"
# Every Fuzz* function of every package, found in the test files (so new
# targets run without editing this), each for a bounded time: Go fuzzes one
# target per invocation. REGMIRROR_FUZZTIME=0 skips the section. A failing
# input is written under the package's testdata/fuzz/ and fails the run.
fuzztime="${REGMIRROR_FUZZTIME:-4s}"
if [ "$fuzztime" != "0" ]; then
	go list -f '{{.ImportPath}} {{.Dir}}' ./... | while read -r pkg dir; do
		for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //'); do
			echo "-- $pkg $target"
			corpus="$dir/testdata/fuzz/$target"
			before=$( (ls "$corpus" 2>/dev/null || true) | wc -l)
			if ! out=$(go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg" 2>&1); then
				echo "$out"
				# go1.26's fuzz coordinator can report its own -fuzztime
				# deadline as a failure (go.dev/issue/75804, fixed in 1.27):
				# no failing input written and that message is not a finding.
				after=$( (ls "$corpus" 2>/dev/null || true) | wc -l)
				if [ "$after" = "$before" ] && grep -q 'context deadline exceeded$' <<<"$out"; then
					echo "(not a finding: the fuzz coordinator's deadline race, go.dev/issue/75804; no failing input was written)"
				else
					exit 1
				fi
			else
				echo "$out"
			fi
		done
	done
fi

section "all tests passed"
