#!/usr/bin/env bash
# deps.sh - installs what suggestd needs to build and test on Debian 12 (as root), only what is missing.
set -eu
pkgs="build-essential cmake pkg-config libjansson-dev libcmocka-dev clang libmicrohttpd-dev libcurl4-openssl-dev nodejs npm curl jq"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "installing:$missing"
    if [ "$(id -u)" != 0 ]; then echo "run as root (or install:$missing)" >&2; exit 1; fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
