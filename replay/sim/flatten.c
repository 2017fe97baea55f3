// SPDX-License-Identifier: MIT
/*
 * Flattening's op-tree walk in C: Flattener.walk (replay/sim/program.py)
 * transcribed, giving the same instructions and points bit for bit. It is the
 * slow half of a replay once the engine is compiled (one Python object visit
 * per op); everything that is not the walk -- lock and kind registration, the
 * gather expansion, service-time noise -- stays in Python and is called back.
 *
 * A CPython extension (module _mmr_flatten), built on first use by
 * replay/sim/cflatten.py against this interpreter's headers.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

enum { USER, KERN, BLOCK, UNTIL, ACQ, REL, SPAN_B, SPAN_E, GB, GZAP, GFLUSH, GPOINT, GE, END, DOWNGRADE };
#define WIDTH 5

/* The instructions, written straight into a bytearray that becomes the Program's code array: no copy
 * at the end (a 10-s recording's code is ~400 MiB; a copy doubled the flattening's peak memory). */
typedef struct {
	int64_t *v;
	Py_ssize_t n, cap;
	PyObject *ba; /* bytearray holding v */
} I64s;

typedef struct {
	uint8_t *v;
	Py_ssize_t n, cap;
} U8s;

/* Room for ``need`` elements in the array *v of *cap elements of ``size`` bytes (doubling, from
 * ``first``); -1 with MemoryError set when memory runs out. */
static int reserve(void **v, Py_ssize_t need, Py_ssize_t *cap, size_t size, Py_ssize_t first)
{
	if (need <= *cap)
		return 0;
	Py_ssize_t c = *cap ? *cap : first;
	while (c < need)
		c *= 2;
	void *p = PyMem_Realloc(*v, size * c);
	if (!p) {
		PyErr_NoMemory();
		return -1;
	}
	*v = p;
	*cap = c;
	return 0;
}

/* Room for ``need`` int64s in b's bytearray (doubling; pages not yet written are never touched). */
static int i64s_reserve(I64s *b, Py_ssize_t need)
{
	if (need <= b->cap)
		return 0;
	Py_ssize_t c = b->cap ? b->cap : 1 << 16;
	while (c < need)
		c *= 2;
	if (!b->ba) {
		b->ba = PyByteArray_FromStringAndSize(NULL, c * (Py_ssize_t)sizeof(int64_t));
		if (!b->ba)
			return -1;
	} else if (PyByteArray_Resize(b->ba, c * (Py_ssize_t)sizeof(int64_t)) < 0) {
		return -1;
	}
	b->v = (int64_t *)PyByteArray_AS_STRING(b->ba);
	b->cap = c;
	return 0;
}

static int i64s_put(I64s *b, int64_t a0, int64_t a1, int64_t a2, int64_t a3, int64_t a4)
{
	if (i64s_reserve(b, b->n + WIDTH))
		return -1;
	int64_t *r = b->v + b->n;
	r[0] = a0; r[1] = a1; r[2] = a2; r[3] = a3; r[4] = a4;
	b->n += WIDTH;
	return 0;
}

static int u8s_put(U8s *b, int x)
{
	if (reserve((void **)&b->v, b->n + 1, &b->cap, 1, 1 << 14))
		return -1;
	b->v[b->n++] = (uint8_t)(x != 0);
	return 0;
}

/* a stack entry: an op to visit, a hold to spend (after a body), an instruction that closes a scope or
 * one inside it (a downgrade) */
enum { S_OP, S_HOLD, S_CLOSE, S_EMIT };
typedef struct {
	int kind;
	PyObject *op; /* borrowed: the workload keeps it alive */
	int64_t ins[WIDTH];
} Entry;

typedef struct {
	Entry *v;
	Py_ssize_t n, cap;
} Stack;

static Entry *stack_push(Stack *s)
{
	if (reserve((void **)&s->v, s->n + 1, &s->cap, sizeof(Entry), 64))
		return NULL;
	return &s->v[s->n++];
}

/* Push the instruction that closes a scope (S_CLOSE: a Critical's release, a Span's end) or one
 * inside it (S_EMIT: a downgrade); and a hold to spend (S_HOLD, ns in a) */
static int push_ins(Stack *s, int kind, int64_t op, int64_t a, int64_t b)
{
	Entry *c = stack_push(s);
	if (!c)
		return -1;
	c->kind = kind;
	c->op = NULL;
	c->ins[0] = op; c->ins[1] = a; c->ins[2] = b; c->ins[3] = 0; c->ins[4] = 0;
	return 0;
}

#define LOCK_CACHE 256

/* interned attribute names */
static PyObject *s_ops, *s_tid, *s_body, *s_lock, *s_mode, *s_hold_ns, *s_at_ns, *s_recorded_wait_ns, *s_derived,
	*s_recorded_wait_slept,
	*s_ns, *s_kind, *s_write, *s_read, *s_lock_of_ref, *s_sleeping_lock, *s_scale, *s_gather, *s_kind_m,
	*s_lock_m, *s_lock_class, *s_addr, *s_downgrade, *s_check_downgrade;

/* the walk's context: Flattener's fields and the op classes */
typedef struct {
	PyObject *flattener, *lock_of_ref, *lock_ids, *kind_ids, *sleeping_lock, *scale;
	PyTypeObject *think, *block, *critical, *gather, *span;
	int open_mode, full, voluntary, perturbing, until_on_cpu;
	/* id(LockRef) -> index, for the LockRef objects seen last (they live as long as the workload) */
	PyObject *cache_ref[LOCK_CACHE];
	int64_t cache_lid[LOCK_CACHE];
	I64s code;
	U8s pts;
} Walk;

/* o.name, a new reference: from the instance dict when the field is there (the ops are plain
 * dataclasses, which set every field in __init__), else by the full attribute protocol */
static PyObject *attr(PyObject *o, PyObject *name)
{
	PyObject **dp = _PyObject_GetDictPtr(o);
	if (dp && *dp) {
		PyObject *v = PyDict_GetItemWithError(*dp, name);
		if (v) {
			Py_INCREF(v);
			return v;
		}
		if (PyErr_Occurred())
			return NULL;
	}
	return PyObject_GetAttr(o, name);
}

/* o.name as int64 (``none_is_zero``: None gives 0, as ``o.name or 0``); -1 with an exception set on
 * failure (check PyErr_Occurred) */
static int64_t attr_i64(PyObject *o, PyObject *name, int none_is_zero)
{
	PyObject *v = attr(o, name);
	if (!v)
		return -1;
	int64_t x = none_is_zero && v == Py_None ? 0 : PyLong_AsLongLong(v);
	Py_DECREF(v);
	return x;
}

static int attr_true(PyObject *o, PyObject *name)
{
	PyObject *v = attr(o, name);
	if (!v)
		return -1;
	int t = PyObject_IsTrue(v);
	Py_DECREF(v);
	return t;
}

static int64_t scaled(Walk *w, int64_t ns)
{
	if (!w->perturbing)
		return ns;
	PyObject *r = PyObject_CallFunction(w->scale, "L", (long long)ns);
	if (!r)
		return -1;
	int64_t x = PyLong_AsLongLong(r);
	Py_DECREF(r);
	return x;
}

static int lock_index_slow(Walk *w, PyObject *lock, PyObject *tid, int64_t *lid)
{
	PyObject *key = PyLong_FromVoidPtr(lock); /* id(lock) */
	if (!key)
		return -1;
	PyObject *v = PyDict_GetItemWithError(w->lock_of_ref, key);
	Py_DECREF(key);
	if (v) {
		*lid = PyLong_AsLongLong(v);
		return 0;
	}
	if (PyErr_Occurred())
		return -1;
	/* a LockRef object not seen yet, for a lock that may be: Flattener.lock_ids by (class, addr) */
	PyObject *cls = attr(lock, s_lock_class);
	PyObject *addr = cls ? attr(lock, s_addr) : NULL;
	PyObject *k2 = addr ? PyTuple_Pack(2, cls, addr) : NULL;
	Py_XDECREF(cls);
	Py_XDECREF(addr);
	if (!k2)
		return -1;
	v = PyDict_GetItemWithError(w->lock_ids, k2);
	Py_DECREF(k2);
	if (v) {
		*lid = PyLong_AsLongLong(v);
		return 0;
	}
	if (PyErr_Occurred())
		return -1;
	PyObject *r = PyObject_CallMethodObjArgs(w->flattener, s_lock_m, lock, tid, NULL);
	if (!r)
		return -1;
	*lid = PyLong_AsLongLong(r);
	Py_DECREF(r);
	return PyErr_Occurred() ? -1 : 0;
}

static int lock_index(Walk *w, PyObject *lock, PyObject *tid, int64_t *lid)
{
	size_t slot = ((uintptr_t)lock >> 4) % LOCK_CACHE;
	if (w->cache_ref[slot] == lock) {
		*lid = w->cache_lid[slot];
		return 0;
	}
	int rc = lock_index_slow(w, lock, tid, lid);
	if (rc == 0) {
		w->cache_ref[slot] = lock;
		w->cache_lid[slot] = *lid;
	}
	return rc;
}

static int sleeping(Walk *w, int64_t lid)
{
	PyObject *v = PyList_GetItem(w->sleeping_lock, (Py_ssize_t)lid);
	return v ? PyObject_IsTrue(v) : -1;
}

/* ``write``: 1 for "write", 0 for "read", -1 with ValueError otherwise */
static int mode_write(PyObject *op, PyObject *tid)
{
	PyObject *mode = attr(op, s_mode);
	if (!mode)
		return -1;
	int w = -1;
	int eq = PyObject_RichCompareBool(mode, s_write, Py_EQ);
	if (eq == 1) {
		w = 1;
	} else if (eq == 0) {
		eq = PyObject_RichCompareBool(mode, s_read, Py_EQ);
		if (eq == 1)
			w = 0;
		else if (eq == 0)
			PyErr_Format(PyExc_ValueError, "thread %S: Critical mode must be read or write, not %R", tid, mode);
	}
	Py_DECREF(mode);
	return w;
}

/* Push an op's body (a tuple or list; the reference to it is stolen) to visit in order. Its items
 * are borrowed: the op holds the body, and the workload the op, for the whole walk. */
static int push_body(Stack *s, PyObject *body, PyObject *tid)
{
	if (!PyTuple_Check(body) && !PyList_Check(body)) {
		PyErr_Format(PyExc_TypeError, "thread %S: an op body must be a tuple, not %R", tid, body);
		Py_DECREF(body);
		return -1;
	}
	Py_ssize_t n = PySequence_Fast_GET_SIZE(body);
	PyObject **items = PySequence_Fast_ITEMS(body);
	for (Py_ssize_t k = n - 1; k >= 0; k--) {
		Entry *b = stack_push(s);
		if (!b) {
			Py_DECREF(body);
			return -1;
		}
		b->kind = S_OP;
		b->op = items[k];
	}
	Py_DECREF(body);
	return 0;
}

/* Push what follows a Critical's write body and hold: its release or, for a downgraded section
 * (``down`` not None), the downgrade, the read section's body and hold, then the (read) release */
static int push_downgraded(Stack *s, PyObject *down, int64_t lid, int write, PyObject *tid)
{
	if (down == Py_None)
		return push_ins(s, S_CLOSE, REL, lid, write);
	int64_t dhold = attr_i64(down, s_hold_ns, 0);
	if (dhold == -1 && PyErr_Occurred())
		return -1;
	PyObject *dbody = attr(down, s_body);
	if (!dbody)
		return -1;
	if (push_ins(s, S_CLOSE, REL, lid, 0) < 0 || (dhold > 0 && push_ins(s, S_HOLD, 0, dhold, 0) < 0)) {
		Py_DECREF(dbody);
		return -1;
	}
	if (push_body(s, dbody, tid) < 0)
		return -1;
	return push_ins(s, S_EMIT, DOWNGRADE, lid, 0);
}

#define CHECK(x) do { if ((x) < 0) goto fail; } while (0)
#define CHECK_I64(x) do { if ((x) == -1 && PyErr_Occurred()) goto fail; } while (0)

static int walk_thread(Walk *w, PyObject *th, Stack *stack)
{
	PyObject *ops = NULL, *tid = NULL, *seq = NULL;
	int depth = 0;
	ops = PyObject_GetAttr(th, s_ops);
	tid = ops ? PyObject_GetAttr(th, s_tid) : NULL;
	if (!tid)
		goto fail;
	seq = PySequence_Fast(ops, "Thread.ops must be a sequence");
	if (!seq)
		goto fail;
	Py_ssize_t nops = PySequence_Fast_GET_SIZE(seq);
	PyObject **items = PySequence_Fast_ITEMS(seq);
	for (Py_ssize_t t = 0; t < nops; t++) {
		Entry *top = stack_push(stack);
		if (!top)
			goto fail;
		top->kind = S_OP;
		top->op = items[t];
		while (stack->n) {
			Entry e = stack->v[--stack->n];
			int user = depth == 0;
			if (e.kind == S_HOLD) {
				int64_t ns = scaled(w, e.ins[1]);
				CHECK_I64(ns);
				CHECK(i64s_put(&w->code, KERN, ns, 0, 0, 0));
				CHECK(u8s_put(&w->pts, w->full));
				continue;
			}
			if (e.kind == S_CLOSE || e.kind == S_EMIT) {
				if (e.kind == S_CLOSE)
					depth--;
				CHECK(i64s_put(&w->code, e.ins[0], e.ins[1], e.ins[2], e.ins[3], e.ins[4]));
				CHECK(u8s_put(&w->pts, w->full));
				continue;
			}
			PyObject *op = e.op;
			PyTypeObject *type = Py_TYPE(op);
			if (type != w->think && type != w->block && type != w->critical && type != w->gather &&
			    type != w->span) {
				PyErr_Format(PyExc_TypeError, "thread %S: not an op: %R", tid, op);
				goto fail;
			}
			if (w->open_mode && user) {
				PyObject *at = attr(op, s_at_ns);
				if (!at)
					goto fail;
				if (at != Py_None) {
					int64_t a = PyLong_AsLongLong(at);
					Py_DECREF(at);
					CHECK_I64(a);
					CHECK(i64s_put(&w->code, UNTIL, a, w->until_on_cpu, 0, 0));
					CHECK(u8s_put(&w->pts, 1));
				} else {
					Py_DECREF(at);
				}
			}
			if (type == w->think) {
				int64_t ns = attr_i64(op, s_ns, 0);
				CHECK_I64(ns);
				if (ns > 0) {
					ns = scaled(w, ns);
					CHECK_I64(ns);
					CHECK(i64s_put(&w->code, user ? USER : KERN, ns, 0, 0, 0));
					CHECK(u8s_put(&w->pts, user || w->full));
				}
			} else if (type == w->block) {
				int64_t ns = attr_i64(op, s_ns, 0);
				CHECK_I64(ns);
				CHECK(i64s_put(&w->code, BLOCK, ns, 0, 0, 0));
				CHECK(u8s_put(&w->pts, 1));
			} else if (type == w->critical) {
				int64_t lid, rw, hold;
				PyObject *lock = attr(op, s_lock);
				if (!lock)
					goto fail;
				int rc = lock_index(w, lock, tid, &lid);
				Py_DECREF(lock);
				CHECK(rc);
				int write = mode_write(op, tid);
				CHECK(write);
				int sl = sleeping(w, lid);
				CHECK(sl);
				int acq_point = user || w->full || (w->voluntary && sl);
				/* borrowed once checked: the op holds its downgrade section for the whole walk */
				PyObject *down = attr(op, s_downgrade);
				if (!down)
					goto fail;
				Py_DECREF(down);
				if (down != Py_None) {
					PyObject *py_lid = PyLong_FromLongLong(lid);
					PyObject *r = py_lid ? PyObject_CallMethodObjArgs(w->flattener, s_check_downgrade, op, py_lid,
											  tid, NULL) : NULL;
					Py_XDECREF(py_lid);
					if (!r)
						goto fail;
					Py_DECREF(r);
				}
				rw = attr_i64(op, s_recorded_wait_ns, 1);
				CHECK_I64(rw);
				int derived = attr_true(op, s_derived);
				CHECK(derived);
				/* program.acq_flags: ACQ_DERIVED 1, ACQ_SLEPT 2, ACQ_SPUN 4 (neither: not known) */
				PyObject *slept = attr(op, s_recorded_wait_slept);
				if (!slept)
					goto fail;
				int slept_true = slept == Py_None ? 0 : PyObject_IsTrue(slept);
				int known = slept != Py_None;
				Py_DECREF(slept);
				CHECK(slept_true);
				derived |= known ? (slept_true ? 2 : 4) : 0;
				hold = attr_i64(op, s_hold_ns, 0);
				CHECK_I64(hold);
				PyObject *body = attr(op, s_body);
				if (!body)
					goto fail;
				int has_body = PyObject_IsTrue(body);
				if (has_body < 0) {
					Py_DECREF(body);
					goto fail;
				}
				if (!has_body && down == Py_None) {
					Py_DECREF(body);
					CHECK(i64s_put(&w->code, ACQ, lid, write, rw, derived));
					CHECK(u8s_put(&w->pts, acq_point));
					if (hold > 0) {
						int64_t ns = scaled(w, hold);
						CHECK_I64(ns);
						CHECK(i64s_put(&w->code, KERN, ns, 0, 0, 0));
						CHECK(u8s_put(&w->pts, w->full));
					}
					CHECK(i64s_put(&w->code, REL, lid, write, 0, 0));
					CHECK(u8s_put(&w->pts, w->full));
					continue;
				}
				CHECK(i64s_put(&w->code, ACQ, lid, write, rw, derived));
				CHECK(u8s_put(&w->pts, acq_point));
				depth++;
				/* write body, hold[, downgrade, read body, read hold], release */
				if (push_downgraded(stack, down, lid, write, tid) < 0 ||
				    (hold > 0 && push_ins(stack, S_HOLD, 0, hold, 0) < 0)) {
					Py_DECREF(body);
					goto fail;
				}
				CHECK(push_body(stack, body, tid));
			} else if (type == w->span) {
				PyObject *kind = attr(op, s_kind);
				if (!kind)
					goto fail;
				PyObject *kr = PyDict_GetItemWithError(w->kind_ids, kind); /* borrowed */
				if (kr)
					Py_INCREF(kr);
				else if (!PyErr_Occurred())
					kr = PyObject_CallMethodObjArgs(w->flattener, s_kind_m, kind, NULL);
				Py_DECREF(kind);
				if (!kr)
					goto fail;
				int64_t k = PyLong_AsLongLong(kr);
				Py_DECREF(kr);
				CHECK_I64(k);
				CHECK(i64s_put(&w->code, SPAN_B, k, 0, 0, 0));
				CHECK(u8s_put(&w->pts, user || w->full));
				depth++;
				CHECK(push_ins(stack, S_CLOSE, SPAN_E, k, 0));
				PyObject *body = attr(op, s_body);
				if (!body)
					goto fail;
				CHECK(push_body(stack, body, tid));
			} else { /* Gather: expanded in Python (Flattener.gather) */
				PyObject *r = PyObject_CallMethodObjArgs(w->flattener, s_gather, op,
									 user ? Py_True : Py_False, NULL);
				if (!r)
					goto fail;
				PyObject *gcode = NULL, *gpts = NULL;
				if (!PyArg_ParseTuple(r, "OO", &gcode, &gpts)) {
					Py_DECREF(r);
					goto fail;
				}
				Py_ssize_t n = PyTuple_Size(gcode);
				for (Py_ssize_t j = 0; j + WIDTH <= n; j += WIDTH) {
					int64_t a[WIDTH];
					for (int q = 0; q < WIDTH; q++)
						a[q] = PyLong_AsLongLong(PyTuple_GET_ITEM(gcode, j + q));
					if (PyErr_Occurred() || i64s_put(&w->code, a[0], a[1], a[2], a[3], a[4]) < 0) {
						Py_DECREF(r);
						goto fail;
					}
				}
				const char *p = PyBytes_AsString(gpts);
				Py_ssize_t np_ = PyBytes_Size(gpts);
				for (Py_ssize_t j = 0; p && j < np_; j++) {
					if (u8s_put(&w->pts, p[j]) < 0) {
						Py_DECREF(r);
						goto fail;
					}
				}
				Py_DECREF(r);
				if (!p)
					goto fail;
			}
		}
	}
	CHECK(i64s_put(&w->code, END, 0, 0, 0, 0));
	CHECK(u8s_put(&w->pts, 1));
	Py_DECREF(seq);
	Py_DECREF(tid);
	Py_DECREF(ops);
	return 0;
fail:
	stack->n = 0;
	Py_XDECREF(seq);
	Py_XDECREF(tid);
	Py_XDECREF(ops);
	return -1;
}

/* walk(flattener, threads, (Think, Block, Critical, Gather, Span), open_mode, full, voluntary)
 *   -> (code bytes: int64 WIDTH per instruction, points bytes, start list) */
static PyObject *walk(PyObject *self, PyObject *args)
{
	(void)self;
	PyObject *flattener, *threads, *classes;
	int open_mode, full, voluntary;
	if (!PyArg_ParseTuple(args, "OOOppp", &flattener, &threads, &classes, &open_mode, &full, &voluntary))
		return NULL;
	Walk w = {0};
	PyObject *start = NULL, *tseq = NULL, *result = NULL, *perturbing = NULL;
	Stack stack = {0};
	w.flattener = flattener;
	w.open_mode = open_mode;
	w.full = full;
	w.voluntary = voluntary;
	if (!PyArg_ParseTuple(classes, "O!O!O!O!O!", &PyType_Type, &w.think, &PyType_Type, &w.block, &PyType_Type,
			      &w.critical, &PyType_Type, &w.gather, &PyType_Type, &w.span))
		return NULL;
	w.lock_of_ref = PyObject_GetAttr(flattener, s_lock_of_ref);
	w.sleeping_lock = w.lock_of_ref ? PyObject_GetAttrString(flattener, "sleeping_lock") : NULL;
	w.lock_ids = w.sleeping_lock ? PyObject_GetAttrString(flattener, "lock_ids") : NULL;
	w.kind_ids = w.lock_ids ? PyObject_GetAttrString(flattener, "kind_ids") : NULL;
	w.scale = w.kind_ids ? PyObject_GetAttr(flattener, s_scale) : NULL;
	perturbing = w.scale ? PyObject_GetAttrString(flattener, "perturbing") : NULL;
	if (!perturbing)
		goto out;
	w.perturbing = PyObject_IsTrue(perturbing);
	{
		PyObject *on = PyObject_GetAttrString(flattener, "until_on_cpu"); /* program.Flattener */
		if (!on)
			goto out;
		w.until_on_cpu = PyObject_IsTrue(on);
		Py_DECREF(on);
	}
	if (!PyDict_Check(w.lock_of_ref) || !PyDict_Check(w.lock_ids) || !PyDict_Check(w.kind_ids) ||
	    !PyList_Check(w.sleeping_lock)) {
		PyErr_SetString(PyExc_TypeError, "Flattener: lock_of_ref, lock_ids, kind_ids must be dicts, "
				"sleeping_lock a list");
		goto out;
	}
	tseq = PySequence_Fast(threads, "threads must be a sequence");
	start = PyList_New(0);
	if (!tseq || !start)
		goto out;
	PyObject *zero = PyLong_FromLong(0);
	if (!zero || PyList_Append(start, zero) < 0) {
		Py_XDECREF(zero);
		goto out;
	}
	Py_DECREF(zero);
	Py_ssize_t nt = PySequence_Fast_GET_SIZE(tseq);
	for (Py_ssize_t i = 0; i < nt; i++) {
		if (walk_thread(&w, PySequence_Fast_GET_ITEM(tseq, i), &stack) < 0)
			goto out;
		PyObject *n = PyLong_FromSsize_t(w.pts.n);
		if (!n || PyList_Append(start, n) < 0) {
			Py_XDECREF(n);
			goto out;
		}
		Py_DECREF(n);
	}
	{
		PyObject *pts = PyBytes_FromStringAndSize((const char *)w.pts.v, w.pts.n);
		if (pts && i64s_reserve(&w.code, 1) == 0 &&
		    PyByteArray_Resize(w.code.ba, w.code.n * (Py_ssize_t)sizeof(int64_t)) == 0)
			result = PyTuple_Pack(3, w.code.ba, pts, start);
		Py_XDECREF(pts);
	}
out:
	Py_XDECREF(w.code.ba);
	PyMem_Free(w.pts.v);
	PyMem_Free(stack.v);
	Py_XDECREF(perturbing);
	Py_XDECREF(w.scale);
	Py_XDECREF(w.kind_ids);
	Py_XDECREF(w.lock_ids);
	Py_XDECREF(w.sleeping_lock);
	Py_XDECREF(w.lock_of_ref);
	Py_XDECREF(tseq);
	Py_XDECREF(start);
	return result;
}

static PyMethodDef methods[] = {
	{"walk", walk, METH_VARARGS, "Flattener.walk in C: (code bytes, points bytes, start list)."},
	{NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_mmr_flatten", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__mmr_flatten(void)
{
#define INTERN(var, text) do { var = PyUnicode_InternFromString(text); if (!var) return NULL; } while (0)
	INTERN(s_ops, "ops");
	INTERN(s_tid, "tid");
	INTERN(s_body, "body");
	INTERN(s_lock, "lock");
	INTERN(s_mode, "mode");
	INTERN(s_hold_ns, "hold_ns");
	INTERN(s_at_ns, "at_ns");
	INTERN(s_recorded_wait_ns, "recorded_wait_ns");
	INTERN(s_derived, "derived");
	INTERN(s_recorded_wait_slept, "recorded_wait_slept");
	INTERN(s_ns, "ns");
	INTERN(s_kind, "kind");
	INTERN(s_write, "write");
	INTERN(s_read, "read");
	INTERN(s_lock_of_ref, "lock_of_ref");
	INTERN(s_sleeping_lock, "sleeping_lock");
	INTERN(s_scale, "scale");
	INTERN(s_gather, "gather");
	INTERN(s_kind_m, "kind");
	INTERN(s_lock_m, "lock");
	INTERN(s_lock_class, "lock_class");
	INTERN(s_addr, "addr");
	INTERN(s_downgrade, "downgrade");
	INTERN(s_check_downgrade, "check_downgrade");
#undef INTERN
	return PyModule_Create(&module);
}
