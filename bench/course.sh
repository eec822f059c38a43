#!/usr/bin/env bash
# Times `shoal course get redsox.jpg` against the built-in course server in
# testing mode (real timing, unscaled), RUNS times, and prints every time,
# the median and the worst. Loopback only; every process started is
# stopped by its PID. FRESH=1 starts a new server (new port speeds) per run.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-10}
DATA=${DATA:-course/testdata}
bin=$(mktemp -d)
trap 'kill "$srv" 2>/dev/null || true; rm -rf "$bin"' EXIT
go build -o "$bin/shoal" ./cmd/shoal
start_server() {
  [ -n "${srv:-}" ] && { kill "$srv" 2>/dev/null || true; wait "$srv" 2>/dev/null || true; }
  rm -f "$bin/server.out"
  "$bin/shoal" course serve --dir "$DATA" --mode testing --tracker-port 0 --fixed-port 0 --grading-port -1 > "$bin/server.out" &
  srv=$!
  for _ in $(seq 50); do grep -q tracker "$bin/server.out" 2>/dev/null && break; sleep 0.1; done
  tracker=$(grep -o 'tracker udp [0-9.:]*' "$bin/server.out" | cut -d' ' -f3)
}
start_server
times=()
for i in $(seq "$RUNS"); do
  # FRESH=1: a new server, so new port speeds, for every run. Otherwise all
  # runs meet the same draw of speeds, as students meet one course server.
  [ "$i" -gt 1 ] && [ -n "${FRESH:-}" ] && start_server
  rm -f "$bin/out.jpg"
  start=$(date +%s.%N)
  "$bin/shoal" course get redsox.jpg --tracker "$tracker" -o "$bin/out.jpg" > /dev/null
  end=$(date +%s.%N)
  cmp -s "$bin/out.jpg" "$DATA/redsox.jpg" || { echo "run $i: file differs" >&2; exit 1; }
  t=$(echo "$end - $start" | bc)
  times+=("$t")
  printf 'run %2d: %6.2f s\n' "$i" "$t"
  sleep 2.1 # the tracker drops queries from one IP within 2 s of its last reply
done
printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "median %.2f s, worst %.2f s over %d runs\n", m, a[NR], NR}'
