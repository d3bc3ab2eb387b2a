#!/usr/bin/env bash
# Installs what the project needs from the system and PyPI, once: QEMU, the kernel source and
# build tools for our guest kernel, image-building tools for the tests, and uv.
# Fast when everything is there already (it only checks).
set -euo pipefail

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# QEMU comes from bookworm-backports: it must match the qemu-utils these machines ship.
backports_pkgs=(qemu-system-x86 qemu-utils)
# docker-registry and skopeo: the tests' local OCI registry on 127.0.0.1 and pushing to it;
# apache2-utils and openssl: htpasswd and token signing for the registry auth tests.
pkgs=(linux-source-6.12 flex bison bc libelf-dev libssl-dev busybox-static debootstrap cpio
      e2fsprogs xz-utils util-linux binutils make docker-registry skopeo apache2-utils openssl)
# Box networking (passt), and the network tests' second machine (ip netns).
pkgs+=(passt iproute2)
# The llm-sandbox baseline of benchmarks/bench_tools.py runs in bubblewrap.
pkgs+=(bubblewrap)

missing=()
for p in "${backports_pkgs[@]}" "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing system packages: ${missing[*]}"
  if . /etc/os-release && [ "${VERSION_CODENAME:-}" = bookworm ] \
     && ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
    # The backports suite lives on the archive this machine already uses: take its URI from the
    # existing sources (one-line or deb822 format) rather than naming a host here.
    # deb822 stanzas count only when their Suites list bookworm itself (not -security,
    # not a third-party repository's suite).
    mirror=$( { grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
                  | grep -E ' bookworm( |$)' | awk '{print $2}'
                awk 'BEGIN { RS = "" }
                     /(^|\n)Suites:[^\n]*[ \t]bookworm([ \t]|\n|$)/ {
                       if (match($0, /(^|\n)URIs:[ \t]*[^ \t\n]+/)) {
                         u = substr($0, RSTART, RLENGTH); sub(/^\n?URIs:[ \t]*/, "", u); print u
                       }
                     }' /etc/apt/sources.list.d/*.sources 2>/dev/null ; } | head -n 1)
    if [ -z "$mirror" ]; then
      echo "no Debian archive found in /etc/apt/sources.list*: add bookworm-backports by hand" >&2
      exit 1
    fi
    echo "deb $mirror bookworm-backports main" | sudo_if_needed tee /etc/apt/sources.list.d/boxlite-backports.list >/dev/null
  fi
  export DEBIAN_FRONTEND=noninteractive
  sudo_if_needed apt-get update -qq
  if [ "${VERSION_CODENAME:-}" = bookworm ]; then
    sudo_if_needed apt-get install -y -qq --no-install-recommends -t bookworm-backports "${backports_pkgs[@]}"
  else
    sudo_if_needed apt-get install -y -qq --no-install-recommends "${backports_pkgs[@]}"
  fi
  sudo_if_needed apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
  # The tests start their own registries on free ports; the package's system service is not ours.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet docker-registry 2>/dev/null; then
    sudo_if_needed systemctl disable --now docker-registry >/dev/null 2>&1 || true
  fi
fi

if ! command -v uv >/dev/null 2>&1; then
  echo "installing uv"
  python3 -m pip install --quiet uv
fi
