#!/usr/bin/env bash
# gpu-deps.sh - run on a Debian 12 dev machine (not the GPU machine): downloads the .deb files of the libraries the
# GPU machine lacks (jansson, libmicrohttpd; gnutls and its dependencies as a fallback) into .gpu-deps/ (git-ignored).
# scripts/gpu-check.sh unpacks them there with `dpkg -x` into build-gpu/deps - never into /. Carry .gpu-deps.
set -eu
cd "$(dirname "$0")/.."
mkdir -p .gpu-deps/extra
(cd .gpu-deps && apt-get download libjansson4 libjansson-dev libmicrohttpd12 libmicrohttpd-dev)
(cd .gpu-deps/extra && apt-get download libgnutls30 libp11-kit0 libidn2-0 libunistring2 libtasn1-6 libnettle8 \
    libhogweed6 libgmp10 libffi8)
# names with '%' (epochs) do not travel well
for f in .gpu-deps/extra/*%3a*; do [ -e "$f" ] && mv "$f" "$(echo "$f" | sed 's/[0-9]*%3a//')"; done
ls -l .gpu-deps .gpu-deps/extra
