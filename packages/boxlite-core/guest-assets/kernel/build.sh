#!/usr/bin/env bash
# Builds the BoxLite guest kernel (x86_64 vmlinux with a PVH entry point) from the
# Debian linux-source-6.12 tarball: `make tinyconfig` + boxlite.config + olddefconfig.
#
# usage: build.sh [DEST_FILE]
#
# The result is cached under
#   ${BOXLITE_BUILD_CACHE:-$HOME/.cache/boxlite-build}/kernel/<key>/{vmlinux,config,build.log}
# where <key> is a sha256 over the fragment, this script and the linux-source package
# version, so editing either file (or upgrading the package) triggers a rebuild.
# With DEST_FILE the vmlinux is also copied there. The last line of stdout is the path
# of the cached vmlinux; progress goes to stderr, make's output to the log file.
set -euo pipefail

readonly SOURCE_PACKAGE=linux-source-6.12
readonly TARBALL=/usr/src/linux-source-6.12.tar.xz
readonly KARCH=x86_64

SELF=$(readlink -f -- "${BASH_SOURCE[0]}")
FRAGMENT=$(dirname -- "$SELF")/boxlite.config
readonly SELF FRAGMENT

say() { printf 'build.sh: %s\n' "$*" >&2; }
die() { printf 'build.sh: error: %s\n' "$*" >&2; exit 1; }

usage() { printf 'usage: %s [DEST_FILE]\n' "$0" >&2; exit 2; }
case "${1:-}" in -h|--help) usage ;; esac
[[ $# -le 1 ]] || usage
dest=${1:-}

# --- Preflight ----------------------------------------------------------------
[[ $(uname -m) == "$KARCH" ]] || die "this builds an $KARCH kernel natively; host is $(uname -m)"
[[ -f $FRAGMENT ]] || die "missing fragment $FRAGMENT"
command -v dpkg-query >/dev/null || die "dpkg-query not found (a Debian-based host is required)"
version=$(dpkg-query -W -f='${Version}' "$SOURCE_PACKAGE" 2>/dev/null) || true
[[ -n $version ]] || die "package $SOURCE_PACKAGE is not installed (apt-get install $SOURCE_PACKAGE)"
[[ -r $TARBALL ]] || die "$TARBALL not readable (reinstall $SOURCE_PACKAGE)"

# --- Cache key ------------------------------------------------------------------------
fragment_sum=$(sha256sum <"$FRAGMENT" | cut -d' ' -f1)
script_sum=$(sha256sum <"$SELF" | cut -d' ' -f1)
key=$(printf 'fragment %s\nscript %s\n%s %s\n' "$fragment_sum" "$script_sum" "$SOURCE_PACKAGE" "$version" |
    sha256sum | cut -d' ' -f1)
cache_root=${BOXLITE_BUILD_CACHE:-${HOME:?HOME is not set}/.cache/boxlite-build}/kernel
out=$cache_root/$key

copy_to_dest() {
    [[ -n $dest ]] || return 0
    local dir tmp
    dir=$(dirname -- "$dest")
    mkdir -p -- "$dir"
    tmp=$(mktemp "$dir/.vmlinux.XXXXXX")
    cp -- "$out/vmlinux" "$tmp"
    chmod 0644 "$tmp"
    mv -f -- "$tmp" "$dest"
    say "copied to $dest"
}

finish() {
    copy_to_dest
    printf '%s\n' "$out/vmlinux"
    exit 0
}

if [[ -f $out/vmlinux ]]; then
    say "cached: $out"
    finish
fi

# --- Build ----------------------------------------------------------------------------------
for tool in make gcc ld flex bison bc tar xz perl strip objcopy readelf sha256sum flock; do
    command -v "$tool" >/dev/null || die "missing build tool: $tool"
done
umask 022
mkdir -p "$cache_root"

# One build per key at a time; a second caller waits and then reuses the result.
exec 9>"$cache_root/.$key.lock"
if ! flock -n 9; then
    say "another build of $key is running; waiting for it"
    flock 9
fi
if [[ -f $out/vmlinux ]]; then
    say "cached (built concurrently): $out"
    finish
fi

work=$(mktemp -d "$cache_root/.build-$key.XXXXXX")
log=$work/build.log
failed_log=$cache_root/$key.failed.log
trap 'rm -rf -- "$work"' EXIT
trap 'exit 130' INT TERM HUP

fail() {
    say "FAILED: $*"
    if [[ -f $log ]]; then
        cp -f -- "$log" "$failed_log" || true
        printf '%s\n' "----- last 60 lines of the build log ($failed_log) -----" >&2
        tail -n 60 -- "$log" >&2 || true
        printf '%s\n' "-----" >&2
    fi
    exit 1
}

# Make the build independent of the caller's environment (parent make jobservers,
# cross-compilation settings, out-of-tree output dirs, LOCALVERSION, ...).
unset MAKEFLAGS MFLAGS MAKELEVEL MAKEOVERRIDES GNUMAKEFLAGS O KBUILD_OUTPUT KCONFIG_CONFIG \
    ARCH SUBARCH CROSS_COMPILE CC LD KCFLAGS KCPPFLAGS KAFLAGS KBUILD_EXTMOD INSTALL_PATH
export LOCALVERSION=""         # set (even empty): no "+" scm suffix in the release string
export KBUILD_BUILD_USER=boxlite KBUILD_BUILD_HOST=boxlite
export LC_ALL=C

jobs=$(nproc 2>/dev/null || echo 2)
src=$work/src
kmake() { make -C "$src" ARCH="$KARCH" "$@" >>"$log" 2>&1; }

say "building kernel $key ($SOURCE_PACKAGE $version, $jobs jobs); log: $log"
: >"$log"
mkdir -p "$src"
say "extracting $TARBALL"
tar -xf "$TARBALL" -C "$src" --strip-components=1 --no-same-owner >>"$log" 2>&1 || fail "extracting $TARBALL"

kmake tinyconfig || fail "make tinyconfig"
(cd "$src" && scripts/kconfig/merge_config.sh -m .config "$FRAGMENT") >>"$log" 2>&1 || fail "merging $FRAGMENT"
kmake olddefconfig || fail "make olddefconfig"

# Every option the fragment sets must survive olddefconfig: an option whose dependencies
# are not met is silently dropped by Kconfig, which is exactly what this catches.
missing=()
while IFS= read -r line || [[ -n $line ]]; do
    line=${line%$'\r'}
    if [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
        opt=${BASH_REMATCH[1]}
        want=${BASH_REMATCH[2]}
        got=$(grep -m1 -E "^$opt=" "$src/.config" | cut -d= -f2- || true)
        if [[ $got != "$want" ]]; then
            missing+=("$opt: wanted $want, got ${got:-<not set>}")
        fi
    elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
        opt=${BASH_REMATCH[1]}
        if got=$(grep -m1 -E "^$opt=" "$src/.config"); then
            missing+=("$opt: wanted not set, got ${got#*=}")
        fi
    fi
done <"$FRAGMENT"
if ((${#missing[@]})); then
    say "these options of $(basename "$FRAGMENT") did not stick after olddefconfig" \
        "(unmet dependencies or a renamed/removed option):"
    printf '    %s\n' "${missing[@]}" >&2
    cp -f -- "$src/.config" "$cache_root/$key.failed.config" || true
    say "resulting config kept at $cache_root/$key.failed.config"
    fail "config verification"
fi
say "config verified ($(grep -c '=y$' "$src/.config") options =y)"

say "compiling vmlinux (several minutes)"
kmake -j"$jobs" vmlinux || fail "make vmlinux"

# QEMU boots the ELF vmlinux through its PVH entry, an ELF note
# (XEN_ELFNOTE_PHYS32_ENTRY, type 0x12, owner "Xen") in a PT_NOTE segment.
has_pvh_note() { readelf -W -n "$1" 2>/dev/null | grep -E '^[[:space:]]*Xen[[:space:]]' | grep -qiE '0x0*12\b|PHYS32_ENTRY'; }
result=$work/result
mkdir -p "$result"
has_pvh_note "$src/vmlinux" || fail "vmlinux has no PVH entry note (is CONFIG_PVH set?)"
strip -o "$result/vmlinux" "$src/vmlinux" >>"$log" 2>&1 || true
if ! has_pvh_note "$result/vmlinux"; then
    say "strip dropped the PVH note; using objcopy --strip-debug"
    objcopy --strip-debug "$src/vmlinux" "$result/vmlinux" >>"$log" 2>&1 || fail "objcopy --strip-debug"
    has_pvh_note "$result/vmlinux" || cp -f -- "$src/vmlinux" "$result/vmlinux"
fi
chmod 0644 "$result/vmlinux"
cp -- "$src/.config" "$result/config"
printf '%s\n' "$(make -s -C "$src" ARCH="$KARCH" kernelrelease 2>/dev/null)" >"$result/kernelrelease"
say "vmlinux: $(stat -c %s "$result/vmlinux") bytes, release $(cat "$result/kernelrelease")"
mv -- "$log" "$result/build.log"
log=$result/build.log

# Publish atomically. rename(2) onto an existing non-empty directory fails (mv -T), in
# which case somebody else published the same key first; theirs is as good as ours.
if ! mv -T -- "$result" "$out" 2>/dev/null; then
    [[ -f $out/vmlinux ]] || fail "could not move the build to $out"
fi
rm -f -- "$failed_log" "$cache_root/$key.failed.config"
say "built: $out"
finish
