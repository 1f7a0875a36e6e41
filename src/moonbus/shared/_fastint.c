/*
 * moonbus.shared._fastint: the memory backend's top-level ints as C cells,
 * and their int operations and kind check as C callables a Lua script calls
 * directly.
 *
 * Why: `shared:int("ticks"):increment()` from a Lua handler is the hottest
 * shared-store call of a game loop (issue 16). Deferred handlers run on
 * worker threads with the GIL released (lupa releases it around lua_pcall);
 * every GIL re-acquire waits up to the 5 ms switch interval while the host
 * thread runs Python (the "convoy"). So the common case of the increment and
 * of the kind check runs with no GIL and no lock, on a cell whose value is a
 * C atomic; only the rest takes the GIL and the store's lock.
 *
 * StoreGate()                  one per memory store: ``closed`` (an atomic
 *                              int), set by ``close()`` under the store's lock
 * IntCell(value, gate)         a top-level int of the store: ``value`` (an
 *                              atomic int64), ``alive`` (an atomic flag,
 *                              cleared by ``kill()`` under the store's lock
 *                              before the key leaves the namespace dict)
 *
 * The namespace dict holds an IntCell for every top-level int (table fields
 * stay Python ints): it is created under the store's lock by the first write
 * of an absent key, and never replaced by another value while it is in the
 * dict (another kind can only be written after remove / clear, which kill
 * it). Python reads and writes it with ``value``, ``set``, ``add`` and
 * ``compare_and_set`` (moonbus.shared.memory), still under the lock for the
 * dict and the closed flag; everything that shows values (dump, kind names
 * in errors) shows a cell as the int it holds (``value``).
 *
 * IntOp(values, name, state, fallback, sign, default_one)
 *     op()  / op(n)  -> the new value
 *
 * The common case only: an exact int operand that fits in 64 bits, a current
 * value that is an int cell (or a plain int, or absent), an open store and a
 * result inside the signed 64-bit range. Anything else calls ``fallback``
 * (the handle's Python method, moonbus.shared.memory.MemoryInt) with the
 * arguments as given, which takes the lock itself and raises the store's
 * exact errors. Nothing was changed before. The lock covers the lookup
 * (and the write of a plain int or a new cell); a key's existing cell is
 * added to after the lock is released (it is atomic), so an op that raises
 * (a failing release; a MemoryError for the result, after which the add is
 * undone) has changed nothing and Lua's quick call, which then runs the
 * Python method, never counts twice.
 *
 * KindCheck(values, name, state, kind, fallback)
 *     check() -> None when the key is absent or holds a value of exactly the
 *     type `kind` (an IntCell counts as an int), the store open; otherwise
 *     fallback() (which raises the store's error naming the key and both
 *     kinds).
 *
 * Both have ``quick``: the plain case only, NotImplemented (nothing done)
 * otherwise, never the fallback. ``quick`` is what Lua calls (through
 * lua/_fastconvert.c's quick host call; on NotImplemented Lua calls the
 * object itself through lupa, so every error is still the Python method's),
 * and it caches the cell it found under the lock in the object's ``cell``
 * (for KindCheck: only when ``kind`` is int).
 *
 * The Lua side without the GIL (lua/_fastconvert.c, layouts in _capi.h):
 * with a cached cell that is alive, in an open store, `op(n)` is one CAS
 * loop on ``cell->value`` (mb_cell_add: no change when the result would
 * leave 64 bits) and the check is two atomic loads. With no cached cell, a
 * dead one or a closed store, it takes the GIL and calls ``quick``, which
 * looks the key up again under the lock (and caches the new cell).
 *
 * Thread ownership:
 * - the namespace dicts, ``MemoryState.closed`` and every insertion or
 *   removal of a cell: the store's lock (state.lock), with the GIL;
 * - ``IntCell.value``: any thread, atomically, with or without the GIL;
 * - ``IntCell.alive`` and ``StoreGate.closed``: written 1 -> 0 / 0 -> 1 once,
 *   under the store's lock; read by any thread, without the lock;
 * - ``cell`` of an IntOp / KindCheck: written (with the GIL) only by
 *   ``quick``, and read without the GIL only by the quick host call, both on
 *   the thread running the one Lua state that holds the object (one engine;
 *   lupa's lock makes it one thread at a time, and hands it from thread to
 *   thread with a happens-before). The reference it holds keeps the cell
 *   alive however the dict changes. Python code calling ``quick`` of an
 *   object a Lua state holds, from another thread, would break this: no
 *   moonbus code does (tests call ``quick`` on objects they made).
 *
 * Memory ordering: every atomic access is C11 sequentially consistent (the
 * default). An operation that read ``alive`` = 1 and then lost the race with
 * a remove lands in the removed cell: it counts as done just before the
 * remove, whose key then is gone anyway; nothing that reads the store can
 * see it, and the next call sees ``alive`` = 0 and looks the key up again.
 * A remove / clear / close kills the cell before the key leaves the dict,
 * so once it returned no operation starting later touches the old cell.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <stddef.h>
#include <structmember.h>

#include "../_capi.h"

static PyObject *str_closed;

/* ------------------------------------------------------------ StoreGate */
static PyObject *
gate_close(MbStoreGate *self, PyObject *Py_UNUSED(ignored))
{
    atomic_store(&self->closed, 1);
    Py_RETURN_NONE;
}

static PyObject *
gate_get_closed(MbStoreGate *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(atomic_load(&self->closed));
}

static PyMethodDef gate_methods[] = {
    {"close", (PyCFunction)gate_close, METH_NOARGS,
     "close(): the store is closed, for every cell (under the store's lock; never undone)"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef gate_getset[] = {
    {"closed", (getter)gate_get_closed, NULL, "whether the store is closed", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject StoreGateType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "moonbus.shared._fastint.StoreGate",
    .tp_basicsize = sizeof(MbStoreGate),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A memory store's closed flag, readable without the GIL (see the module source).",
    .tp_new = PyType_GenericNew,
    .tp_methods = gate_methods,
    .tp_getset = gate_getset,
};

/* --------------------------------------------------------------- IntCell */
/* A value for a cell: 0, or -1 with OverflowError / TypeError set. */
static int
cell_value_of(PyObject *obj, int64_t *out)
{
    if (!PyLong_CheckExact(obj)) {
        PyErr_Format(PyExc_TypeError, "an int cell holds an int, not %.80s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    long long v = PyLong_AsLongLong(obj);
    if (v == -1 && PyErr_Occurred())
        return -1;
    *out = (int64_t)v;
    return 0;
}

static MbIntCell *
cell_create(int64_t value, PyObject *gate);

static PyObject *
cell_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"value", "gate", NULL};
    PyObject *value, *gate;
    int64_t v;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO!", kwlist, &value, &StoreGateType, &gate))
        return NULL;
    if (cell_value_of(value, &v) < 0)
        return NULL;
    return (PyObject *)cell_create(v, gate);
}

static void
cell_dealloc(MbIntCell *self)
{
    Py_XDECREF(self->gate);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
cell_get_value(MbIntCell *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLongLong(atomic_load(&self->value));
}

static PyObject *
cell_get_alive(MbIntCell *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(atomic_load(&self->alive));
}

static PyObject *
cell_set(MbIntCell *self, PyObject *value)
{
    int64_t v;
    if (cell_value_of(value, &v) < 0)
        return NULL;
    atomic_store(&self->value, v);
    Py_RETURN_NONE;
}

/* add(delta) -> the new value, or None (nothing changed): delta is not an
 * exact int of 64 bits, the result would not be, the cell is dead or the
 * store closed. The caller (under the store's lock) then takes its slow
 * path: compare_and_set, or the error. */
static PyObject *
cell_add(MbIntCell *self, PyObject *delta)
{
    if (!PyLong_CheckExact(delta))
        Py_RETURN_NONE;
    int overflow = 0;
    long long d = PyLong_AsLongLongAndOverflow(delta, &overflow);
    if (d == -1 && PyErr_Occurred())
        return NULL;
    int64_t result;
    if (overflow || !mb_cell_add(self, (int64_t)d, &result))
        Py_RETURN_NONE;
    return PyLong_FromLongLong(result);
}

/* compare_and_set(expected, new) -> whether value was expected (and is new now). */
static PyObject *
cell_compare_and_set(MbIntCell *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t expected, replacement;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "compare_and_set takes expected and new");
        return NULL;
    }
    if (cell_value_of(args[0], &expected) < 0 || cell_value_of(args[1], &replacement) < 0)
        return NULL;
    return PyBool_FromLong(atomic_compare_exchange_strong(&self->value, &expected, replacement));
}

static PyObject *
cell_kill(MbIntCell *self, PyObject *Py_UNUSED(ignored))
{
    atomic_store(&self->alive, 0);
    Py_RETURN_NONE;
}

static PyObject *
cell_repr(MbIntCell *self)
{
    return PyUnicode_FromFormat("IntCell(%lld%s)", (long long)atomic_load(&self->value),
                                atomic_load(&self->alive) ? "" : ", dead");
}

static PyMethodDef cell_methods[] = {
    {"set", (PyCFunction)cell_set, METH_O, "set(value): store an int of 64 bits"},
    {"add", (PyCFunction)cell_add, METH_O,
     "add(delta) -> the new value, or None: not the plain case, nothing changed"},
    {"compare_and_set", (PyCFunction)(void (*)(void))cell_compare_and_set, METH_FASTCALL,
     "compare_and_set(expected, new) -> whether the value was expected, and is new now"},
    {"kill", (PyCFunction)cell_kill, METH_NOARGS,
     "kill(): the key left the store (under its lock); C callers look it up again"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef cell_getset[] = {
    {"value", (getter)cell_get_value, NULL, "the int it holds now", NULL},
    {"alive", (getter)cell_get_alive, NULL, "whether the key still holds this cell", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject IntCellType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "moonbus.shared._fastint.IntCell",
    .tp_basicsize = sizeof(MbIntCell),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A memory store's top-level int, an atomic int64 (see the module source).",
    .tp_new = cell_new,
    .tp_dealloc = (destructor)cell_dealloc,
    .tp_repr = (reprfunc)cell_repr,
    .tp_methods = cell_methods,
    .tp_getset = cell_getset,
};

static MbIntCell *
cell_create(int64_t value, PyObject *gate)
{
    MbIntCell *cell = PyObject_New(MbIntCell, &IntCellType);
    if (cell == NULL)
        return NULL;
    atomic_init(&cell->value, value);
    atomic_init(&cell->alive, 1);
    cell->gate = (MbStoreGate *)Py_NewRef(gate);
    return cell;
}

/* ----------------------------------------------------------------- IntOp */
typedef struct {
    MbCellUser head;   /* ob_base, vectorcall, the cached cell, sign, default_one */
    PyObject *values;  /* the namespace dict */
    PyObject *name;    /* the key */
    PyObject *state;   /* MemoryState: .closed, .gate */
    PyObject *gate;    /* state.gate: a StoreGate (new keys become cells), or NULL */
    PyObject *acquire; /* state.lock.acquire */
    PyObject *release; /* state.lock.release */
    PyObject *fallback;
} IntOp;

static int
op_traverse(IntOp *self, visitproc visit, void *arg)
{
    Py_VISIT(self->head.cell);
    Py_VISIT(self->values);
    Py_VISIT(self->name);
    Py_VISIT(self->state);
    Py_VISIT(self->gate);
    Py_VISIT(self->acquire);
    Py_VISIT(self->release);
    Py_VISIT(self->fallback);
    return 0;
}

static int
op_clear(IntOp *self)
{
    Py_CLEAR(self->head.cell);
    Py_CLEAR(self->values);
    Py_CLEAR(self->name);
    Py_CLEAR(self->state);
    Py_CLEAR(self->gate);
    Py_CLEAR(self->acquire);
    Py_CLEAR(self->release);
    Py_CLEAR(self->fallback);
    return 0;
}

static void
op_dealloc(IntOp *self)
{
    PyObject_GC_UnTrack(self);
    op_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *op_vectorcall(IntOp *self, PyObject *const *args, size_t nargsf,
                               PyObject *kwnames);

/* The lock's acquire / release and the store gate (NULL: plain ints) of a
 * MemoryState, into the three pointers: 0, or -1 with an error set. */
static int
state_parts(PyObject *state, PyObject **acquire, PyObject **release, PyObject **gate)
{
    PyObject *lock = PyObject_GetAttrString(state, "lock");
    if (lock == NULL)
        return -1;
    *acquire = PyObject_GetAttrString(lock, "acquire");
    *release = PyObject_GetAttrString(lock, "release");
    Py_DECREF(lock);
    if (*acquire == NULL || *release == NULL)
        return -1;
    PyObject *g = PyObject_GetAttrString(state, "gate");
    if (g == NULL)
        return -1;
    if (g != Py_None && !Py_IS_TYPE(g, &StoreGateType)) {
        Py_DECREF(g);
        PyErr_SetString(PyExc_TypeError, "state.gate must be a StoreGate or None");
        return -1;
    }
    if (g == Py_None)
        Py_CLEAR(g);
    *gate = g;
    return 0;
}

static int
op_init(IntOp *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"values", "name", "state", "fallback", "sign", "default_one", NULL};
    PyObject *values, *name, *state, *fallback;
    int sign, default_one;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "$O!UOOip", kwlist, &PyDict_Type, &values,
                                     &name, &state, &fallback, &sign, &default_one))
        return -1;
    if (sign != 1 && sign != -1) {
        PyErr_SetString(PyExc_ValueError, "sign must be 1 or -1");
        return -1;
    }
    if (self->fallback != NULL) {
        /* a Lua state may hold this op and read its cached cell without the
         * GIL: clearing it here (another thread) would free it under that read */
        PyErr_SetString(PyExc_TypeError, "an IntOp is initialised once");
        return -1;
    }
    op_clear(self);
    self->head.vectorcall = (vectorcallfunc)op_vectorcall;
    if (state_parts(state, &self->acquire, &self->release, &self->gate) < 0) {
        op_clear(self);
        return -1;
    }
    self->values = Py_NewRef(values);
    self->name = Py_NewRef(name);
    self->state = Py_NewRef(state);
    self->fallback = Py_NewRef(fallback);
    self->head.sign = sign;
    self->head.default_one = default_one;
    return 0;
}

/* Whether the store is open (state.closed is False): 1, 0, or -1 with an error. */
static int
state_open(PyObject *state)
{
    PyObject *closed = PyObject_GetAttr(state, str_closed);
    if (closed == NULL)
        return -1;
    int open = closed == Py_False;
    Py_DECREF(closed);
    return open;
}

/* Under the lock: the new value, NULL with no error set for "take the
 * fallback", NULL with an error set on failure. ``cache``: keep the cell
 * in self->head.cell (only ``quick``, the Lua state's entry, does).
 * A key that holds a cell is not changed here: ``*found`` gets the cell (a
 * new reference) and NULL comes back with no error; op_try adds to it once
 * the lock is released (the cell is atomic), so that a failing release
 * leaves the value as it was (quick's "raised: nothing done"). */
static PyObject *
apply_locked(IntOp *self, long long delta, int cache, MbIntCell **found)
{
    int open = state_open(self->state);
    if (open <= 0)
        return NULL;
    PyObject *current = PyDict_GetItemWithError(self->values, self->name);
    if (current != NULL && Py_IS_TYPE(current, &IntCellType)) {
        if (cache)
            Py_XSETREF(self->head.cell, (MbIntCell *)Py_NewRef(current));
        *found = (MbIntCell *)Py_NewRef(current);
        return NULL;
    }
    long long value = 0;
    if (current != NULL) {
        if (!PyLong_CheckExact(current))
            return NULL; /* another kind: the Python method names it */
        int overflow = 0;
        value = PyLong_AsLongLongAndOverflow(current, &overflow);
        if (overflow || (value == -1 && PyErr_Occurred()))
            return NULL;
    } else if (PyErr_Occurred()) {
        return NULL;
    }
    long long result;
    if (__builtin_add_overflow(value, delta, &result))
        return NULL; /* outside 64 bits: the Python method raises */
    PyObject *obj = PyLong_FromLongLong(result);
    if (obj == NULL)
        return NULL;
    /* a store of cells makes the key's cell now; a plain int stays one
     * only in a store made while the C path was off (state.gate None) */
    PyObject *stored = obj;
    if (self->gate != NULL) {
        stored = (PyObject *)cell_create(result, self->gate);
        if (stored == NULL) {
            Py_DECREF(obj);
            return NULL;
        }
    }
    int failed = PyDict_SetItem(self->values, self->name, stored) < 0;
    if (!failed && cache && stored != obj)
        Py_XSETREF(self->head.cell, (MbIntCell *)Py_NewRef(stored));
    if (stored != obj)
        Py_DECREF(stored);
    if (failed) {
        Py_DECREF(obj);
        return NULL;
    }
    return obj;
}

/* The plain case in C: the new value, or NULL with no error set when this
 * call is not the plain case (the caller then takes the Python method),
 * NULL with an error set on failure. Nothing is changed unless it returns
 * the new value. */
/* Adds ``delta`` to a key's cell (stolen reference), outside the store's
 * lock: the new value, or NULL with no error when the result would leave 64
 * bits or the cell died (the Python method then decides). If the new value
 * cannot be made into an int object (MemoryError) the add is undone before
 * the error is raised, so an op that raises has changed nothing: Lua's
 * quick call would otherwise run it again through the Python method. */
static PyObject *
cell_apply(MbIntCell *cell, long long delta)
{
    int64_t result;
    if (!mb_cell_add(cell, delta, &result)) {
        Py_DECREF(cell);
        return NULL;
    }
    PyObject *obj = PyLong_FromLongLong(result);
    if (obj == NULL) {
        int64_t ignored;
        if (delta == LLONG_MIN) { /* -delta does not fit: undo in two steps */
            (void)mb_cell_add(cell, LLONG_MAX, &ignored);
            (void)mb_cell_add(cell, 1, &ignored);
        } else {
            (void)mb_cell_add(cell, -delta, &ignored);
        }
    }
    Py_DECREF(cell);
    return obj;
}

static PyObject *
op_try(IntOp *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, int cache)
{
    long long n = 1;
    int usable = kwnames == NULL && (nargs == 1 || (nargs == 0 && self->head.default_one));
    if (usable && nargs == 1) {
        int overflow = 0;
        usable = PyLong_CheckExact(args[0]);
        if (usable) {
            n = PyLong_AsLongLongAndOverflow(args[0], &overflow);
            if (n == -1 && PyErr_Occurred())
                return NULL;
            usable = !overflow && !(self->head.sign < 0 && n == LLONG_MIN);
        }
    }
    if (!usable)
        return NULL;
    if (self->fallback == NULL) { /* never initialised, or its __init__ failed */
        PyErr_SetString(PyExc_TypeError, "this IntOp is not initialised");
        return NULL;
    }
    if (mb_call_noargs(self->acquire) < 0)
        return NULL;
    MbIntCell *cell = NULL;
    long long delta = self->head.sign * n;
    PyObject *result = apply_locked(self, delta, cache, &cell);
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    int released = mb_call_noargs(self->release);
    if (released < 0) {
        Py_XDECREF(result);
        Py_XDECREF(cell);
        if (type != NULL) {
            PyErr_WriteUnraisable(self->release);
            PyErr_Restore(type, value, tb);
        }
        return NULL;
    }
    PyErr_Restore(type, value, tb);
    if (cell == NULL)
        return result;
    return cell_apply(cell, delta);
}

static PyObject *
op_vectorcall(IntOp *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    PyObject *result = op_try(self, args, PyVectorcall_NARGS(nargsf), kwnames, 0);
    if (result != NULL || PyErr_Occurred())
        return result;
    return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
}

/* op.quick(*args): the new value, or NotImplemented (nothing done) for
 * anything but the plain case. What Lua's quick host call runs
 * (lua/_fastconvert.c) when it has no live cached cell: the caller then
 * calls the op through lupa, which runs the Python method and raises its
 * exact error. Caches the key's cell (see the module comment: the Lua
 * state's thread only). */
static PyObject *
op_quick(IntOp *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *result = op_try(self, args, nargs, NULL, 1);
    if (result != NULL || PyErr_Occurred())
        return result;
    Py_RETURN_NOTIMPLEMENTED;
}

static PyObject *
user_get_cell(MbCellUser *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->cell != NULL ? (PyObject *)self->cell : Py_None);
}

static PyMemberDef user_members[] = {
    {"lua_calls_without_gil", T_ULONGLONG, offsetof(MbCellUser, calls_without_gil), READONLY,
     "calls the Lua side did on the cached cell, with no GIL"},
    {"lua_calls_with_gil", T_ULONGLONG, offsetof(MbCellUser, calls_with_gil), READONLY,
     "calls the Lua side handed to quick, with the GIL"},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef user_getset[] = {
    {"cell", (getter)user_get_cell, NULL,
     "the cell quick found last (None: none yet); what Lua uses without the GIL", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef op_methods[] = {
    {"quick", (PyCFunction)(void (*)(void))op_quick, METH_FASTCALL,
     "quick(*args) -> the new value, or NotImplemented: not the plain case, nothing done"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject IntOpType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "moonbus.shared._fastint.IntOp",
    .tp_basicsize = sizeof(IntOp),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "One int operation of one memory-backend key (see the module source).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)op_init,
    .tp_dealloc = (destructor)op_dealloc,
    .tp_traverse = (traverseproc)op_traverse,
    .tp_clear = (inquiry)op_clear,
    .tp_methods = op_methods,
    .tp_members = user_members,
    .tp_getset = user_getset,
    .tp_vectorcall_offset = offsetof(IntOp, head.vectorcall),
    .tp_call = PyVectorcall_Call,
};

/* ------------------------------------------------------------ KindCheck */
typedef struct {
    MbCellUser head; /* the cached cell: only when kind is int */
    PyObject *values, *name, *state, *gate, *acquire, *release, *fallback;
    PyTypeObject *kind;
} KindCheck;

static int
check_traverse(KindCheck *self, visitproc visit, void *arg)
{
    Py_VISIT(self->head.cell);
    Py_VISIT(self->values);
    Py_VISIT(self->name);
    Py_VISIT(self->state);
    Py_VISIT(self->gate);
    Py_VISIT(self->acquire);
    Py_VISIT(self->release);
    Py_VISIT(self->fallback);
    Py_VISIT(self->kind);
    return 0;
}

static int
check_clear(KindCheck *self)
{
    Py_CLEAR(self->head.cell);
    Py_CLEAR(self->values);
    Py_CLEAR(self->name);
    Py_CLEAR(self->state);
    Py_CLEAR(self->gate);
    Py_CLEAR(self->acquire);
    Py_CLEAR(self->release);
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->kind);
    return 0;
}

static void
check_dealloc(KindCheck *self)
{
    PyObject_GC_UnTrack(self);
    check_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *check_vectorcall(KindCheck *self, PyObject *const *args, size_t nargsf,
                                  PyObject *kwnames);

static int
check_init(KindCheck *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"values", "name", "state", "kind", "fallback", NULL};
    PyObject *values, *name, *state, *kind, *fallback;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "$O!UOO!O", kwlist, &PyDict_Type, &values,
                                     &name, &state, &PyType_Type, &kind, &fallback))
        return -1;
    if (self->fallback != NULL) { /* see op_init */
        PyErr_SetString(PyExc_TypeError, "a KindCheck is initialised once");
        return -1;
    }
    check_clear(self);
    self->head.vectorcall = (vectorcallfunc)check_vectorcall;
    if (state_parts(state, &self->acquire, &self->release, &self->gate) < 0) {
        check_clear(self);
        return -1;
    }
    self->values = Py_NewRef(values);
    self->name = Py_NewRef(name);
    self->state = Py_NewRef(state);
    self->kind = (PyTypeObject *)Py_NewRef(kind);
    self->fallback = Py_NewRef(fallback);
    return 0;
}

/* Under the lock: 1 the key is absent or of the kind, the store open; 0 it
 * is not (the fallback says why); -1 with an error set. ``cache``: keep an
 * int key's cell in self->head.cell. */
static int
kind_matches_locked(KindCheck *self, int cache)
{
    int open = state_open(self->state);
    if (open <= 0)
        return open;
    PyObject *current = PyDict_GetItemWithError(self->values, self->name);
    if (current == NULL)
        return PyErr_Occurred() ? -1 : 1;
    if (Py_IS_TYPE(current, &IntCellType)) {
        if (self->kind != &PyLong_Type)
            return 0;
        if (cache)
            Py_XSETREF(self->head.cell, (MbIntCell *)Py_NewRef(current));
        return 1;
    }
    return Py_IS_TYPE(current, self->kind);
}

/* 1 the key is absent or of the kind, the store open; 0 not; -1 error. */
static int
check_locked(KindCheck *self, int cache)
{
    if (self->fallback == NULL) { /* never initialised, or its __init__ failed */
        PyErr_SetString(PyExc_TypeError, "this KindCheck is not initialised");
        return -1;
    }
    if (mb_call_noargs(self->acquire) < 0)
        return -1;
    int matches = kind_matches_locked(self, cache);
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (mb_call_noargs(self->release) < 0) {
        if (type != NULL) {
            PyErr_WriteUnraisable(self->release);
            PyErr_Restore(type, value, tb);
        }
        return -1;
    }
    PyErr_Restore(type, value, tb);
    return matches;
}

static PyObject *
check_vectorcall(KindCheck *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 0 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "a kind check takes no arguments");
        return NULL;
    }
    int matches = check_locked(self, 0);
    if (matches < 0)
        return NULL;
    if (matches)
        Py_RETURN_NONE;
    return PyObject_CallNoArgs(self->fallback);
}

/* check.quick() -> True when the key is absent or of the kind and the store
 * open, else NotImplemented: the caller then runs the full check (through
 * lupa), whose fallback raises the store's error. Caches an int key's cell
 * (the Lua state's thread only, see the module comment). */
static PyObject *
check_quick(KindCheck *self, PyObject *Py_UNUSED(ignored))
{
    int matches = check_locked(self, 1);
    if (matches < 0)
        return NULL;
    if (matches)
        Py_RETURN_TRUE;
    Py_RETURN_NOTIMPLEMENTED;
}

static PyMethodDef check_methods[] = {
    {"quick", (PyCFunction)check_quick, METH_NOARGS,
     "quick() -> True when the kind matches, or NotImplemented: the full check decides"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject KindCheckType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "moonbus.shared._fastint.KindCheck",
    .tp_basicsize = sizeof(KindCheck),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Whether a memory-backend key still holds one kind (see the module source).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)check_init,
    .tp_dealloc = (destructor)check_dealloc,
    .tp_traverse = (traverseproc)check_traverse,
    .tp_clear = (inquiry)check_clear,
    .tp_methods = check_methods,
    .tp_members = user_members,
    .tp_getset = user_getset,
    .tp_vectorcall_offset = offsetof(KindCheck, head.vectorcall),
    .tp_call = PyVectorcall_Call,
};

static struct PyModuleDef fastint_module = {
    PyModuleDef_HEAD_INIT, "_fastint", "Memory-backend int cells and operations, in C.", -1,
    NULL};

PyMODINIT_FUNC
PyInit__fastint(void)
{
    str_closed = PyUnicode_InternFromString("closed");
    if (str_closed == NULL || PyType_Ready(&StoreGateType) < 0 ||
        PyType_Ready(&IntCellType) < 0 || PyType_Ready(&IntOpType) < 0 ||
        PyType_Ready(&KindCheckType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&fastint_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "StoreGate", (PyObject *)&StoreGateType) < 0 ||
        PyModule_AddObjectRef(m, "IntCell", (PyObject *)&IntCellType) < 0 ||
        PyModule_AddObjectRef(m, "IntOp", (PyObject *)&IntOpType) < 0 ||
        PyModule_AddObjectRef(m, "KindCheck", (PyObject *)&KindCheckType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
