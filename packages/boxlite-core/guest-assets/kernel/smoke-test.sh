#!/usr/bin/env bash
# Boots a BoxLite guest kernel under QEMU/TCG on the microvm machine with a tiny busybox
# initramfs and checks what the guest agent relies on.
#
# usage: smoke-test.sh VMLINUX
#
# Checks (any failure makes the script exit non-zero):
#   - the marker line `BOXLITE-KERNEL-OK <release>` reaches the serial console;
#   - /dev/vda (virtio-blk over virtio-mmio) appears and mounts as ext4 (read + write);
#   - the virtio-serial port appears under /sys/class/virtio-ports and as /dev/vportNpM,
#     with its name, and bytes written to it reach the host;
#   - cgroup2 mounts on /sys/fs/cgroup with memory, pids and cpu in cgroup.controllers,
#     and a child cgroup takes memory.max/pids.max/cpu.max limits and has cgroup.kill;
#   - devpts, tmpfs (/dev/shm), overlayfs, /proc/sys, namespaces (unshare), seccomp,
#     the RTC, the online CPU count, 127.0.0.1 on the loopback interface;
#   - QEMU exits by itself (guest reboot with -no-reboot), within SMOKE_TIMEOUT seconds.
#
# Environment (all optional):
#   SMOKE_BOOTS=N          boot N times (default 1) and report the median time to the marker
#   SMOKE_APPEND="..."     extra kernel command-line words (e.g. "quiet")
#   SMOKE_SMP=N            vCPUs (default 1); SMOKE_MEM=SIZE guest memory (default 256M)
#   SMOKE_TSC_KHZ=N        host TSC frequency for tsc_early_khz= (default: from the host)
#   SMOKE_TIMEOUT=S        per-boot limit in seconds (default and maximum 60)
#   SMOKE_VERBOSE=1        print the guest console of every boot
#   QEMU=path, BUSYBOX=path
set -euo pipefail

die() { printf 'smoke-test: error: %s\n' "$*" >&2; exit 2; }
[[ $# -eq 1 ]] || die "usage: $0 VMLINUX"
kernel=$(readlink -f -- "$1") || die "no such file: $1"
[[ -f $kernel ]] || die "no such file: $1"

qemu=${QEMU:-$(command -v qemu-system-x86_64 || true)}
busybox=${BUSYBOX:-$(command -v busybox || true)}
[[ -x $qemu ]] || die "qemu-system-x86_64 not found (set QEMU=)"
[[ -x $busybox ]] || die "busybox not found (install busybox-static or set BUSYBOX=)"
if readelf -l "$busybox" 2>/dev/null | grep -q 'Requesting program interpreter'; then
    die "$busybox is dynamically linked; a static busybox (busybox-static) is needed"
fi
for tool in cpio mkfs.ext4 timeout; do
    command -v "$tool" >/dev/null || die "missing tool: $tool"
done

boots=${SMOKE_BOOTS:-1}
smp=${SMOKE_SMP:-1}
mem=${SMOKE_MEM:-256M}
limit=${SMOKE_TIMEOUT:-60}
((limit >= 1 && limit <= 60)) || limit=60

# Host TSC frequency (kHz, rounded to 1 MHz like the engine does): under TCG the guest
# TSC runs at the host's rate and calibrating it against the emulated PIT is unreliable.
tsc_khz() {
    local mhz
    if [[ -n ${SMOKE_TSC_KHZ:-} ]]; then
        echo "$SMOKE_TSC_KHZ"
        return
    fi
    mhz=$(dmesg 2>/dev/null | sed -n -E 's/.*tsc: Refined TSC clocksource calibration: ([0-9.]+) MHz.*/\1/p' | tail -n1)
    [[ -n $mhz ]] || mhz=$(dmesg 2>/dev/null | sed -n -E 's/.*tsc: Detected ([0-9.]+) MHz processor.*/\1/p' | tail -n1)
    [[ -n $mhz ]] || mhz=$(sed -n -E 's/^cpu MHz[[:space:]]*: ([0-9.]+).*/\1/p' /proc/cpuinfo | head -n1)
    [[ -n $mhz ]] && awk -v m="$mhz" 'BEGIN { printf "%d\n", int(m + 0.5) * 1000 }'
}
khz=$(tsc_khz || true)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/boxlite-smoke.XXXXXX")
cleanup() { rm -rf -- "$tmp"; }
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# --- Disk image: a small ext4 file system with a known file ---------------------------
token="boxlite-disk-$$-$RANDOM"
mkdir -p "$tmp/disk"
printf '%s\n' "$token" >"$tmp/disk/token"
mkfs.ext4 -q -F -L boxlite-smoke -d "$tmp/disk" "$tmp/disk.img" 16M >/dev/null 2>&1 ||
    die "mkfs.ext4 -d failed (e2fsprogs >= 1.43 needed)"

# --- initramfs ---------------------------------------------------------------------------
root=$tmp/initramfs
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,mnt,tmp,run,etc}
cp -- "$busybox" "$root/bin/busybox"
chmod 0755 "$root/bin/busybox"
cat >"$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t devtmpfs -o mode=0755 devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
echo "BOXLITE-KERNEL-OK $(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime)"

pass() { echo "BOXLITE-CHECK $1 ok${2:+ ($2)}"; }
fail() { echo "BOXLITE-CHECK $1 FAIL${2:+ ($2)}"; }
arg() { for w in $(cat /proc/cmdline); do case $w in "$1"=*) echo "${w#*=}" ;; esac; done; }

# virtio-blk: /dev/vda, ext4, read and write.
i=0; while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
if [ ! -b /dev/vda ]; then
    fail vda "no /dev/vda"
elif ! mount -t ext4 /dev/vda /mnt; then
    fail vda "mount -t ext4 /dev/vda failed"
elif [ "$(cat /mnt/token)" != "$(arg smoke.token)" ]; then
    fail vda "token mismatch"
elif ! { echo written >/mnt/written && sync && [ "$(cat /mnt/written)" = written ]; }; then
    fail vda "write failed"
else
    umount /mnt && pass vda "ext4 read/write"
fi

# virtio-serial port: sysfs entry with its name, device node, and data to the host.
port=
for p in /sys/class/virtio-ports/vport*; do
    [ -e "$p/name" ] && [ "$(cat "$p/name")" = smoke.port ] && port=${p##*/}
done
if [ -z "$port" ]; then
    fail vport "no port named smoke.port under /sys/class/virtio-ports ($(ls /sys/class/virtio-ports 2>&1))"
elif [ ! -c "/dev/$port" ]; then
    fail vport "no character device /dev/$port"
elif ! echo "PORT-OK $(arg smoke.token)" >"/dev/$port"; then
    fail vport "write to /dev/$port failed"
else
    pass vport "/dev/$port"
fi

# cgroup v2 with the memory, pids and cpu controllers, limits, cgroup.kill.
if ! mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup; then
    fail cgroup2 "mount failed"
else
    ctrl=$(cat /sys/fs/cgroup/cgroup.controllers)
    missing=
    for c in memory pids cpu; do
        case " $ctrl " in *" $c "*) ;; *) missing="$missing $c" ;; esac
    done
    if [ -n "$missing" ]; then
        fail cgroup2 "controllers: '$ctrl', missing:$missing"
    elif ! echo "+memory +pids +cpu" >/sys/fs/cgroup/cgroup.subtree_control ||
         ! mkdir /sys/fs/cgroup/t ||
         ! echo 64M >/sys/fs/cgroup/t/memory.max ||
         ! echo 32 >/sys/fs/cgroup/t/pids.max ||
         ! echo "50000 100000" >/sys/fs/cgroup/t/cpu.max ||
         [ ! -e /sys/fs/cgroup/t/cgroup.kill ]; then
        fail cgroup2 "child cgroup limits (controllers: $ctrl)"
    else
        rmdir /sys/fs/cgroup/t
        pass cgroup2 "$ctrl"
    fi
fi

# The rest of what a Debian userland in a container expects.
mkdir -p /dev/pts /dev/shm
if mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts && [ -c /dev/pts/ptmx ]; then
    pass devpts; else fail devpts; fi
if mount -t tmpfs -o mode=1777 tmpfs /dev/shm && echo x >/dev/shm/x; then
    pass tmpfs; else fail tmpfs; fi
if mount -t tmpfs tmpfs /run && mkdir -p /run/l /run/u /run/w /run/m && echo low >/run/l/f &&
   mount -t overlay overlay -o lowerdir=/run/l,upperdir=/run/u,workdir=/run/w /run/m &&
   [ "$(cat /run/m/f)" = low ]; then
    pass overlay; else fail overlay; fi
if [ -e /proc/sys/kernel/pid_max ] && [ -e /proc/sys/fs/file-max ]; then
    pass sysctl; else fail sysctl; fi
if unshare -m -u -i -n -p -f -U -r sh -c 'hostname ns-test && [ "$(hostname)" = ns-test ]'; then
    pass namespaces "mnt uts ipc net pid user"; else fail namespaces; fi
if grep -q '^Seccomp_filters:' /proc/self/status; then
    pass seccomp; else fail seccomp "no Seccomp_filters in /proc/self/status"; fi
fs=$(cat /proc/filesystems)
missing=
for f in ext4 overlay tmpfs devpts cgroup2 9p proc sysfs; do
    echo "$fs" | grep -qw "$f" || missing="$missing $f"
done
if [ -z "$missing" ]; then pass filesystems; else fail filesystems "missing:$missing"; fi
if [ -e /sys/class/rtc/rtc0 ] && [ "$(date +%Y)" -ge 2024 ]; then
    pass rtc "$(date -u +%FT%TZ)"; else fail rtc "$(ls /sys/class/rtc 2>&1); date $(date)"; fi
want_cpus=$(arg smoke.cpus)
cpus=$(grep -c '^processor' /proc/cpuinfo)
if [ "$cpus" = "$want_cpus" ]; then pass cpus "$cpus"; else fail cpus "$cpus online, wanted $want_cpus"; fi
if ip link set lo up && ip addr show lo | grep -q 127.0.0.1; then
    pass loopback; else fail loopback; fi
echo "BOXLITE-CHECKS-DONE uptime=$(cut -d' ' -f1 /proc/uptime)"
reboot -f
sleep 5
echo "BOXLITE-REBOOT-FAILED"
EOF
chmod 0755 "$root/init"
(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --owner 0:0 --quiet) >"$tmp/test.cpio" ||
    die "cpio failed"

append="console=ttyS0 reboot=t panic=-1"
[[ -n $khz ]] && append+=" tsc_early_khz=$khz"
[[ -n ${SMOKE_APPEND:-} ]] && append+=" $SMOKE_APPEND"
append+=" smoke.token=$token smoke.cpus=$smp"

required_checks=(vda vport cgroup2 devpts tmpfs overlay sysctl namespaces seccomp filesystems rtc cpus loopback)

# One boot; prints "<ms to marker> <ms to QEMU exit>" on success.
boot() {
    local n=$1 out=$tmp/boot$1 start line now marker_ms='' status ok=1 c
    mkdir -p "$out"
    : >"$out/port"
    start=$EPOCHREALTIME
    set +e
    timeout -k 5 "$limit" "$qemu" \
        -M microvm,acpi=off -accel tcg -m "$mem" -smp "$smp" \
        -nodefaults -no-user-config -nographic -no-reboot \
        -kernel "$kernel" -initrd "$tmp/test.cpio" -append "$append" \
        -serial stdio \
        -chardev "file,id=port,path=$out/port" \
        -device virtio-serial-device,max_ports=2 \
        -device virtserialport,chardev=port,name=smoke.port \
        -drive "id=d0,if=none,format=raw,file=$tmp/disk.img" \
        -device virtio-blk-device,drive=d0 \
        </dev/null 2>"$out/qemu.err" |
        while IFS= read -r line || [[ -n $line ]]; do
            line=${line%$'\r'}
            printf '%s\n' "$line" >>"$out/console"
            if [[ ! -e $out/marker_ms && $line == *BOXLITE-KERNEL-OK* ]]; then
                now=$EPOCHREALTIME
                echo $(((${now//[!0-9]/} - ${start//[!0-9]/}) / 1000)) >"$out/marker_ms"
            fi
        done
    status=${PIPESTATUS[0]}
    set -e
    now=$EPOCHREALTIME
    local exit_ms=$(((${now//[!0-9]/} - ${start//[!0-9]/}) / 1000))

    if [[ -n ${SMOKE_VERBOSE:-} ]]; then
        sed 's/^/  | /' "$out/console" >&2
    fi
    if [[ ! -s $out/marker_ms ]]; then
        echo "boot $n: FAIL: marker BOXLITE-KERNEL-OK never printed" >&2
        ok=0
    else
        marker_ms=$(cat "$out/marker_ms")
    fi
    for c in "${required_checks[@]}"; do
        if ! grep -q "^BOXLITE-CHECK $c ok" "$out/console"; then
            echo "boot $n: FAIL: check $c: $(grep "^BOXLITE-CHECK $c " "$out/console" || echo 'no result')" >&2
            ok=0
        fi
    done
    if ! grep -q "^PORT-OK $token\$" "$out/port"; then
        echo "boot $n: FAIL: nothing arrived on the host side of the virtio-serial port" >&2
        ok=0
    fi
    if ((status == 124 || status == 137)); then
        echo "boot $n: FAIL: QEMU did not exit by itself within ${limit}s (killed)" >&2
        ok=0
    elif ((status != 0)); then
        echo "boot $n: FAIL: QEMU exited with status $status: $(tail -n 5 "$out/qemu.err")" >&2
        ok=0
    fi
    if ((!ok)); then
        echo "----- guest console (boot $n, last 60 lines) -----" >&2
        tail -n 60 "$out/console" >&2 || true
        echo "-----" >&2
        return 1
    fi
    echo "$marker_ms $exit_ms"
}

echo "kernel:  $kernel ($(stat -c %s "$kernel") bytes)"
echo "append:  $append"
echo "qemu:    $("$qemu" --version | head -n1), -smp $smp -m $mem, TCG"
marker_times=()
failed=0
for ((n = 1; n <= boots; n++)); do
    if result=$(boot "$n"); then
        read -r marker_ms exit_ms <<<"$result"
        marker_times+=("$marker_ms")
        echo "boot $n: ok: marker after ${marker_ms} ms, QEMU exited after ${exit_ms} ms"
        if ((n == 1)); then
            grep -E '^BOXLITE-(KERNEL-OK|CHECK)' "$tmp/boot1/console" | sed 's/^/  /'
        fi
    else
        failed=1
    fi
done
if ((${#marker_times[@]})); then
    median=$(printf '%s\n' "${marker_times[@]}" | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : int((a[NR / 2] + a[NR / 2 + 1]) / 2) }')
    echo "time to marker over ${#marker_times[@]} boot(s): median ${median} ms (all: ${marker_times[*]})"
fi
if ((failed)); then
    echo "SMOKE TEST FAILED" >&2
    exit 1
fi
echo "SMOKE TEST PASSED"
