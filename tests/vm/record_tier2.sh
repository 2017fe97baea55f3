#!/bin/sh
# tests/vm/record_tier2.sh OUT [WORKLOAD...]: run inside the guest (tests/vm/run.sh --rw OUT -- ...).
# Records each workload (default: take-all-locks mmap-file; 2 tasks, 2 s) with tier 2 into
# OUT/<workload>, with `perf stat` counting mmap_lock:mmap_lock_acquire_returned of the
# workload's tasks into OUT/<workload>.perf: an independent count of the mmap_lock acquisitions
# the trace must hold once each. Both see the same tasks: the recorder follows the workload's
# name (--comm), perf counts from the workload's exec on (its children included).
# MMR_ROUNDS=N repeats the set N times (OUT/<workload>.<round>).
set -eu
out=$1; shift
[ $# -gt 0 ] || set -- take-all-locks mmap-file
py=${PYTHON:-python3}
# each phase that patches kernel text (detect, load + fentry attach, attach, detach), with its duration,
# on stderr and in the kernel log: lines a hang up with the phase it happened in
export MMREPLAY_TIER2_LOG=${MMREPLAY_TIER2_LOG:-1}
rounds=${MMR_ROUNDS:-1}
r=1
while [ "$r" -le "$rounds" ]; do
    for wl in "$@"; do
        dst=$out/$wl; [ "$rounds" -gt 1 ] && dst=$dst.$r
        cmd=$($py -m tracer.workloads command "$wl" 2 2)
        comm=$(basename "${cmd%% *}" | cut -c1-15)
        t0=$(date +%s)
        echo "record_tier2: $wl round $r: recording at $(cut -d' ' -f1 /proc/uptime) s uptime" >&2
        # shellcheck disable=SC2086 # the workload's argv, split on purpose
        $py -m replay record -o "$dst" --comm "$comm" --duration 120 -- \
            perf stat -x, -o "$dst.perf" -e mmap_lock:mmap_lock_acquire_returned -- $cmd
        echo "record_tier2: $wl round $r: done in $(($(date +%s) - t0)) s" >&2
    done
    r=$((r + 1))
done
