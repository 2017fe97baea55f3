"""Do raw-tracepoint programs run in the order they were attached? (bpf/mmr_pf_stack.h relies on it.)

The kernel keeps a tracepoint's probes in an array sorted by priority, a new probe going after every probe
of equal or higher priority (kernel/tracepoint.c func_add: "Insert before probes of lower priority"); a
raw-tracepoint BPF program registers with the default priority (kernel/trace/bpf_trace.c
__bpf_probe_register -> tracepoint_probe_register_may_exist). So programs attached one after the other run
in that order for every hit. Measured here: programs FIRST and SECOND on raw_syscalls:sys_enter count, per
CPU, how often SECOND finds that FIRST ran just before it, in the same hit (nearer in time than SECOND's
own previous run, a whole system call earlier), once attached FIRST then SECOND, once the reverse.

Needs root and bcc. Usage: sudo PYTHONPATH=. python3 benchmarks/raw_tp_attach_order.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tracer import kernel_env  # noqa: E402

TEXT = b"""
/* [0] FIRST's last run, [1] SECOND's last run (ns), [2] hits where FIRST ran just before SECOND, [3] others */
BPF_PERCPU_ARRAY(n, u64, 4);
static __always_inline u64 *at(int k) { return n.lookup(&k); }
int first(struct bpf_raw_tracepoint_args *ctx)
{
	u64 *f = at(0);
	if (f)
		*f = bpf_ktime_get_ns();
	return 0;
}
/* In one hit the two programs run back to back; between hits a whole system call passes. FIRST ran in
 * this hit, before SECOND, when its last run is nearer to now than to SECOND's previous run. */
int second(struct bpf_raw_tracepoint_args *ctx)
{
	u64 now = bpf_ktime_get_ns();
	u64 *f = at(0), *s = at(1), *after = at(2), *before = at(3);
	if (!f || !s || !after || !before)
		return 0;
	if (*f > *s && now - *f < *f - *s)
		(*after)++;
	else
		(*before)++;
	*s = now;
	return 0;
}
"""


def run(bcc, order: tuple[bytes, bytes], seconds: float) -> tuple[int, int]:
    b = bcc.BPF(text=TEXT)
    fds = []
    for name in order:
        fn = b.load_func(name, bcc.BPF.RAW_TRACEPOINT)
        fd = bcc.libbcc.lib.bpf_attach_raw_tracepoint(fn.fd, b"sys_enter")
        if fd < 0:
            raise SystemExit(f"attach {name.decode()} failed: {-fd}")
        fds.append(fd)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        os.getppid()  # system calls of our own, on top of the machine's
    for fd in fds:
        os.close(fd)
    table = b["n"]
    after, before = sum(table[2]), sum(table[3])
    b.cleanup()
    return after, before


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    bcc, _ = kernel_env.prepare()
    print(f"kernel {os.uname().release}")
    for order in ((b"first", b"second"), (b"second", b"first")):
        after, before = run(bcc, order, args.seconds)
        print(f"attached {order[0].decode()} then {order[1].decode()}: second ran after first in {after} hits, "
              f"before it in {before}")


if __name__ == "__main__":
    main()
