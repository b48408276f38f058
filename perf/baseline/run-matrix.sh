#!/usr/bin/env bash
# Runs the whole baseline matrix of SPEC section 4 and prints the medians.
#
#   perf/baseline/run-matrix.sh [OUT_DIR]      (default OUT_DIR: perf/out/baseline-<timestamp>)
#
# Starts its own redis-server on a free loopback port (--save '' --appendonly no), loads the
# keyspace, runs overhead (N=2,000,000), delay and redis (N=1,000,000) x ordered/unordered x
# P=1,2 x plain/unconstrained, REPS (default 3) repetitions each, interleaved (repetition is
# the outer loop, so a noisy minute hits every configuration alike), then
# `redis-benchmark -t get -n 2000000 -P 1000 -c 1` and `-c 2`, and stops the server.
# Env: REPS, WORKLOADS (default "overhead delay redis"), REDIS_SERVER, REDIS_BENCHMARK.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/../out/baseline-$(date +%Y%m%d-%H%M%S)}"
reps="${REPS:-3}"
workloads="${WORKLOADS:-overhead delay redis}"
redis_server="${REDIS_SERVER:-redis-server}"
redis_benchmark="${REDIS_BENCHMARK:-redis-benchmark}"
mkdir -p "$out"

command -v "$redis_server" >/dev/null || {
  echo "redis-server not found: apt-get update && apt-get install -y redis-server" >&2
  exit 1
}

cargo build --release --manifest-path "$here/Cargo.toml" >&2
bin="$here/target/release/ringwait-baseline"

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"$redis_server" --save '' --appendonly no --bind 127.0.0.1 --port "$port" --daemonize no \
  >"$out/redis-server.log" 2>&1 &
redis_pid=$!
trap 'kill "$redis_pid" 2>/dev/null || true' EXIT
url="redis://127.0.0.1:$port"
for _ in $(seq 50); do
  redis-cli -p "$port" ping >/dev/null 2>&1 && break
  sleep 0.1
done
"$bin" load --redis "$url"

{
  echo "# $(date -u +%FT%TZ) $(uname -r) nproc=$(nproc) $("$redis_server" --version)"
  echo "# load at start: $(cat /proc/loadavg)"
} >"$out/meta.txt"

results="$out/results.txt"
: >"$results"
for rep in $(seq "$reps"); do
  for w in $workloads; do
    case "$w" in overhead) n=2000000 ;; *) n=1000000 ;; esac
    for m in ordered unordered; do
      for p in 1 2; do
        for u in "" --unconstrained; do
          line="$("$bin" --workload "$w" --mode "$m" --partitions "$p" --records "$n" \
            --capacity 1000 --redis "$url" $u)"
          echo "rep=$rep $line" | tee -a "$results" >&2
        done
      done
    done
  done
done

bench="$out/redis-benchmark.txt"
: >"$bench"
for rep in $(seq "$reps"); do
  for c in 1 2; do
    r="$("$redis_benchmark" -h 127.0.0.1 -p "$port" -t get -n 2000000 -P 1000 -c "$c" -q |
      tr '\r' '\n' | grep -E '^GET: [0-9.]+ requests per second' | tail -1)"
    echo "rep=$rep c=$c $r" | tee -a "$bench" >&2
  done
done
echo "# load at end: $(cat /proc/loadavg)" >>"$out/meta.txt"

python3 "$here/medians.py" "$results" "$bench" | tee "$out/medians.md"
