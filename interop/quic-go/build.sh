#!/usr/bin/env bash
# Builds bin/stoq-interop-peer (quic-go interop peer) fully offline, using the
# Debian-packaged Go toolchain and quic-go sources in GOPATH mode.
set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
GOPATH_DIR="/usr/share/gocode"
QUIC_SRC="$GOPATH_DIR/src/github.com/lucas-clemente/quic-go"
PACKAGES=(golang-go golang-github-lucas-clemente-quic-go-dev)
OUT="$SCRIPT_DIR/bin/stoq-interop-peer"

have_deps() {
  command -v go >/dev/null 2>&1 && [ -f "$QUIC_SRC/interface.go" ]
}

apt_install() {
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo=(sudo -n); else return 1; fi
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${PACKAGES[@]}"
}

apt_update() {
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo=(sudo -n); else return 1; fi
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
}

if ! have_deps; then
  echo "build.sh: Go toolchain or quic-go sources missing; installing ${PACKAGES[*]} via apt" >&2
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "build.sh: ERROR: apt-get not available; install the Debian packages ${PACKAGES[*]} manually" >&2
    exit 1
  fi
  if ! apt_install; then
    echo "build.sh: apt-get install failed; running apt-get update and retrying" >&2
    if ! { apt_update && apt_install; }; then
      echo "build.sh: ERROR: could not install the Debian packages: ${PACKAGES[*]}" >&2
      echo "build.sh:        (need root or passwordless sudo, and a working apt source)" >&2
      exit 1
    fi
  fi
  if ! have_deps; then
    echo "build.sh: ERROR: after installing ${PACKAGES[*]}, 'go' or $QUIC_SRC is still missing" >&2
    exit 1
  fi
fi

# Up to date when the binary is newer than every Go source file of the peer.
up_to_date() {
  [ -x "$OUT" ] || return 1
  local src
  for src in "$SCRIPT_DIR"/*.go; do
    [ "$OUT" -nt "$src" ] || return 1
  done
}

if up_to_date; then
  echo "build.sh: $OUT is up to date" >&2
  exit 0
fi

mkdir -p "$SCRIPT_DIR/bin"
# go refuses to run without a build cache; pick one even if HOME is unset.
if [ -n "${GOCACHE:-}" ]; then
  GOCACHE_DIR="$GOCACHE"
elif [ -n "${XDG_CACHE_HOME:-}" ]; then
  GOCACHE_DIR="$XDG_CACHE_HOME/go-build"
elif [ -n "${HOME:-}" ] && [ -w "${HOME:-}" ]; then
  GOCACHE_DIR="$HOME/.cache/go-build"
else
  GOCACHE_DIR="${TMPDIR:-/tmp}/stoq-go-build-$(id -u)"
fi
cd "$SCRIPT_DIR"
echo "build.sh: building $OUT with $(go version)" >&2
# GOPATH mode: no go.mod, no module downloads; everything comes from /usr/share/gocode.
# GOFLAGS is cleared so that a caller's -mod=... cannot break the GOPATH-mode build.
GO111MODULE=off GOPATH="$GOPATH_DIR" GOFLAGS= GOPROXY=off \
  GOCACHE="$GOCACHE_DIR" \
  go build -o "$OUT.tmp" .
mv -f "$OUT.tmp" "$OUT"
echo "build.sh: built $OUT" >&2
