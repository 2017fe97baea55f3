/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Pairing lock:contention_begin with lock:contention_end: what a second
 * contention_begin on a lock means while the same task's wait on that lock is
 * still open. Plain C, so that tests/test_lock_pairing.py compiles this very
 * code with gcc and drives it with the kernel's begin/end sequences.
 *
 * What the kernel emits (include/trace/events/lock.h flags; kernel/locking/,
 * 6.1 and 6.18 alike), per task and lock address, before the contention_end:
 *   mutex, ww_mutex (mutex.c __mutex_lock_common): MUTEX|SPIN on entry, then
 *       MUTEX before sleeping; each time the task wakes as first waiter,
 *       MUTEX|SPIN again and, if that spin fails, MUTEX: the two alternate.
 *   rwsem (rwsem.c): READ or WRITE, once (its optimistic spins are untraced).
 *   percpu-rwsem: PERCPU|READ or PERCPU|WRITE, once.
 *   qspinlock: SPIN, once; qrwlock: SPIN|READ or SPIN|WRITE, once (its
 *       wait_lock, 4 bytes further, is a different address).
 *   rt_mutex, PREEMPT_RT spinlock_t (rtmutex.c): RT, once; rwbase_rt:
 *       RT|READ or RT|WRITE, once.
 *   semaphore (semaphore.c __down_common): 0, once.
 * rt_mutex_base and semaphore keep their wait_lock (a raw spinlock) at the
 * lock's own address, and both re-take it inside the wait, after each sleep:
 * when contended, that is SPIN begin, end(0), on the same address, nested in
 * the wait: RT [SPIN end]* end, 0 [SPIN end]* end.
 *
 * Anything else means the open wait's contention_end never reached us (the
 * kernel skipped it as BPF recursion: an interrupt's contention ending while
 * our contention_end program ran on the CPU) and this begin starts a new
 * wait. Folding it into the open one, as perf's script pairing does, made one
 * wait of seconds out of two short ones.
 */
#ifndef MMR_LC_PAIR_H
#define MMR_LC_PAIR_H

#include "mmreplay.h"

#ifndef MMR_INLINE
#define MMR_INLINE static inline __attribute__((always_inline))
#endif

/* include/trace/events/lock.h */
#define MMR_LCB_SPIN (1U << 0)
#define MMR_LCB_READ (1U << 1)
#define MMR_LCB_WRITE (1U << 2)
#define MMR_LCB_RT (1U << 3)
#define MMR_LCB_PERCPU (1U << 4)
#define MMR_LCB_MUTEX (1U << 5)

/* What a contention_begin on a lock with an open wait of the same task is. */
#define MMR_LC_FOLD 0  /* the same wait goes on (a mutex between spinning and sleeping) */
#define MMR_LC_INNER 1 /* the lock's own wait_lock contended inside the wait: its end is not the wait's */
#define MMR_LC_STALE 2 /* the open wait's end was lost: it is dropped (counted), a new wait begins */

/* The pairing state of one open wait (part of the BPF map value). */
struct mmr_lc_pairing {
	mmr_u32 flags;  /* every begin's flags, or-ed (lock_waits.lcb_flags) */
	mmr_u32 first;  /* the first begin's */
	mmr_s32 begins; /* contention_begin events folded in (lock_waits.begins) */
	mmr_u8 last;    /* the latest begin's (inner ones excluded) */
	mmr_u8 inner;   /* 1: the lock's wait_lock contention is open inside the wait */
	mmr_u16 _pad;
};

/* first: the open wait's first begin flags; last: its latest (inner ones excluded); flags: this begin's. */
MMR_INLINE int mmr_lc_again(mmr_u32 first, mmr_u32 last, mmr_u32 flags)
{
	if ((last & MMR_LCB_MUTEX) && (flags & MMR_LCB_MUTEX) && (last ^ flags) == MMR_LCB_SPIN)
		return MMR_LC_FOLD;
	if ((flags & (MMR_LCB_SPIN | MMR_LCB_MUTEX)) == MMR_LCB_SPIN && ((first & MMR_LCB_RT) || first == 0))
		return MMR_LC_INNER;
	return MMR_LC_STALE;
}

/* A wait's first contention_begin. */
MMR_INLINE void mmr_lc_open(struct mmr_lc_pairing *p, mmr_u32 flags)
{
	p->flags = flags;
	p->first = flags;
	p->begins = 1;
	p->last = (mmr_u8)flags;
	p->inner = 0;
}

/* A contention_begin while the wait is open. MMR_LC_STALE: p now holds the new wait (the caller
 * re-stamps it and counts the dropped one). */
MMR_INLINE int mmr_lc_begin_again(struct mmr_lc_pairing *p, mmr_u32 flags)
{
	int again = mmr_lc_again(p->first, p->last, flags);
	if (again == MMR_LC_FOLD) {
		p->flags |= flags;
		p->last = (mmr_u8)flags;
		p->begins++;
	} else if (again == MMR_LC_INNER) {
		p->inner = 1; /* a second inner begin: the first one's end was lost; one end still to come */
		p->begins++;
	} else {
		mmr_lc_open(p, flags);
	}
	return again;
}

/* A contention_end while the wait is open: 1 if it ends the wait, 0 if it ends the inner contention. */
MMR_INLINE int mmr_lc_end_closes(struct mmr_lc_pairing *p)
{
	if (p->inner) {
		p->inner = 0;
		return 0;
	}
	return 1;
}

/*
 * An end without a begin: a wait cut by the recording's start, or a wait whose
 * begin was lost after the start (skipped as BPF recursion: an interrupt's
 * contention while our contention_begin program ran on the CPU; or no room
 * left in the map)? Written as cut by the start, a lost begin became a wait
 * from the recording's start to its end.
 *
 * A wait in progress at the start is a loop the task (or the interrupt on top
 * of it) has not left: every lock wait of that task from the start to this
 * end runs inside it, and so has begun and ended before it. Those inner waits
 * are raw spinning ones: a mutex waiter, woken, takes the mutex's wait_lock
 * (8 bytes further) and an rwsem writer its wait_lock after each sleep,
 * schedule() takes the runqueue lock, an interrupt may spin on any spinlock;
 * none takes a sleeping lock (PREEMPT_RT's spinlock_t, flagged RT, inside a
 * percpu-rwsem wait excepted). So the end is a lost begin's, not the start's,
 * if the task has
 *   - a wait begun since the start still open (the end would be inside it), or
 *   - begun since the start a wait that cannot run inside another (a sleeping
 *     lock's: MUTEX, rwsem READ/WRITE, PERCPU, semaphore 0; RT kept out): no
 *     wait in progress at the start is then left, or
 *   - a begin since the start the program saw but could not keep (no room in
 *     the map): by the same nesting, the first end without a begin after it
 *     is that wait's.
 * ("Its first lock-wait event since the start" would be too strict: a rwsem
 * or mutex wait cut by the start sees its own wait_lock contended after each
 * sleep before its end, and the runqueue lock in schedule().)
 * An end inside our contention_begin program on the same CPU is an
 * interrupt's whose begin came inside that program and was skipped: lost too
 * (bpf/lock_contention.c checks that itself).
 */

/* The lock-wait state of a task alive at the start (the recorder creates it before the start). */
struct mmr_lc_task {
	mmr_u32 open;    /* its waits begun since the start and kept in the map, not ended */
	mmr_u32 lost;    /* its begins since the start the program could not keep, whose ends are to come */
	mmr_u32 settled; /* 1: it has begun a wait since the start that cannot run inside another */
	mmr_u32 _pad;
};

/* Can a wait with these first begin flags run inside another wait of the same task (see above)? */
MMR_INLINE int mmr_lc_may_nest(mmr_u32 first)
{
	return (first & (MMR_LCB_SPIN | MMR_LCB_MUTEX)) == MMR_LCB_SPIN || (first & MMR_LCB_RT);
}

/* A wait of the task begins (flags: its first begin's); kept: the program keeps it in its map, else its
 * end will come without it. */
MMR_INLINE void mmr_lc_task_began(struct mmr_lc_task *t, mmr_u32 flags, int kept)
{
	if (kept)
		__sync_fetch_and_add(&t->open, 1);
	else
		__sync_fetch_and_add(&t->lost, 1);
	if (!mmr_lc_may_nest(flags))
		t->settled = 1; /* no wait in progress at the start can still be: this one would run inside it */
}

/* A wait of the task, kept since the start, ended. */
MMR_INLINE void mmr_lc_task_closed(struct mmr_lc_task *t)
{
	if (t->open)
		__sync_fetch_and_add(&t->open, -1);
}

/* An end of the task without a begin: 1 if it ends a wait cut by the start, 0 if its begin was lost. */
MMR_INLINE int mmr_lc_cut_by_start(struct mmr_lc_task *t)
{
	if (t->lost) {
		__sync_fetch_and_add(&t->lost, -1);
		return 0;
	}
	return !t->open && !t->settled;
}

#endif /* MMR_LC_PAIR_H */
