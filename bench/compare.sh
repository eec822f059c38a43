#!/usr/bin/env bash
# Runs shoal side by side with the tools a user would pick instead (see
# bench/compare/main.go) and prints one table. Installs what it needs from
# apt first. Loopback only; every process it starts is stopped by its PID.
#
#   bash bench/compare.sh                 # scenarios 1, 2, 3 and 5, 5 rounds each
#   bash bench/compare.sh -scenarios 1 -pairs 3
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for tool in aria2c:aria2 nginx:nginx iperf3:iperf3 opentracker:opentracker mktorrent:mktorrent curl:curl openssl:openssl stdbuf:coreutils rsync:rsync; do
  command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  # Install without starting services: the bench starts its own nginx and
  # opentracker on free ports; a system nginx would take port 80.
  policy=/usr/sbin/policy-rc.d
  made_policy=""
  trap 'if [ -n "$made_policy" ]; then $SUDO rm -f "$policy"; fi' EXIT
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
    made_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
  if [ -n "$made_policy" ]; then $SUDO rm -f "$policy"; fi
  for svc in nginx opentracker; do
    if command -v systemctl >/dev/null && systemctl is-enabled "$svc" >/dev/null 2>&1; then
      $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
  done
fi
exec go run ./bench/compare "$@"
