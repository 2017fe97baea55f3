#!/usr/bin/env bash
# tests/vm/run.sh — run one command as root inside a throw-away qemu guest that
# boots a Debian distro kernel, where mmreplay's tier-2 probes (fentry/kprobes
# on down_read/up_write, tlb_gather_mmu, mm_take_all_locks) load even when the
# host refuses them (lockdown, no CONFIG_KPROBES, fentry EPERM).
#
#   tests/vm/run.sh [--timeout S] [--workdir DIR] [--rw DIR]... [--kernel-log FILE]
#                   [--lockup-panic] [-- COMMAND ARGS...]
#
# COMMAND defaults to `python3 -m replay doctor`; it runs in DIR (default: the
# checkout this script belongs to), which the guest sees at the same path.
#
# What it does (first use builds, later uses reuse the cache; idempotent):
#  * apt-get installs qemu-system-x86 and busybox-static if missing (nothing
#    else is installed on the host), downloads (never installs) Debian's
#    linux-image-<rel> (the one linux-image-amd64 depends on: BTF, kprobes) with
#    its linux-headers-<rel>, -common and linux-kbuild, unpacks them with
#    dpkg-deb -x into $MMR_GUEST_CACHE (default ~/.cache/mmreplay-guest/<rel>),
#    runs depmod there, and packs a busybox-static initramfs holding the
#    virtio/9p/overlay modules; MMR_GUEST_KERNEL=linux-image-X picks another;
#  * boots qemu-system-x86_64 under TCG (KVM cannot nest on the project's
#    hosts), 2 CPUs, 2 GiB. The host's / is shared read-only over 9p; the guest
#    root is an overlay: tmpfs (writes, lost at power-off) over the unpacked
#    kernel packages (so /lib/modules/<rel>/{build,source} and the headers bcc
#    needs resolve at their usual paths) over the host's /. /usr/bin/python3 +
#    bcc from /usr/lib/python3/dist-packages and any checkout or venv on the
#    host are therefore visible at the same paths. -cpu max gives the guest
#    AVX2 (polars wheels) and AMD SVM: init loads kvm_amd, so /dev/kvm exists;
#  * runs COMMAND as root in DIR with the caller's PATH, PYTHONPATH,
#    VIRTUAL_ENV and MMR*_ variables (so `python3` is the same), stdin /dev/null, on the guest's first serial
#    port, streams its output, and exits with COMMAND's status: 124 on timeout
#    (default 1800 s), 125 when the guest could not be built or booted or died
#    before COMMAND finished, 2 on bad usage or a missing prerequisite (no
#    qemu, no kernel package); a one-line reason on stderr.
#  * the kernel's console is the second serial port, at full verbosity
#    (ignore_loglevel, all-CPU backtraces on a soft lockup), kept apart from
#    COMMAND's output: --kernel-log FILE saves it; when the guest hangs or dies
#    the reason line quotes its first BUG/panic line. --lockup-panic turns a
#    soft lockup into a panic (the guest stops at once, exit 125) instead of
#    waiting for the timeout. --rw DIR shares host directory DIR read-write at
#    the same path (e.g. to keep a recording). MMR_GUEST_DEBUG=1 also copies
#    the kernel console to stderr;
#  * qemu runs single-threaded TCG (-accel tcg,thread=single): multi-threaded
#    TCG livelocks on kernel text the other vCPU patched (docs/RECORDING.md,
#    "Soft lockups"). For experiments: MMR_GUEST_ACCEL (e.g. tcg for MTTCG),
#    MMR_GUEST_APPEND (more kernel arguments, e.g. nokaslr), MMR_GUEST_QEMU_ARGS
#    (more qemu arguments, e.g. -monitor unix:SOCK,server,nowait).
#
# Measured (2-CPU Debian 12 host, qemu 7.2 TCG, linux-image-6.1.0-57-amd64):
# see docs/RECORDING.md, "testing tier 2 when your host refuses it".
# Emulated time is not hardware time: use guest traces for structure and
# counts, never as cost figures.
#
# Pitfalls met building it: Debian's image package has no modules.dep (run
# depmod -b on the unpacked tree); virtio_pci is a module, so load virtio,
# virtio_ring, virtio_pci_legacy_dev, virtio_pci_modern_dev, virtio_pci,
# 9pnet, 9pnet_virtio, fscache, netfs, 9p, overlay in that order; -cpu max
# gives AVX2 (polars wheels need it) and SVM (kvm_amd, for KVM workloads);
# on merged-/usr hosts a real lib/ in an overlay layer hides the host's /lib,
# so move the packages' lib/ under usr/lib; overlayfs refuses a lower layer
# nested inside another; the init is baked into the cached initramfs (stamp
# the cache with its hash); timeout(1) leaves qemu in its own process group
# (use -pidfile and kill it on exit).
set -u -o pipefail

die() { echo "tests/vm/run.sh: $2" >&2; exit "$1"; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
timeout_s=1800 workdir=$(cd "$here/../.." && pwd -P) rw_dirs=() klog_out="" lockup_panic=0
while (($#)); do
    case $1 in
        --timeout) [[ ${2-} =~ ^[0-9]+$ ]] || die 2 "--timeout needs seconds"; timeout_s=$2; shift 2 ;;
        --workdir) [[ -n ${2-} ]] || die 2 "--workdir needs a directory"; workdir=$2; shift 2 ;;
        --rw) [[ -d ${2-} ]] || die 2 "--rw needs an existing directory"; rw_dirs+=("$(cd "$2" && pwd -P)"); shift 2 ;;
        --kernel-log) [[ -n ${2-} ]] || die 2 "--kernel-log needs a file"; klog_out=$2; shift 2 ;;
        --lockup-panic) lockup_panic=1; shift ;;
        --) shift; break ;;
        -h|--help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die 2 "unknown option '$1' (usage: tests/vm/run.sh [--timeout S] [--workdir DIR] [--rw DIR] [--kernel-log FILE] [--lockup-panic] [-- COMMAND ...])" ;;
    esac
done
(($#)) || set -- python3 -m replay doctor
accel=${MMR_GUEST_ACCEL:-tcg,thread=single}
[[ $accel =~ ^[a-z]+(,[a-z0-9_-]+=[a-z0-9_-]+)*$ ]] || die 2 "MMR_GUEST_ACCEL='$accel' is not a qemu -accel value (e.g. tcg,thread=single)"
wd=$(cd "$workdir" 2>/dev/null && pwd -P) || die 2 "workdir '$workdir' is not a directory"
workdir=$wd

# ---------------------------------------------------------------- host tools
apt_updated=0
apt_get() {  # apt-get, with one 'apt-get update' if the package lists are stale
    ((EUID == 0)) || return 1
    DEBIAN_FRONTEND=noninteractive apt-get -q -o APT::Sandbox::User=root "$@" >/dev/null 2>&1 && return 0
    ((apt_updated)) && return 1
    apt_updated=1; apt-get -q update >/dev/null 2>&1 || return 1
    DEBIAN_FRONTEND=noninteractive apt-get -q -o APT::Sandbox::User=root "$@" >/dev/null 2>&1
}
need_pkgs=()
command -v qemu-system-x86_64 >/dev/null || need_pkgs+=(qemu-system-x86)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || need_pkgs+=(busybox-static)
if ((${#need_pkgs[@]})); then
    apt_get install -y --no-install-recommends "${need_pkgs[@]}" \
        || die 2 "cannot install ${need_pkgs[*]} (need root and the Debian mirror)"
fi

# ---------------------------------------------------------------- guest cache
kpkg=${MMR_GUEST_KERNEL:-}
if [[ -z $kpkg ]]; then
    kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    [[ -n $kpkg ]] || { apt_get update; kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'); }
fi
[[ $kpkg == linux-image-* ]] || die 2 "cannot find the Debian kernel package (apt-cache depends linux-image-amd64)"
apt-cache show "$kpkg" >/dev/null 2>&1 || die 2 "no package $kpkg in the apt lists (MMR_GUEST_KERNEL names a linux-image-* package)"
rel=${kpkg#linux-image-}
cache=${MMR_GUEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mmreplay-guest}/$rel
mods=(virtio_pci 9pnet_virtio 9p overlay)   # + their dependencies, from modules.dep

build_guest() {  # $1: scratch dir -> $cache/{root,vmlinuz,initramfs.cpio.gz,.complete}
    local tmp=$1
    mkdir -p "$tmp/debs" "$tmp/root" "$tmp/initramfs"/{bin,dev,proc,sys,mnt,modules}
    local hdrs; hdrs=$(apt-cache depends "linux-headers-$rel" 2>/dev/null |
        awk '/Depends: linux-(headers|kbuild)-/ {print $2}')
    (cd "$tmp/debs" && apt_get download "$kpkg" "linux-headers-$rel" $hdrs) \
        || { echo "cannot apt-get download $kpkg linux-headers-$rel $hdrs" >&2; return 1; }
    local d; for d in "$tmp"/debs/*.deb; do dpkg-deb -x "$d" "$tmp/root" || return 1; done
    # merged-/usr host: /lib is a symlink, so a real lib/ in an overlay layer
    # would hide the host's /lib entirely. Move the packages' lib/ under usr/.
    if [[ -L /lib && -d $tmp/root/lib ]]; then
        mkdir -p "$tmp/root/usr/lib" && cp -a "$tmp/root/lib/." "$tmp/root/usr/lib/" && rm -rf "$tmp/root/lib"
    fi
    local moddir; moddir=$(find "$tmp/root" -maxdepth 4 -type d -path "*/lib/modules/$rel" | head -1)
    [[ -d $moddir/kernel ]] || { echo "no modules in $kpkg" >&2; return 1; }
    # kmod's depmod if the host has it, else busybox's (the host needs no kmod)
    if command -v depmod >/dev/null; then depmod -b "${moddir%/lib/modules/$rel}" "$rel" || return 1
    else busybox depmod -b "${moddir%/lib/modules/$rel}" "$rel" || return 1; fi
    [[ -s $moddir/modules.dep ]] || { echo "depmod wrote no modules.dep" >&2; return 1; }
    # initramfs: busybox, the modules in load order (dependencies first), /init
    local -A seen=(); local order=()
    add_mod() {
        local path; path=$(awk -F: -v re="/$1[.]ko([.][a-z]+)?\$" '$1 ~ re {print $1; exit}' "$moddir/modules.dep")
        [[ -n $path ]] || { echo "module $1 not in modules.dep" >&2; return 1; }
        [[ -n ${seen[$path]-} ]] && return 0; seen[$path]=1
        local dep; for dep in $(awk -F: -v p="$path" '$1 == p {print $2}' "$moddir/modules.dep"); do
            dep=${dep##*/}; add_mod "${dep%%.ko*}" || return 1
        done
        cp "$moddir/$path" "$tmp/initramfs/modules/" && order+=("${path##*/}")
    }
    local m; for m in "${mods[@]}"; do add_mod "$m" || return 1; done
    (cd "$tmp/initramfs/modules" && for m in *.ko.xz; do [[ -e $m ]] && xz -d "$m"; done
     for m in *.ko.zst; do [[ -e $m ]] && zstd -qd --rm "$m"; done; true)
    printf '%s\n' "${order[@]%%.ko*}" > "$tmp/initramfs/modules/order"
    cp /bin/busybox "$tmp/initramfs/bin/busybox"
    mknod -m 600 "$tmp/initramfs/dev/console" c 5 1 2>/dev/null || true
    write_init > "$tmp/initramfs/init" && chmod 755 "$tmp/initramfs/init"
    (cd "$tmp/initramfs" && find . | busybox cpio -o -H newc -R 0:0 2>/dev/null | gzip -9) \
        > "$tmp/initramfs.cpio.gz" || return 1
    mv "$tmp/root/boot/vmlinuz-$rel" "$tmp/vmlinuz" || return 1
    rm -rf "$cache" && mkdir -p "$cache" &&
        mv "$tmp/root" "$tmp/vmlinuz" "$tmp/initramfs.cpio.gz" "$cache/" && echo "$stamp" > "$cache/.complete"
}

write_init() {  # the guest's PID 1 (busybox sh); talks to the host via the mmrrun share
    cat <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t devtmpfs dev /dev
exec </dev/ttyS0 >/dev/ttyS0 2>&1   # the kernel console is ttyS1
mount -t proc proc /proc; mount -t sysfs sys /sys
fail() { echo "mmr-guest(init): $*"; poweroff -f; sleep 5; echo o >/proc/sysrq-trigger; }
for m in $(cat /modules/order); do insmod "/modules/$m.ko" || fail "insmod $m failed"; done
p9=trans=virtio,version=9p2000.L,msize=262144
mkdir -p /mnt/host /mnt/kpkg /mnt/run /mnt/rw /newroot
mount -t 9p -o "$p9,ro" mmrhost /mnt/host || fail "cannot mount the host's / (9p)"
mount -t 9p -o "$p9,ro" mmrkpkg /mnt/kpkg || fail "cannot mount the kernel packages (9p)"
mount -t 9p -o "$p9" mmrrun /mnt/run || fail "cannot mount the run directory (9p)"
mount -t tmpfs -o mode=755 upper /mnt/rw && mkdir /mnt/rw/upper /mnt/rw/work
mount -t overlay -o lowerdir=/mnt/kpkg:/mnt/host,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work \
    root /newroot || fail "cannot mount the overlay root"
r=/newroot
mount -t proc proc $r/proc; mount -t sysfs sys $r/sys; mount -t devtmpfs dev $r/dev
mkdir -p $r/dev/pts $r/dev/shm; mount -t devpts devpts $r/dev/pts; mount -t tmpfs shm $r/dev/shm
mount -t tmpfs -o mode=755 run $r/run
mount -t tracefs tracefs $r/sys/kernel/tracing; mount -t debugfs debugfs $r/sys/kernel/debug
mount -t bpf bpf $r/sys/fs/bpf; mount -t cgroup2 cgroup2 $r/sys/fs/cgroup
i=0; while read -r dir; do      # --rw directories: tags mmrrw0, mmrrw1, ...
    mount -t 9p -o "$p9" "mmrrw$i" "$r$dir" || fail "cannot mount $dir read-write"; i=$((i + 1))
done </mnt/run/rw
# /dev/kvm for workloads that create a VM (TCG's -cpu max offers AMD SVM)
for mp in /sbin/modprobe "/bin/busybox modprobe"; do
    chroot $r $mp -q kvm_amd 2>/dev/null || chroot $r $mp -q kvm_intel 2>/dev/null && break
done
hostname mmr-guest; cp /mnt/run/cmd.sh $r/run/mmr-cmd.sh
token=$(cat /mnt/run/token)
stty -F /dev/ttyS0 -onlcr 2>/dev/null
echo "$token start"
chroot $r /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root USER=root LOGNAME=root TERM=dumb LANG=C.UTF-8 /bin/sh /run/mmr-cmd.sh </dev/null
rc=$?
echo $rc >/mnt/run/rc; sync
printf '\n%s end %s\n' "$token" "$rc"
poweroff -f; sleep 5; echo o >/proc/sysrq-trigger
EOF
}

stamp="$(write_init | md5sum | cut -c1-32) ${mods[*]}"   # rebuild when init changes
if [[ $(cat "$cache/.complete" 2>/dev/null) != "$stamp" ]]; then
    mkdir -p "${cache%/*}" || die 125 "cannot create ${cache%/*}"
    exec 9>"${cache%/*}/.lock" && flock 9 || die 125 "cannot lock ${cache%/*}/.lock"
    if [[ $(cat "$cache/.complete" 2>/dev/null) != "$stamp" ]]; then
        echo "tests/vm/run.sh: building the guest for $rel in $cache (once)" >&2
        scratch=$(mktemp -d "$cache.build.XXXXXX") || die 125 "cannot create a scratch directory"
        build_guest "$scratch" >&2; brc=$?; rm -rf "$scratch"
        ((brc == 0)) || die 125 "could not build the guest for $rel (see messages above)"
    fi
    exec 9>&-
fi

# ---------------------------------------------------------------- one run
run=$(mktemp -d "${TMPDIR:-/tmp}/mmr-vm.XXXXXX") || die 125 "cannot create a run directory"
# timeout(1) puts qemu in its own process group: stop it ourselves if we are stopped
trap 'kill "$(cat "$run/qemu.pid" 2>/dev/null)" 2>/dev/null; rm -rf "$run"' EXIT
trap 'exit 130' INT; trap 'exit 143' TERM HUP
q() { printf "'%s' " "${1//\'/\'\\\'\'}"; }   # POSIX-sh single quoting
# The caller's PATH (and Python's environment) carry over: the host's / is the
# guest's, so `python3` means in the guest what it means here (venv, pyenv).
{ for v in PATH PYTHONPATH VIRTUAL_ENV PYENV_VERSION PYENV_ROOT $(compgen -e | grep -E '^(MMR|MMREPLAY)_'); do
      [[ -n ${!v-} ]] && printf 'export %s=%s\n' "$v" "$(q "${!v}")"
  done
  printf 'cd %s|| exit 125\nexec ' "$(q "$workdir")"; for a in "$@"; do q "$a"; done; echo; } > "$run/cmd.sh"
token="mmr-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
echo "$token" > "$run/token"
printf '%s\n' "${rw_dirs[@]}" | sed '/^$/d' > "$run/rw"
debug=${MMR_GUEST_DEBUG:-0}; [[ $debug == 1 ]] && touch "$run/debug"

share() { echo "local,path=$1,mount_tag=$2,security_model=none,multidevs=remap${3:+,$3}"; }
kcmd="console=ttyS1 ignore_loglevel softlockup_all_cpu_backtrace=1 panic=-1 no_timer_check${MMR_GUEST_APPEND:+ $MMR_GUEST_APPEND}"
((lockup_panic)) && kcmd+=" softlockup_panic=1"
# One TCG thread for both vCPUs: with multi-threaded TCG (qemu's default) a vCPU can keep running its old
# translation of kernel text that the other vCPU patched (int3 then the new bytes, text_poke_bp), and
# 6.1's int3 handler, finding no int3 in memory, sends it back to run it again: a livelock seen as a soft
# lockup on both CPUs. Measured in docs/RECORDING.md; MMR_GUEST_ACCEL overrides (e.g. "tcg" for MTTCG).
qemu_args=(-pidfile "$run/qemu.pid" -accel "$accel" -cpu max -m 2048 -smp 2 -no-reboot -nic none
    -display none -monitor none -serial stdio -serial "file:$run/kernel.log"
    -kernel "$cache/vmlinuz" -initrd "$cache/initramfs.cpio.gz" -append "$kcmd"
    -virtfs "$(share / mmrhost readonly=on)" -virtfs "$(share "$cache/root" mmrkpkg readonly=on)"
    -virtfs "$(share "$run" mmrrun)")
for i in "${!rw_dirs[@]}"; do qemu_args+=(-virtfs "$(share "${rw_dirs[$i]}" "mmrrw$i")"); done
# MMR_GUEST_QEMU_ARGS: extra qemu arguments, split on blanks (debugging: a monitor socket, -d, ...)
[[ -n ${MMR_GUEST_QEMU_ARGS-} ]] && read -r -a extra <<<"$MMR_GUEST_QEMU_ARGS" && qemu_args+=("${extra[@]}")

# ttyS0: init's messages go to $run/console; what lies between the
# "<token> start" and "<token> end <rc>" lines is COMMAND's. ttyS1: the kernel.
[[ $debug == 1 ]] && { tail -F -n +1 "$run/kernel.log" 2>/dev/null >&2 & echo $! > "$run/tail.pid"; }
state=boot blank=0
while IFS= read -r line || [[ -n $line ]]; do
    line=${line%$'\r'}
    case $state in
        boot) if [[ $line == *"$token start" ]]; then state=cmd
              else printf '%s\n' "$line" >> "$run/console"; fi ;;
        cmd)  if [[ $line == "$token end "* ]]; then state=done
              elif [[ -z $line ]]; then ((blank++))   # the marker's own leading \n
              else while ((blank)); do echo; ((blank--)); done; printf '%s\n' "$line"; fi ;;
        done) ;;
    esac
done < <(timeout -k 10 "$timeout_s" qemu-system-x86_64 "${qemu_args[@]}" </dev/null 2>>"$run/qemu.err"; echo "$?" 2>/dev/null > "$run/qemu_rc")
while ((blank > 1)); do echo; ((blank--)); done
wait $! 2>/dev/null

[[ -s $run/tail.pid ]] && kill "$(cat "$run/tail.pid")" 2>/dev/null
if [[ -n $klog_out ]]; then cp "$run/kernel.log" "$klog_out" 2>/dev/null || echo "tests/vm/run.sh: cannot write $klog_out" >&2; fi
# The kernel's first complaint, for the reason line of a hang or a death
oops=$(grep -a -m1 -E 'BUG:|Kernel panic|soft lockup|hung_task|RCU.*stall|general protection' "$run/kernel.log" 2>/dev/null | tr -d '\r' | cut -c1-160)
qrc=$(cat "$run/qemu_rc" 2>/dev/null || echo 1)
if [[ $qrc == 124 || $qrc == 137 ]]; then
    die 124 "timed out after ${timeout_s}s (guest killed)${oops:+; the kernel said: $oops}"
elif [[ -s $run/rc ]]; then
    exit "$(cat "$run/rc")"
elif [[ $state == boot ]]; then
    tail -n 5 "$run/console" "$run/qemu.err" "$run/kernel.log" 2>/dev/null | sed 's/^/tests\/vm\/run.sh: /' >&2
    die 125 "the guest did not boot (qemu exit $qrc)${oops:+; the kernel said: $oops}; --kernel-log FILE keeps its console"
else
    sed 's/^/tests\/vm\/run.sh: /' "$run/qemu.err" >&2
    die 125 "the guest died before COMMAND finished (qemu exit $qrc)${oops:+; the kernel said: $oops}"
fi
