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
 * No GC support: the state refers only to two locks, a list of ints and
 * reason strings (engine.py writes nothing else), which make no cycle. */
#ifndef MOONBUS_CALLSTATE_H
#define MOONBUS_CALLSTATE_H

#include <Python.h>
#include <structmember.h>

/* Every field holds a reference (NULL only if deleted from Python). */
typedef struct {
    PyObject_HEAD
    PyObject *lock;           /* the engine's RLock: one thread uses the engine */
    PyObject *hook_lock;      /* serialises abort() with the end of a call */
    PyObject *chain;          /* list: Lua threads being resumed (pointers) */
    PyObject *abort_reason;   /* str while the running call is aborting, else None */
    PyObject *last_reason;    /* the abort reason of the call that just ended */
    PyObject *pending_reason; /* the reason abort() recorded with pending_token */
    PyObject *token;          /* int: the current (or last) top-level call's token */
    PyObject *pending_token;  /* int: latest token abort() saw before its call was live */
    PyObject *depth;          /* int: 0 idle, 1 in a call, more: nested calls */
    PyObject *in_call;        /* bool: a top-level call is live (abort() may arm it) */
    PyObject *closed;         /* bool: the engine is closed */
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

static int
callstate_init(CallState *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"lock", "hook_lock", NULL};
    PyObject *lock, *hook_lock;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "$OO", kwlist, &lock, &hook_lock))
        return -1;
    PyObject *chain = PyList_New(0);
    if (chain == NULL)
        return -1;
    Py_XSETREF(self->lock, Py_NewRef(lock));
    Py_XSETREF(self->hook_lock, Py_NewRef(hook_lock));
    Py_XSETREF(self->chain, chain);
    PyObject *zero = PyLong_FromLong(0);
    if (zero == NULL)
        return -1;
    CS_SET(self->abort_reason, Py_None);
    CS_SET(self->last_reason, Py_None);
    CS_SET(self->pending_reason, Py_None);
    CS_SET(self->token, zero);
    CS_SET(self->pending_token, zero);
    CS_SET(self->depth, zero);
    CS_SET(self->in_call, Py_False);
    CS_SET(self->closed, Py_False);
    Py_DECREF(zero);
    return 0;
}

static void
callstate_dealloc(CallState *self)
{
    Py_XDECREF(self->lock);
    Py_XDECREF(self->hook_lock);
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

/* Keep in step with PyCallState.__slots__ (a test compares them). */
static PyMemberDef callstate_members[] = {
    {"lock", T_OBJECT_EX, offsetof(CallState, lock), READONLY,
     "the engine's RLock (held by the thread using the engine)"},
    {"hook_lock", T_OBJECT_EX, offsetof(CallState, hook_lock), READONLY,
     "serialises abort() with the end of a call"},
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

static PyTypeObject CallStateType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "moonbus.lua._fastcall.CallState",
    .tp_basicsize = sizeof(CallState),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One LuaEngine's call state, shared with the C delivery (see _callstate.h).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)callstate_init,
    .tp_dealloc = (destructor)callstate_dealloc,
    .tp_members = callstate_members,
};

#endif /* MOONBUS_CALLSTATE_H */
