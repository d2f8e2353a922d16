#!/usr/bin/env bash
# Runs regmirror's benchmarks and prints them as a table.
#   bash bench/run.sh              # the issue's sizes (1 GiB blobs; a few minutes)
#   REGMIRROR_BENCH_BLOB_MIB=64 bash bench/run.sh   # quick
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT
go test -run '^$' -bench 'WarmBlob|ColdFirstByte|TenClients' -benchtime 3x -count 1 -timeout 60m ./bench/ | tee "$out" >&2
go test -run '^$' -bench 'HitPath' -benchmem -count 1 . | tee -a "$out" >&2
go test -run '^$' -bench 'Evict100k|Touch$' -benchmem -count 1 ./eviction/ | tee -a "$out" >&2
echo
echo "| benchmark | result |"
echo "|---|---|"
awk '/^Benchmark/ {
	name=$1; sub(/-[0-9]+$/, "", name); res="";
	for (i=3; i<=NF; i+=2) { if ($(i+1) != "") res = res (res==""?"":", ") $i " " $(i+1) }
	print "| " name " | " res " |"
}' "$out"
