#!/usr/bin/env bash
# Times `shoal course get redsox.jpg` against the built-in course server in
# testing mode (real timing, unscaled), RUNS times, and prints every time,
# the median and the worst. Loopback only; every process started is
# stopped by its PID. FRESH=1 starts a new server (new port speeds) per run.
#
# COMPARE="--stream=false" (any `course get` flags) also runs that variant
# in every run, against the same server, in alternating order, and prints
# its median and worst and the median of the per-run ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-10}
DATA=${DATA:-course/testdata}
COMPARE=${COMPARE:-}
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
# one_run FLAGS...: downloads once, checks the file, prints the seconds.
one_run() {
  rm -f "$bin/out.jpg"
  local start end
  start=$(date +%s.%N)
  "$bin/shoal" course get redsox.jpg --tracker "$tracker" -o "$bin/out.jpg" "$@" > /dev/null
  end=$(date +%s.%N)
  cmp -s "$bin/out.jpg" "$DATA/redsox.jpg" || { echo "file differs" >&2; exit 1; }
  sleep 2.1 # the tracker drops queries from one IP within 2 s of its last reply
  echo "$end - $start" | bc
}
summary() { # NAME TIMES...
  local name=$1; shift
  printf '%s\n' "$@" | sort -n | awk -v n="$name" '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%s: median %.2f s, worst %.2f s, best %.2f s over %d runs\n", n, m, a[NR], a[1], NR}'
}
start_server
times=() other=() ratios=()
for i in $(seq "$RUNS"); do
  # FRESH=1: a new server, so new port speeds, for every run. Otherwise all
  # runs meet the same draw of speeds, as students meet one course server.
  [ "$i" -gt 1 ] && [ -n "${FRESH:-}" ] && start_server
  if [ -z "$COMPARE" ]; then
    t=$(one_run)
    times+=("$t")
    printf 'run %2d: %6.2f s\n' "$i" "$t"
    continue
  fi
  # shellcheck disable=SC2086 # COMPARE is a list of flags
  if [ $((i % 2)) -eq 1 ]; then a=$(one_run); b=$(one_run $COMPARE); else b=$(one_run $COMPARE); a=$(one_run); fi
  times+=("$a") other+=("$b") ratios+=("$(echo "$a / $b" | bc -l)")
  printf 'run %2d: %6.2f s, with %s %6.2f s\n' "$i" "$a" "$COMPARE" "$b"
done
summary "shoal course get" "${times[@]}"
if [ -n "$COMPARE" ]; then
  summary "with $COMPARE" "${other[@]}"
  printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "median of per-run ratios (default / compared): %.3f\n", m}'
fi
