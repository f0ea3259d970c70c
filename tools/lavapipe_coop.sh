#!/usr/bin/env bash
# Runs a command against a lavapipe that has cooperative matrices (Mesa >= 26:
# VK_KHR_cooperative_matrix, 8x8x8 f16->f32), so easel's cooperative kernels
# (wgsl/gemm_coop.wgsl) can be checked on a machine without a GPU.
#
#   bash tools/lavapipe_coop.sh cargo test --release --test ops coop
#   EASEL_COOPERATIVE=always bash tools/lavapipe_coop.sh target/release/easel "red apple"
#
# Debian stable's Mesa (22-25) has no cooperative matrices, so the first run builds a
# minimal Debian trixie root with Debian unstable's mesa-vulkan-drivers (debootstrap,
# about 400 MB, a few minutes) and mounts this checkout inside it at the same path.
# Binaries built on the host run there (same architecture, older or equal glibc);
# `cargo` itself runs on the host, with the test binaries executed inside the root.
# Needs root. ROOT=DIR picks where the root lives (default: /var/tmp/easel-lavapipe-coop).
set -euo pipefail
ROOT=${ROOT:-/var/tmp/easel-lavapipe-coop}
HERE=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "lavapipe_coop: needs root (chroot, mounts)" >&2; exit 2; }
[ $# -gt 0 ] || { echo "usage: tools/lavapipe_coop.sh COMMAND [ARGS...]" >&2; exit 2; }

build_root() {
  command -v debootstrap > /dev/null || apt-get install -y -q debootstrap > /dev/null
  debootstrap --variant=minbase trixie "$ROOT" http://deb.debian.org/debian > /dev/null
  echo "deb http://deb.debian.org/debian sid main" >> "$ROOT/etc/apt/sources.list"
  mount_all
  chroot "$ROOT" apt-get -q update > /dev/null
  chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -t sid mesa-vulkan-drivers libvulkan1 > /dev/null
  touch "$ROOT/.easel-ready"
}

mount_all() {
  mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
  mountpoint -q "$ROOT/dev" || mount --bind /dev "$ROOT/dev"
  mkdir -p "$ROOT$HERE"
  mountpoint -q "$ROOT$HERE" || mount --bind "$HERE" "$ROOT$HERE"
}

[ -f "$ROOT/.easel-ready" ] || build_root
mount_all

if [ "$1" = cargo ]; then
  # Build on the host, run each test binary inside the root.
  runner="$HERE/target/lavapipe-coop-runner"
  mkdir -p "$HERE/target"
  printf '#!/bin/sh\nexec chroot %q sh -c '\''cd "$1" && shift && exec "$@"'\'' - "$PWD" "$@"\n' \
    "$ROOT" > "$runner"
  chmod +x "$runner"
  triple=$(rustc -vV | sed -n 's/^host: //p' | tr '[:lower:]-' '[:upper:]_')
  exec env "CARGO_TARGET_${triple}_RUNNER=$runner" "$@"
fi
exec chroot "$ROOT" sh -c 'cd "$1" && shift && exec "$@"' - "$PWD" "$@"
