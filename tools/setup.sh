#!/usr/bin/env bash
# Prepare a Debian/Ubuntu machine to build and run easel: a C linker, a Vulkan
# loader and driver if there is none, and a Rust toolchain (>= 1.87, with
# rustfmt and clippy); then build easel (release) and link it into /usr/local/bin,
# so `easel "red apple"` works from any folder (the default model is built into
# the executable). Safe to run again: it only installs what is missing, and the
# build is cargo's incremental one.
#
# Mesa's lavapipe (in mesa-vulkan-drivers) is a software Vulkan driver, so easel
# runs on machines without a GPU. Run as root, or as a user with sudo.
#
# EASEL_MESA=backports (Debian 12 only): lavapipe from bookworm-backports (Mesa 25,
# Debian's own build), installed or upgraded. Debian 12's Mesa 22.3 runs a storage load
# in a loop over the SIMD lanes; Mesa 25 draws the README's apple in 17 s instead of 37 s
# once its shaders are compiled, but compiles them slower (57 s instead of 47 s for a
# first run, and the test suite takes three times as long), so it is not the default
# (docs/benchmarks.md, "Which Mesa").
set -euo pipefail

MIN_RUST=1.87
caller_path=$PATH

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "setup: run as root (or install sudo)" >&2; exit 1; }
  sudo=sudo
fi

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
# wgpu loads libvulkan.so.1 at run time; the loader then reads the ICD manifests
# (a driver's manifest, e.g. lavapipe's lvp_icd.x86_64.json, in either folder).
# (Captured, not piped into `grep -q`: with pipefail, grep's early exit fails the pipe.)
libs=$(ldconfig -p 2>/dev/null || true)
[[ $libs == *libvulkan.so.1* ]] || need_apt+=(libvulkan1)
icd_manifests() { find /usr/share/vulkan/icd.d /etc/vulkan/icd.d -name '*.json' 2>/dev/null || true; }
mesa_version() { dpkg-query -W -f '${Version}' mesa-vulkan-drivers 2>/dev/null || true; }
icds=$(icd_manifests)
os_codename=$( (. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}") || true)
backports=""
if [ "${EASEL_MESA:-}" = backports ]; then
  [ "$os_codename" = bookworm ] || { echo "setup: EASEL_MESA=backports is for Debian 12" >&2; exit 1; }
  [[ $(mesa_version) == 2[5-9].* ]] || backports=bookworm-backports
elif [ -z "$icds" ]; then
  need_apt+=(mesa-vulkan-drivers)
fi
if ! command -v cargo >/dev/null 2>&1 && ! [ -x "$HOME/.cargo/bin/cargo" ]; then
  command -v curl >/dev/null 2>&1 || need_apt+=(curl ca-certificates)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need_apt[*]}" >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
if [ -n "$backports" ]; then
  echo "setup: apt-get install -t $backports mesa-vulkan-drivers" >&2
  echo "deb http://deb.debian.org/debian $backports main" |
    $sudo tee "/etc/apt/sources.list.d/$backports.list" >/dev/null
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends -t "$backports" mesa-vulkan-drivers >/dev/null
  icds=$(icd_manifests)
elif [ "$os_codename" = bookworm ] && [[ $(mesa_version) == 22.* ]]; then
  echo "setup: lavapipe is Debian 12's Mesa 22; EASEL_MESA=backports bash tools/setup.sh" \
    "takes Mesa 25 from bookworm-backports (2.2x faster once compiled: see the top of this script)" >&2
fi

# Rust: rustup's stable toolchain when cargo is missing or older than MIN_RUST.
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"
rust_ok() {
  local v
  v=$(rustc --version 2>/dev/null | awk '{print $2}') || return 1
  [ -n "$v" ] && [ "$(printf '%s\n%s\n' "$MIN_RUST" "$v" | sort -V | head -n1)" = "$MIN_RUST" ]
}
if ! rust_ok; then
  if command -v rustup >/dev/null 2>&1; then
    rustup toolchain install stable --profile minimal -c rustfmt,clippy
    rustup default stable
  else
    echo "setup: installing Rust with rustup into ~/.cargo" >&2
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
    PATH="$HOME/.cargo/bin:$PATH"
  fi
fi
if command -v rustup >/dev/null 2>&1; then
  # CI runs `cargo fmt` and `cargo clippy`; add them if the toolchain lacks them.
  cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
  cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
fi

# `bash tools/setup.sh && cargo ...` runs cargo in the calling shell, whose PATH
# this script cannot change: link rustup's proxies into /usr/local/bin when that
# PATH would not find cargo (a fresh rustup install puts it in ~/.cargo/bin).
if ! PATH=$caller_path command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  for tool in cargo rustc rustup rustfmt cargo-fmt cargo-clippy clippy-driver; do
    if [ -x "$HOME/.cargo/bin/$tool" ]; then
      $sudo ln -sf "$HOME/.cargo/bin/$tool" "/usr/local/bin/$tool"
    fi
  done
  echo "setup: linked ~/.cargo/bin/{cargo,rustc,...} into /usr/local/bin" >&2
fi
echo "setup: $(cargo --version); Vulkan ICD manifests: $(echo "$icds" | xargs -n1 basename 2>/dev/null | xargs)" >&2

# easel itself: the release build that `cargo run --release` and `cargo test --release`
# reuse, linked (not copied) into /usr/local/bin so later builds update it. The
# executable is self-contained: copy target/release/easel to deploy it elsewhere.
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
cargo build --release
target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
easel_bin=${target:-$repo/target}/release/easel
if [ "$(readlink /usr/local/bin/easel 2>/dev/null || true)" != "$easel_bin" ]; then
  $sudo ln -sf "$easel_bin" /usr/local/bin/easel
fi
echo "setup: /usr/local/bin/easel -> $easel_bin" >&2
