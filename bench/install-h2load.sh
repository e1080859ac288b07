#!/usr/bin/env bash
# Install h2load (Debian/Ubuntu package nghttp2-client) when it is absent, as .ci/run
# does for redis-server. Exits non-zero when it cannot; `make bench` then falls back
# to the Python load generator and says so.
set -euo pipefail
command -v h2load >/dev/null 2>&1 && exit 0
command -v apt-get >/dev/null 2>&1 || { echo "no apt-get: install h2load (nghttp2) yourself" >&2; exit 1; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "not root and no sudo: cannot install nghttp2-client" >&2; exit 1; }
  SUDO="sudo -n"
fi
echo "h2load not found: installing nghttp2-client with apt" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nghttp2-client >/dev/null
command -v h2load >/dev/null 2>&1
