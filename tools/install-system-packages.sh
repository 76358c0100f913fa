#!/usr/bin/env bash
# Installs the Debian packages listed in $1 that are missing, when run as root with apt-get.
# Not root or no apt-get: prints which packages the integration tests would want, and goes on.
set -euo pipefail
list="$1"
mapfile -t wanted < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$list" | tr -d ' ')
missing=()
for p in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "note: not root or no apt-get; tests that need these Debian packages will skip: ${missing[*]}" >&2
fi
