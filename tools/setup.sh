#!/usr/bin/env bash
# Prepare a fresh Debian/Ubuntu machine (as root) to build and run easel:
# a Rust toolchain, and a Vulkan driver if wgpu would find no adapter.
# Mesa's lavapipe (in mesa-vulkan-drivers) is a software Vulkan driver, so
# easel runs on machines without a GPU.
set -euo pipefail

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v curl >/dev/null 2>&1 || need_apt+=(curl ca-certificates)
pkg-config --version >/dev/null 2>&1 || need_apt+=(pkg-config)
# A Vulkan ICD manifest is what the loader looks for; without one there is no adapter.
if ! ls /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json >/dev/null 2>&1; then
  need_apt+=(mesa-vulkan-drivers libvulkan1)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] || curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
  echo "setup: Rust installed in ~/.cargo/bin; run: . ~/.cargo/env" >&2
fi
