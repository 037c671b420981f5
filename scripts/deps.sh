#!/usr/bin/env bash
# deps.sh - installs what suggestd needs to build and test on Debian 12 (as root), only what is missing.
# Libraries are checked as Debian packages; tools (node, npm, curl, jq, redis-server) as commands, so a Node.js installed some
# other way (nodesource, nvm) is used as it is instead of fighting Debian's nodejs/npm packages.
set -eu
pkgs="build-essential cmake pkg-config libjansson-dev libcmocka-dev clang libmicrohttpd-dev libcurl4-openssl-dev libssl-dev libhiredis-dev"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
command -v curl >/dev/null 2>&1 || missing="$missing curl"
command -v jq >/dev/null 2>&1 || missing="$missing jq"
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
command -v python3 >/dev/null 2>&1 || missing="$missing python3"
if [ -n "$missing" ]; then
    echo "installing:$missing"
    if [ "$(id -u)" != 0 ]; then echo "run as root (or install:$missing)" >&2; exit 1; fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
