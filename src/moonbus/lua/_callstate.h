/* moonbus.lua._fastcall.CallState: the call state of one LuaEngine, owned
 * by this type so that LuaEngine (engine.py) and the C delivery
 * (_fastcall.c) share it by layout, not by attribute name.
 *
 * Why: the C delivery follows LuaEngine._guarded and _end_call step by
 * step, so it must read and write the same abort-token state the Python
 * path does. It used to find that state in the engine's __dict__ under
 * private names, and a rename there silently sent every event to the
 * Python path. Here the state is this struct; engine.py reads and writes it
 * through the members below (`engine.call_state.<name>`), C through the
 * fields. moonbus.lua.call_state.PyCallState is the pure-Python twin (the
 * reference, used when the C paths are off); its __slots__ are exactly the
 * member names below, which tests/lua/test_call_state.py checks.
 *
 * The protocol (what each field means, who writes it, under which lock) is
 * engine.py's, documented there: the engine's owner thread writes `token`,
 * `in_call`, `depth` and `closed` holding `lock`; `abort()` (any thread)
 * reads `token`/`in_call` and writes `pending_*`/`abort_reason` holding
 * `hook_lock`; `chain` (Lua thread pointers being resumed) and
 * `last_reason` change under `hook_lock`. Every access, from Python or C,
 * holds the GIL, so each field reads whole. `lock`, `hook_lock` and the
 * `chain` list itself are fixed when the state is made.
 *
 * Why every field is an object slot (T_OBJECT_EX), not a C long long or
 * char: engine.py's own hot path (LuaEngine._guarded) touches about a dozen
 * of them per call, and CPython specialises attribute access only for
 * object slots; a typed member costs ~45 ns per access against ~9 ns
 * (measured on 3.11), which made every Python-path call ~10% slower. C
 * still reads them at fixed offsets, checking each value's type: a field
 * that holds anything unexpected (or was deleted) makes the delivery hand
 * the event to the Python path, never guess.
 *
 * The two locks (issue 16) are C locks whose state lives inside this struct
 * (MbLock, below), not Python threading locks: the C delivery takes and
 * releases them with direct C calls on memory it reads anyway, instead of
 * six Python calls through bound methods, each touching its own cold method
 * object, lock object and semaphore (at 10,000 scripts every delivery finds
 * them out of cache). Python sees them as EngineLock objects (`lock`,
 * `hook_lock`: acquire/release/with, blocking with the GIL released, as
 * threading locks do). The pure-Python twin keeps threading locks.
 *
 * No GC support: the state refers only to a list of ints and reason strings
 * (engine.py writes nothing else), which make no cycle; an EngineLock holds
 * its CallState, the CallState only a borrowed pointer back (see below). */
#ifndef MOONBUS_CALLSTATE_H
#define MOONBUS_CALLSTATE_H

#include <Python.h>
#include <pythread.h>
#include <limits.h>
#include <time.h>
#include <structmember.h>

/* ---------------------------------------------------------------- MbLock
 * A lock for threads that hold the GIL whenever they acquire or release it
 * (every user of the engine's locks does: engine.py, the watchdog's abort,
 * the C delivery). The algorithm is lupa's / fastrlock's FastRLock: because
 * every change of `owner`, `count`, `pending` and `is_locked` happens with
 * the GIL held, an uncontended acquire is two stores, no OS lock. Only when a
 * second thread finds it held does that thread take the OS lock `real` on
 * the owner's behalf (the owner then releases `real` when its count drops to
 * 0) and wait on `real` with the GIL released, like threading locks do (a
 * signal handler can interrupt the wait, as it can threading's). So the lock
 * cannot deadlock with the GIL: nobody waits for it while holding the GIL.
 *
 * `reentrant` (the engine's `lock`, an RLock before): its owner may acquire
 * it again (a Python API called from Lua calls back into the same engine).
 * Not reentrant (`hook_lock`, a Lock before): a second acquire by the same
 * thread waits, as threading.Lock's does, and any thread may release it. */
typedef struct {
    PyThread_type_lock real; /* the OS lock: held while someone waits, see above */
    unsigned long owner;     /* PyThread_get_thread_ident() of the holder */
    long count;              /* 0: free; > 1: re-entered (reentrant only) */
    int pending;             /* threads waiting on `real` */
    char is_locked;          /* `real` is held, for the owner or by it */
    char reentrant;
} MbLock;

static int
mblock_init(MbLock *l, int reentrant)
{
    l->real = PyThread_allocate_lock();
    if (l->real == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    l->owner = 0;
    l->count = 0;
    l->pending = 0;
    l->is_locked = 0;
    l->reentrant = (char)reentrant;
    return 0;
}

static void
mblock_free(MbLock *l)
{
    if (l->real != NULL) {
        if (l->is_locked)
            PyThread_release_lock(l->real);
        PyThread_free_lock(l->real);
        l->real = NULL;
    }
}

/* CLOCK_MONOTONIC in microseconds (what a timed wait counts down). */
static long long
mblock_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

/* The contended case (FastRLock's _acquire_lock): 1 acquired, 0 not within
 * `timeout_us` (-1: wait for ever, 0: do not wait), -1 with an error set (a
 * signal handler raised while waiting). GIL held. */
static int
mblock_acquire_slow(MbLock *l, unsigned long me, PY_TIMEOUT_T timeout_us)
{
    if (!l->is_locked && !l->pending) {
        /* The owner took it without `real` (it was free then): take `real`
         * for it now, so that it wakes us when done. `real` is free here:
         * only threads holding the GIL take it, and not in this state. Not
         * waiting, and keeping the GIL, so no one else can come between. */
        if (!PyThread_acquire_lock(l->real, NOWAIT_LOCK)) {
            PyErr_SetString(PyExc_RuntimeError, "engine lock: inconsistent state");
            return -1;
        }
        l->is_locked = 1;
    }
    if (timeout_us == 0)
        return 0;
    l->pending++;
    PyLockStatus r = PY_LOCK_FAILURE;
    long long deadline = timeout_us > 0 ? mblock_now_us() + (long long)timeout_us : 0;
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        r = PyThread_acquire_lock_timed(l->real, timeout_us, 1);
        Py_END_ALLOW_THREADS
        if (r != PY_LOCK_INTR)
            break;
        /* interrupted by a signal: run its handlers (they may raise), then
         * wait for what is left, as threading's acquire does */
        if (Py_MakePendingCalls() < 0) {
            l->pending--;
            return -1;
        }
        if (timeout_us > 0) {
            long long left = deadline - mblock_now_us();
            if (left <= 0) {
                r = PY_LOCK_FAILURE;
                break;
            }
            timeout_us = (PY_TIMEOUT_T)left;
        }
    }
    l->pending--;
    if (r != PY_LOCK_ACQUIRED)
        return 0;
    l->is_locked = 1;
    l->owner = me;
    l->count = 1;
    return 1;
}

/* Acquire (FastRLock's lock_lock): 1, 0 (timed out / would block), -1 with
 * an error set. GIL held. */
static inline int
mblock_acquire(MbLock *l, PY_TIMEOUT_T timeout_us)
{
    unsigned long me = PyThread_get_thread_ident();
    if (l->count) {
        if (l->owner == me && l->reentrant) {
            if (l->count == LONG_MAX) {
                PyErr_SetString(PyExc_OverflowError, "engine lock acquired too many times");
                return -1;
            }
            l->count++;
            return 1;
        }
    } else if (!l->pending) {
        l->owner = me;
        l->count = 1;
        return 1;
    }
    return mblock_acquire_slow(l, me, timeout_us);
}

/* Release: 0, or -1 with RuntimeError when this thread may not release it
 * (not held; a reentrant lock held by another thread). GIL held. */
static inline int
mblock_release(MbLock *l)
{
    if (l->count == 0 || (l->reentrant && l->owner != PyThread_get_thread_ident())) {
        PyErr_SetString(PyExc_RuntimeError, "cannot release un-acquired lock");
        return -1;
    }
    if (--l->count == 0) {
        l->owner = 0;
        if (l->is_locked) {
            l->is_locked = 0;
            PyThread_release_lock(l->real); /* a waiter takes it over */
        }
    }
    return 0;
}

/* mblock_release keeping the error already set (the release comes first). */
static void
mblock_release_keeping_error(MbLock *l)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (mblock_release(l) < 0) {
        if (type == NULL)
            return;
        PyErr_WriteUnraisable(NULL);
    }
    PyErr_Restore(type, value, tb);
}

/* ------------------------------------------------------------- CallState */
struct EngineLock;

/* Every object field holds a reference (NULL only if deleted from Python).
 * The fields the C delivery touches on every call come first, with the
 * engine lock, so that one delivery reads as few cache lines as it can. */
typedef struct {
    PyObject_HEAD
    MbLock lock;              /* the engine's lock: one thread uses the engine */
    PyObject *closed;         /* bool: the engine is closed */
    PyObject *depth;          /* int: 0 idle, 1 in a call, more: nested calls */
    PyObject *token;          /* int: the current (or last) top-level call's token */
    PyObject *pending_token;  /* int: latest token abort() saw before its call was live */
    PyObject *in_call;        /* bool: a top-level call is live (abort() may arm it) */
    PyObject *abort_reason;   /* str while the running call is aborting, else None */
    PyObject *chain;          /* list: Lua threads being resumed (pointers) */
    PyObject *last_reason;    /* the abort reason of the call that just ended */
    MbLock hook_lock;         /* serialises abort() with the end of a call */
    PyObject *pending_reason; /* the reason abort() recorded with pending_token */
    /* The EngineLock objects Python sees, made on first use; borrowed (each
     * holds this state and clears its pointer here when it goes), so no
     * cycle. Only touched with the GIL held. */
    struct EngineLock *lock_view, *hook_view;
} CallState;

/* A reason that is NULL (deleted from Python) reads as None in C. */
#define CS_REASON(obj) ((obj) != NULL ? (obj) : Py_None)

/* Replaces field `slot` with a new reference to `value`. */
#define CS_SET(slot, value) Py_XSETREF(slot, Py_NewRef(value))

/* The field `v` as a C long long: 1; 0 if it is not an exact int (or was
 * deleted) or does not fit; -1 with an error set. */
static int
cs_long(PyObject *v, long long *out)
{
    if (v == NULL || !PyLong_CheckExact(v))
        return 0;
    int overflow = 0;
    *out = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (*out == -1 && PyErr_Occurred())
        return -1;
    return !overflow;
}

/* ------------------------------------------------------------ EngineLock
 * One of a CallState's locks as Python sees it: acquire(blocking=True,
 * timeout=-1), release(), `with`, locked(), like threading's locks. It holds
 * its CallState (the lock's memory is there). */
typedef struct EngineLock {
    PyObject_HEAD
    CallState *cs;
    MbLock *lock; /* &cs->lock or &cs->hook_lock */
} EngineLock;

static PyTypeObject EngineLockType;

static void
enginelock_dealloc(EngineLock *self)
{
    if (self->cs != NULL) {
        if (self->cs->lock_view == self)
            self->cs->lock_view = NULL;
        if (self->cs->hook_view == self)
            self->cs->hook_view = NULL;
        Py_DECREF(self->cs);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* timeout seconds (-1: none) as threading reads it, into microseconds
 * (-1: wait for ever, 0: do not wait): 0, or -1 with an error set */
static int
enginelock_timeout(int blocking, PyObject *timeout_obj, PY_TIMEOUT_T *out)
{
    double timeout = -1.0;
    if (timeout_obj != NULL) {
        timeout = PyFloat_AsDouble(timeout_obj);
        if (timeout == -1.0 && PyErr_Occurred())
            return -1;
        if (timeout != timeout) { /* NaN: threading refuses it too (else a cast UB: wait for ever) */
            PyErr_SetString(PyExc_ValueError, "Invalid value NaN (not a number)");
            return -1;
        }
    }
    if (!blocking && timeout != -1.0) {
        PyErr_SetString(PyExc_ValueError, "can't specify a timeout for a non-blocking call");
        return -1;
    }
    if (timeout < 0 && timeout != -1.0) {
        PyErr_SetString(PyExc_ValueError, "timeout value must be a non-negative number");
        return -1;
    }
    if (!blocking) {
        *out = 0;
    } else if (timeout == -1.0) {
        *out = -1;
    } else {
        double us = timeout * 1e6;
        if (us >= (double)PY_TIMEOUT_MAX) {
            PyErr_SetString(PyExc_OverflowError, "timeout value is too large");
            return -1;
        }
        *out = (PY_TIMEOUT_T)us;
    }
    return 0;
}

static PyObject *
enginelock_acquire(EngineLock *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"blocking", "timeout", NULL};
    int blocking = 1;
    PyObject *timeout_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|pO:acquire", kwlist, &blocking,
                                     &timeout_obj))
        return NULL;
    PY_TIMEOUT_T timeout_us;
    if (enginelock_timeout(blocking, timeout_obj, &timeout_us) < 0)
        return NULL;
    int r = mblock_acquire(self->lock, timeout_us);
    if (r < 0)
        return NULL;
    return PyBool_FromLong(r);
}

static PyObject *
enginelock_enter(EngineLock *self, PyObject *unused)
{
    if (mblock_acquire(self->lock, -1) < 0)
        return NULL;
    Py_RETURN_TRUE;
}

static PyObject *
enginelock_release(EngineLock *self, PyObject *unused)
{
    if (mblock_release(self->lock) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
enginelock_exit(EngineLock *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (mblock_release(self->lock) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
enginelock_locked(EngineLock *self, PyObject *unused)
{
    return PyBool_FromLong(self->lock->count > 0);
}

static PyObject *
enginelock_is_owned(EngineLock *self, PyObject *unused)
{
    return PyBool_FromLong(self->lock->count > 0 &&
                           self->lock->owner == PyThread_get_thread_ident());
}

static PyObject *
enginelock_repr(EngineLock *self)
{
    MbLock *l = self->lock;
    return PyUnicode_FromFormat("<%s %s %s owner=%lu count=%ld at %p>",
                                l->count ? "locked" : "unlocked",
                                l->reentrant ? "reentrant" : "plain",
                                Py_TYPE(self)->tp_name, l->owner, l->count, self);
}

static PyMethodDef enginelock_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))enginelock_acquire, METH_VARARGS | METH_KEYWORDS,
     "acquire(blocking=True, timeout=-1) -> bool, as threading's locks (GIL released while waiting)."},
    {"release", (PyCFunction)enginelock_release, METH_NOARGS, "Release the lock."},
    {"__enter__", (PyCFunction)enginelock_enter, METH_NOARGS, "acquire()"},
    {"__exit__", (PyCFunction)(void (*)(void))enginelock_exit, METH_FASTCALL, "release()"},
    {"locked", (PyCFunction)enginelock_locked, METH_NOARGS, "Whether some thread holds it."},
    {"_is_owned", (PyCFunction)enginelock_is_owned, METH_NOARGS,
     "Whether this thread holds it (as threading.RLock's)."},
    {NULL, NULL, 0, NULL}};

static PyTypeObject EngineLockType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "moonbus.lua._fastcall.EngineLock",
    .tp_basicsize = sizeof(EngineLock),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One of a CallState's C locks (see _callstate.h); made by the CallState only.",
    .tp_dealloc = (destructor)enginelock_dealloc,
    .tp_repr = (reprfunc)enginelock_repr,
    .tp_methods = enginelock_methods,
};

/* The CallState's view of `lock` (a new reference): the existing one, else
 * a new EngineLock remembered (borrowed) in *view. */
static PyObject *
callstate_view(CallState *self, MbLock *lock, EngineLock **view)
{
    if (*view != NULL)
        return Py_NewRef((PyObject *)*view);
    EngineLock *made = PyObject_New(EngineLock, &EngineLockType);
    if (made == NULL)
        return NULL;
    made->cs = (CallState *)Py_NewRef((PyObject *)self);
    made->lock = lock;
    *view = made;
    return (PyObject *)made;
}

static PyObject *
callstate_get_lock(CallState *self, void *closure)
{
    return callstate_view(self, &self->lock, &self->lock_view);
}

static PyObject *
callstate_get_hook_lock(CallState *self, void *closure)
{
    return callstate_view(self, &self->hook_lock, &self->hook_view);
}

static void callstate_dealloc(CallState *self);

/* A fresh state with its two locks (no arguments: the locks are its own). */
static PyObject *
callstate_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwds != NULL && PyDict_GET_SIZE(kwds) != 0)) {
        PyErr_SetString(PyExc_TypeError, "CallState() takes no arguments (its locks are its own)");
        return NULL;
    }
    CallState *self = (CallState *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    /* tp_alloc zeroed it: a failure below deallocates a consistent state */
    if (mblock_init(&self->lock, 1) < 0 || mblock_init(&self->hook_lock, 0) < 0 ||
        (self->chain = PyList_New(0)) == NULL ||
        (self->token = PyLong_FromLong(0)) == NULL) {
        callstate_dealloc(self);
        return NULL;
    }
    self->pending_token = Py_NewRef(self->token);
    self->depth = Py_NewRef(self->token);
    self->abort_reason = Py_NewRef(Py_None);
    self->last_reason = Py_NewRef(Py_None);
    self->pending_reason = Py_NewRef(Py_None);
    self->in_call = Py_NewRef(Py_False);
    self->closed = Py_NewRef(Py_False);
    return (PyObject *)self;
}

static void
callstate_dealloc(CallState *self)
{
    /* no view is alive: each holds a reference to this state */
    mblock_free(&self->lock);
    mblock_free(&self->hook_lock);
    Py_XDECREF(self->chain);
    Py_XDECREF(self->abort_reason);
    Py_XDECREF(self->last_reason);
    Py_XDECREF(self->pending_reason);
    Py_XDECREF(self->token);
    Py_XDECREF(self->pending_token);
    Py_XDECREF(self->depth);
    Py_XDECREF(self->in_call);
    Py_XDECREF(self->closed);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Keep in step with PyCallState.__slots__ (a test compares them with these
 * members and the two lock getters below). */
static PyMemberDef callstate_members[] = {
    {"chain", T_OBJECT_EX, offsetof(CallState, chain), READONLY,
     "Lua threads being resumed in the running call (pointers), under hook_lock"},
    {"abort_reason", T_OBJECT_EX, offsetof(CallState, abort_reason), 0,
     "why the running call is aborting, or None"},
    {"last_reason", T_OBJECT_EX, offsetof(CallState, last_reason), 0,
     "the abort reason of the call that just ended, or None"},
    {"pending_reason", T_OBJECT_EX, offsetof(CallState, pending_reason), 0,
     "the reason recorded with pending_token"},
    {"token", T_OBJECT_EX, offsetof(CallState, token), 0,
     "int: the current (or last) top-level call's token"},
    {"pending_token", T_OBJECT_EX, offsetof(CallState, pending_token), 0,
     "int: latest token abort() saw before its call was live"},
    {"depth", T_OBJECT_EX, offsetof(CallState, depth), 0,
     "int: 0 idle, 1 in a call, more: nested"},
    {"in_call", T_OBJECT_EX, offsetof(CallState, in_call), 0,
     "bool: a top-level call is live"},
    {"closed", T_OBJECT_EX, offsetof(CallState, closed), 0, "bool: the engine is closed"},
    {NULL}};

/* The locks: read-only, the same object at every read while one is alive. */
static PyGetSetDef callstate_getset[] = {
    {"lock", (getter)callstate_get_lock, NULL,
     "the engine's reentrant lock (held by the thread using the engine)", NULL},
    {"hook_lock", (getter)callstate_get_hook_lock, NULL,
     "serialises abort() with the end of a call", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyTypeObject CallStateType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "moonbus.lua._fastcall.CallState",
    .tp_basicsize = sizeof(CallState),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One LuaEngine's call state and locks, shared with the C delivery (see _callstate.h).",
    .tp_new = callstate_new,
    .tp_dealloc = (destructor)callstate_dealloc,
    .tp_members = callstate_members,
    .tp_getset = callstate_getset,
};

#endif /* MOONBUS_CALLSTATE_H */
