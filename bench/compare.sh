#!/usr/bin/env bash
# Runs shoal side by side with the tools a user would pick instead (see
# bench/compare/main.go) and prints one table. Installs what it needs from
# apt first. Loopback only; every process it starts is stopped by its PID.
#
#   bash bench/compare.sh                 # all three scenarios, 5 rounds each
#   bash bench/compare.sh -scenarios 1 -pairs 3
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for tool in aria2c:aria2 nginx:nginx iperf3:iperf3 opentracker:opentracker mktorrent:mktorrent curl:curl openssl:openssl stdbuf:coreutils; do
  command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
exec go run ./bench/compare "$@"
