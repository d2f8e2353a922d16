#!/usr/bin/env bash
# Small requests (issue 14, goal 3): warm manifest GETs by digest and blob
# HEADs on 32 keep-alive connections, against a fasthttp server doing no
# work (the ceiling; "timeouts" is the same server with regmirror's default
# read/write/idle timeouts), regmirror built at a base revision ("before") and
# regmirror built from this tree ("after"), in the same run, and prints the
# table (req/s and the fraction of the ceiling of the same round).
#   bash bench/smallreq.sh                         # before = d16e200, 3 rounds of 5 s
#   REGMIRROR_BENCH_BEFORE=main REGMIRROR_BENCH_ROUNDS=5 bash bench/smallreq.sh
#   REGMIRROR_BENCH_PROFILES=/tmp/prof bash bench/smallreq.sh   # and CPU profiles (pprof -top)
#   REGMIRROR_BENCH_CLIENTS=goroutines,epoll bash bench/smallreq.sh   # both load generators
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
before=${REGMIRROR_BENCH_BEFORE:-d16e200}
rounds=${REGMIRROR_BENCH_ROUNDS:-3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/src"
git archive "$before" | tar -x -C "$tmp/src"
# Both builds carry the profiling hook (inert unless REGMIRROR_CPUPROFILE is set).
[ -f "$tmp/src/cpuprofile.go" ] || cp cpuprofile.go "$tmp/src/"
[ -d "$tmp/src/internal/sigprof" ] || cp -r internal/sigprof "$tmp/src/internal/"
(cd "$tmp/src" && go build -tags cpuprofile -o "$tmp/before" .)
go build -tags cpuprofile -o "$tmp/after" .
env=(REGMIRROR_BENCH_BINARIES="before=$tmp/before,after=$tmp/after")
if [ -n "${REGMIRROR_BENCH_PROFILES:-}" ]; then
	mkdir -p "$REGMIRROR_BENCH_PROFILES"
	env+=(REGMIRROR_BENCH_CPUPROFILE="$REGMIRROR_BENCH_PROFILES")
fi
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
env "${env[@]}" REGMIRROR_BENCH_ROUNDS="$rounds" go test -run '^$' -bench SmallRequests -benchtime 1x -timeout 30m ./bench/
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -n "${REGMIRROR_BENCH_PROFILES:-}" ]; then
	echo; echo "CPU profile of the no-work server (last round):"
	go tool pprof -top -nodecount=25 "$REGMIRROR_BENCH_PROFILES/nowork.prof" 2>/dev/null
	for v in before after; do
		echo; echo "CPU profile of $v (last round):"
		go tool pprof -top -nodecount=25 "$tmp/$v" "$REGMIRROR_BENCH_PROFILES/$v.prof" 2>/dev/null
		cp "$tmp/$v" "$REGMIRROR_BENCH_PROFILES/$v.bin"
	done
fi
