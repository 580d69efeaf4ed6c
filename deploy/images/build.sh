#!/usr/bin/env bash
# Builds Tessera's OCI images from this repository alone, nothing pulled:
#   localhost/tessera-sidecar:VERSION   tessera-sidecar
#   localhost/tessera-agent:VERSION     tessera-agent
#   localhost/tessera-ca:VERSION        tessera-ca and the tessera CLI
# Each image is FROM scratch with statically linked binaries (glibc linked
# statically with +crt-static; ring builds that way too), so no base image is
# needed and there is no shell or package manager inside.
#
# Usage: deploy/images/build.sh            (podman; set PODMAN=docker for Docker)
# The release build goes to $CARGO_TARGET_DIR (default target/) under the
# target triple's directory; a cold build takes about 10 minutes on 2 cores,
# later ones only rebuild what changed. Prints one line per image: name, size.
set -euo pipefail
cd "$(dirname "$0")/../.."

podman=${PODMAN:-podman}
triple=${TESSERA_IMAGE_TARGET:-$(uname -m)-unknown-linux-gnu}
target_dir=${CARGO_TARGET_DIR:-target}
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)

# --target keeps build scripts and proc macros dynamically linked (host
# artifacts); only the shipped binaries get crt-static. Stripping the debug
# line tables the release profile keeps halves the binaries; symbol names stay
# for backtraces.
RUSTFLAGS='-C target-feature=+crt-static' CARGO_PROFILE_RELEASE_STRIP=debuginfo \
    cargo build --locked --release --target "$triple" \
    -p tessera-ca-server --bin tessera-ca -p tessera-cli --bin tessera \
    -p tessera-sidecar --bin tessera-sidecar -p tessera-agent --bin tessera-agent
bin="$target_dir/$triple/release"

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
build() { # image name, binaries...
    local image=$1
    shift
    rm -rf "${context:?}"/*
    mkdir -p "$context/data"
    for b in "$@"; do
        cp "$bin/$b" "$context/$b"
    done
    "$podman" build --quiet --pull=never -f "deploy/images/$image.Containerfile" \
        -t "localhost/tessera-$image:$version" "$context" >/dev/null
    echo "localhost/tessera-$image:$version $("$podman" image inspect --format '{{.Size}}' "localhost/tessera-$image:$version")"
}
build sidecar tessera-sidecar
build agent tessera-agent
build ca tessera-ca tessera
