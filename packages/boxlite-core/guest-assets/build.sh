#!/usr/bin/env bash
# Builds the guest files shipped inside the boxlite wheel:
#   python/boxlite/_guest/vmlinux         our kernel (cached by guest-assets/kernel/build.sh)
#   python/boxlite/_guest/initramfs.cpio  the static guest agent as /init
# Cargo caches the agent build; the archive is rebuilt only when the agent changed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
core=$(dirname "$here")
out="$core/python/boxlite/_guest"
mkdir -p "$out"

# Kernel: built once per config/source version, then copied from the cache.
kernel=$("$here/kernel/build.sh" | tail -n 1)
if ! cmp -s "$kernel" "$out/vmlinux"; then
  cp "$kernel" "$out/vmlinux.tmp" && mv "$out/vmlinux.tmp" "$out/vmlinux"
fi

# Agent: a static glibc binary (the musl target cannot be installed here). Its own target dir,
# because its RUSTFLAGS differ from the host build's and would otherwise invalidate it.
target=x86_64-unknown-linux-gnu
export CARGO_TARGET_DIR="$core/target/guest"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --release --locked \
  --manifest-path "$core/Cargo.toml" -p boxlite-guest --target "$target"
agent="$CARGO_TARGET_DIR/$target/release/boxlite-guest"
if ! file_out=$(LC_ALL=C readelf -d "$agent" 2>/dev/null) || grep -q NEEDED <<<"$file_out"; then
  echo "guest agent is not statically linked" >&2
  exit 1
fi

if [ ! -f "$out/initramfs.cpio" ] || [ "$agent" -nt "$out/initramfs.cpio" ] || [ "$0" -nt "$out/initramfs.cpio" ]; then
  stage=$(mktemp -d)
  trap 'rm -rf "$stage"' EXIT
  mkdir -p "$stage"/{dev,proc,sys,rootfs}
  install -m 0755 "$agent" "$stage/init"
  strip "$stage/init"
  # Fixed timestamps and order: the same agent gives the same archive.
  find "$stage" -exec touch -h -d @0 {} +
  (cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 --reproducible) > "$out/initramfs.cpio.tmp"
  mv "$out/initramfs.cpio.tmp" "$out/initramfs.cpio"
fi
echo "$out"
