/* SPDX-License-Identifier: GPL-2.0 */
/*
 * mmreplay: the records the BPF programs hand to user space.
 *
 * Every event is one 64-byte slot. Slots are collected in a per-CPU batch
 * (struct mmr_batch) and the whole batch is submitted as ONE ring-buffer
 * record when it is full (or by the periodic flush program), so user space
 * decodes thousands of events per callback with numpy.frombuffer.
 *
 * tracer/events.py mirrors this file EXACTLY (numpy dtypes); the test
 * tests/test_events_layout.py compiles this header with gcc and compares
 * every size and offset.
 *
 * This header is plain C (no kernel or bcc types) so that gcc can compile it
 * in that test; the BPF side includes it after the kernel headers.
 */
#ifndef MMREPLAY_H
#define MMREPLAY_H

#ifndef __MMR_TYPES
#define __MMR_TYPES
typedef unsigned char mmr_u8;
typedef unsigned short mmr_u16;
typedef unsigned int mmr_u32;
typedef int mmr_s32;
typedef unsigned long long mmr_u64;
typedef long long mmr_s64;
#endif

#define MMR_EVENT_SIZE 64
#define MMR_BATCH_EVENTS 256
#define MMR_MAX_KINDS 24
#define MMR_NEST 4             /* batches per CPU: one per nesting level (mmr_common.h) */

/* Event kinds: the slot's `kind` byte; also the index of the probe family's
 * counters in the `mmr_stats` map. Tier 1 uses 1..15, tier 2 (R2) 16..23. */
#define MMR_EV_LOCK_HOLD 1     /* mmap_lock:* paired per (tid, mm) */
#define MMR_EV_LOCK_WAIT 2     /* lock:contention_{begin,end} paired per (tid, lock) */
#define MMR_EV_TLB_FLUSH 3     /* tlb:tlb_flush */
#define MMR_EV_PAGE_FREE 4     /* kmem:mm_page_free{,_batched} bursts per CPU */
#define MMR_EV_PAGE_FAULT 5    /* exceptions:page_fault_user */
#define MMR_EV_SYSCALL 6       /* syscalls:sys_{enter,exit}_* paired per tid */
#define MMR_EV_SCHED_SWITCH 7  /* sched:sched_switch */
#define MMR_EV_SCHED_WAKEUP 8  /* sched:sched_{waking,wakeup,wakeup_new} */
#define MMR_EV_IPI 9           /* ipi:ipi_send_{cpu,cpumask} */

/* flags byte of every slot */
#define MMR_F_INCOMPLETE 1     /* interval cut by the start or the end of the recording */
#define MMR_F_NO_START 2       /* opening event not seen: ts is 0, user space sets it to the recording start */
#define MMR_F_PREV_RECORDED 4  /* sched_switch: prev is a recorded task */
#define MMR_F_NEXT_RECORDED 8  /* sched_switch: next is a recorded task */

/* Syscall numbers as indexes of replay.trace.schema.SYSCALLS. */
#define MMR_SYS_MMAP 0
#define MMR_SYS_MUNMAP 1
#define MMR_SYS_MPROTECT 2
#define MMR_SYS_BRK 3
#define MMR_SYS_MADVISE 4
#define MMR_SYS_MREMAP 5
#define MMR_SYS_EXIT_GROUP 6

/* Wake kinds as indexes of replay.trace.schema.WAKE_KINDS. */
#define MMR_WAKE_WAKING 0
#define MMR_WAKE_WAKEUP 1
#define MMR_WAKE_WAKEUP_NEW 2

/* The common 28-byte head of every slot; kind-specific fields start at 28. */
#define MMR_EVENT_HEAD                                                          \
	mmr_u64 ts;    /* ns, bpf_ktime_get_ns; intervals: opening event */     \
	mmr_u64 seq;   /* global order (atomic counter); intervals: opening */  \
	mmr_s32 pid;   /* tgid of the task the event is about */              \
	mmr_s32 tid;                                                            \
	mmr_u16 cpu;   /* CPU of the (opening) event */                        \
	mmr_u8 kind;   /* MMR_EV_* */                                           \
	mmr_u8 flags   /* MMR_F_* */

struct mmr_event_head {
	MMR_EVENT_HEAD;
	mmr_s32 _kind_specific;
};

struct mmr_lock_hold {
	MMR_EVENT_HEAD;
	mmr_s32 stack_id;   /* -1: none */
	mmr_u64 dur;        /* acquired -> released */
	mmr_u64 wait;       /* start_locking -> acquired (0: trylock, downgrade) */
	mmr_u64 lock_addr;  /* mmap_lock: the mm_struct */
	mmr_s32 depth;      /* mmap_locks this task already held */
	mmr_u8 mode;        /* 0 read, 1 write */
	mmr_u8 success;
	mmr_u8 lock_class;  /* 0: from lock_addr/stack in user space; 1: mmap_lock */
	mmr_u8 _pad;
};

struct mmr_lock_wait {
	MMR_EVENT_HEAD;
	mmr_s32 stack_id;   /* stack at the first contention_begin */
	mmr_u64 dur;        /* first contention_begin -> contention_end */
	mmr_u64 lock_addr;
	mmr_u32 lcb_flags;  /* LCB_F_* */
	mmr_s32 ret;        /* contention_end ret */
	mmr_s32 begins;     /* contention_begin events folded in */
	mmr_u32 _pad;
};

struct mmr_tlb_flush {
	MMR_EVENT_HEAD;
	mmr_s32 reason;     /* enum tlb_flush_reason */
	mmr_s64 pages;      /* -1: TLB_FLUSH_ALL */
	mmr_u64 _pad[3];
};

struct mmr_page_free {
	MMR_EVENT_HEAD;
	mmr_s32 batched;    /* 1: mm_page_free_batched (mmu_gather path) */
	mmr_u64 dur;        /* first -> last free of the burst */
	mmr_s64 pages;      /* base pages (order n counts 2^n) */
	mmr_u64 _pad[2];
};

struct mmr_page_fault {
	MMR_EVENT_HEAD;
	mmr_s32 _pad0;
	mmr_u64 address;
	mmr_u64 ip;
	mmr_u64 error_code;
	mmr_u64 _pad;
};

struct mmr_syscall {
	MMR_EVENT_HEAD;
	mmr_s32 nr;         /* MMR_SYS_* */
	mmr_u64 dur;
	mmr_u64 arg0;
	mmr_u64 arg1;
	mmr_s64 ret;
};

/* head.pid/tid: the task switched out (prev) */
struct mmr_sched_switch {
	MMR_EVENT_HEAD;
	mmr_s32 prev_prio;
	mmr_s64 prev_state;
	mmr_s32 next_tid;
	mmr_s32 next_prio;
	mmr_u64 _pad[2];
};

/* head.pid/tid: the waker (current) */
struct mmr_sched_wakeup {
	MMR_EVENT_HEAD;
	mmr_s32 woken_tid;
	mmr_s32 prio;
	mmr_s32 target_cpu;
	mmr_s32 wake_kind;  /* MMR_WAKE_* */
	mmr_u32 _pad[5];
};

struct mmr_ipi {
	MMR_EVENT_HEAD;
	mmr_s32 target_cpu; /* -1: a cpumask */
	mmr_u64 callsite;
	mmr_u64 callback;
	mmr_s32 ncpus;
	mmr_u32 _pad[3];
};

/* One per-CPU batch; submitted whole to the ring buffer. 64-byte header. */
struct mmr_batch {
	mmr_u32 cpu;
	mmr_u32 count;                         /* valid slots in ev[] */
	mmr_u64 flush_ts;                      /* when it was submitted */
	mmr_u16 kind_count[MMR_MAX_KINDS];     /* slots per kind (loss accounting) */
	mmr_u8 ev[MMR_BATCH_EVENTS * MMR_EVENT_SIZE];
};

/* Per-CPU counters per probe family (indexed by MMR_EV_*). */
struct mmr_stat {
	mmr_u64 events;     /* tracepoint hits that passed the filter */
	mmr_u64 lost;       /* events in batches the ring buffer refused */
	mmr_u64 unmatched;  /* closing events without opening ones */
	mmr_u64 recorder;   /* hits the recorder caused (its programs' locks, its own process): dropped */
};

/* ---- tier 2 (R2) ---- */
/* fentry/kprobe programs (bpf/tier2_*.c), decoded by tracer/tier2.py. Lock
 * acquisitions and releases are sent as edges and paired in user space
 * (nesting, holds cut by the start or stop of the recording); gathers and
 * mm_take_all_locks are paired in the kernel, their open windows read from
 * the maps at stop. */
#define MMR_EV_T2_LOCK_ACQUIRE 16  /* down_*, mutex_lock*: returned (acquired or failed) */
#define MMR_EV_T2_LOCK_RELEASE 17  /* up_*, mutex_unlock, downgrade_write (write side) */
#define MMR_EV_T2_GATHER 18        /* tlb_gather_mmu -> tlb_finish_mmu */
#define MMR_EV_T2_TAKE_ALL 19      /* mm_take_all_locks entry -> return */

#define MMR_LOCK_RWSEM 0
#define MMR_LOCK_MUTEX 1

/* flags byte of lock edges: the lock is the current task's mm->mmap_lock and
 * lock_addr holds the mm, as tier 1 keys mmap_lock (its tracepoints see every
 * such acquisition: the recorder keeps tier 1's rows, not these). */
#define MMR_T2_F_MMAP_LOCK 0x80

/* head.ts: when the lock call returned; head.seq: its order */
struct mmr_t2_acquire {
	MMR_EVENT_HEAD;
	mmr_s32 stack_id;   /* kernel stack at the lock call (-1: none) */
	mmr_u64 wait;       /* lock call entry -> return */
	mmr_u64 lock_addr;
	mmr_u8 mode;        /* 0 read, 1 write (mutexes: write) */
	mmr_u8 success;     /* 0: trylock failed or killable/interruptible interrupted */
	mmr_u8 lock_type;   /* MMR_LOCK_* */
	mmr_u8 trylock;
	mmr_u32 _pad[3];
};

struct mmr_t2_release {
	MMR_EVENT_HEAD;
	mmr_s32 _pad0;
	mmr_u64 lock_addr;
	mmr_u8 mode;
	mmr_u8 lock_type;
	mmr_u8 _pad1[6];
	mmr_u64 _pad[2];
};

/* head.ts: tlb_gather_mmu; flags MMR_F_NO_START: the gather began before the
 * recording (ts 0, dur holds the end time); MMR_F_INCOMPLETE: cut. */
struct mmr_t2_gather {
	MMR_EVENT_HEAD;
	mmr_s32 flushes;    /* tlb_flush_mmu calls in the window */
	mmr_u64 dur;
	mmr_u64 mm;
	mmr_s64 pages;      /* kmem:mm_page_free_batched hits of this task in the window */
	mmr_u8 fullmm;
	mmr_u8 _pad1[7];
};

struct mmr_t2_take_all {
	MMR_EVENT_HEAD;
	mmr_s32 ret;        /* 0 or -EINTR */
	mmr_u64 dur;
	mmr_u64 mm;
	mmr_u64 _pad[2];
};

/* Values of the per-task maps that hold open windows; read at stop. */
struct mmr_t2_gather_open {
	mmr_u64 ts;
	mmr_u64 seq;
	mmr_u64 mm;
	mmr_u64 tlb;
	mmr_s64 pages;
	mmr_s32 pid;
	mmr_s32 flushes;
	mmr_u16 cpu;
	mmr_u8 fullmm;
	mmr_u8 _pad[5];
};

struct mmr_t2_take_all_open {
	mmr_u64 ts;
	mmr_u64 seq;
	mmr_u64 mm;
	mmr_s32 pid;
	mmr_u16 cpu;
	mmr_u16 _pad;
};

#endif /* MMREPLAY_H */
