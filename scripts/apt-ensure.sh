#!/usr/bin/env bash
# Install the Debian packages whose commands are missing: apt-ensure.sh CMD PKG [CMD PKG ...]
# (CMD may be "a|b": any of them present counts). Used by `make install` and .ci/run so a
# fresh machine needs no manual step; exits non-zero, saying what to install, when it
# cannot (no apt-get, not root and no sudo).
set -euo pipefail
missing=()
while [ "$#" -ge 2 ]; do
  found=""
  IFS='|' read -ra cmds <<<"$1"
  for c in "${cmds[@]}"; do command -v "$c" >/dev/null 2>&1 && found=1; done
  [ -n "$found" ] || missing+=("$2")
  shift 2
done
[ "${#missing[@]}" -eq 0 ] && exit 0
command -v apt-get >/dev/null 2>&1 || {
  echo "missing system packages (${missing[*]}) and no apt-get: install them yourself" >&2
  exit 1
}
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || {
    echo "missing system packages (${missing[*]}): not root and no sudo; install them" >&2
    exit 1
  }
  SUDO="sudo -n"
fi
echo "installing system packages with apt: ${missing[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
