/*
 * moonbus.shared._fastint: the memory backend's int increment/decrement/add/
 * subtract, as C callables a Lua script calls directly.
 *
 * Why: `counter:increment()` from Lua is the hottest shared-store call. Through
 * the Python method it costs lupa's call (~140 ns) plus ~200 ns of Python
 * (frame, lock, dict, range check); this does the same steps in C.
 *
 * IntOp(values, name, state, fallback, sign, default_one)
 *     op()  / op(n)  -> the new value
 *
 * The common case only: an exact int operand that fits in 64 bits, a current
 * value that is an int (or absent), an open store and a result inside the
 * signed 64-bit range. Anything else calls ``fallback`` (the handle's Python
 * method, moonbus.shared.memory.MemoryInt) with the arguments as given, which
 * takes the lock itself and raises the store's exact errors. The fallback runs
 * after this code released the lock, so the operation is linearized where
 * the Python method takes it; nothing was changed before.
 *
 * KindCheck(values, name, state, kind, fallback)
 *     check() -> None when the key is absent or holds a value of exactly the
 *     type `kind`, the store open; otherwise fallback() (which raises the
 *     store's error naming the key and both kinds).
 *
 * Why: `shared:int(name)` in Lua returns a cached handle but must still
 * refuse a name that now holds another kind (SPEC §3), on every call. In
 * Python that check built a handle and cost ~3 us, most of a handler that
 * increments a counter per event; this is one locked dict lookup.
 *
 * Both have ``quick``: the plain case only, NotImplemented (nothing done)
 * otherwise, never the fallback. Lua calls it with no lupa call in between
 * (moonbus.lua.fastconvert.QuickCalls) and, on NotImplemented, calls the
 * object itself through lupa, so every error is still the Python method's.
 *
 * Threads: any thread, GIL held. Every read and write of ``values`` happens
 * under the store's lock (state.lock, the same threading.Lock the Python
 * handles take), so C and Python operations interleave atomically.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>

#include "../_capi.h"

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *values;  /* the namespace dict */
    PyObject *name;    /* the key */
    PyObject *state;   /* MemoryState: .closed */
    PyObject *acquire; /* state.lock.acquire */
    PyObject *release; /* state.lock.release */
    PyObject *fallback;
    int sign;          /* +1: increment/add, -1: decrement/subtract */
    int default_one;   /* op() means op(1) */
} IntOp;

static PyObject *str_closed;

static int
op_traverse(IntOp *self, visitproc visit, void *arg)
{
    Py_VISIT(self->values);
    Py_VISIT(self->name);
    Py_VISIT(self->state);
    Py_VISIT(self->acquire);
    Py_VISIT(self->release);
    Py_VISIT(self->fallback);
    return 0;
}

static int
op_clear(IntOp *self)
{
    Py_CLEAR(self->values);
    Py_CLEAR(self->name);
    Py_CLEAR(self->state);
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
    op_clear(self);
    self->vectorcall = (vectorcallfunc)op_vectorcall;
    PyObject *lock = PyObject_GetAttrString(state, "lock");
    if (lock == NULL)
        return -1;
    self->acquire = PyObject_GetAttrString(lock, "acquire");
    self->release = PyObject_GetAttrString(lock, "release");
    Py_DECREF(lock);
    if (self->acquire == NULL || self->release == NULL)
        return -1;
    self->values = Py_NewRef(values);
    self->name = Py_NewRef(name);
    self->state = Py_NewRef(state);
    self->fallback = Py_NewRef(fallback);
    self->sign = sign;
    self->default_one = default_one;
    return 0;
}

/* Under the lock: the new value, NULL with no error set for "take the
 * fallback", NULL with an error set on failure. */
static PyObject *
apply_locked(IntOp *self, long long delta)
{
    PyObject *closed = PyObject_GetAttr(self->state, str_closed);
    if (closed == NULL)
        return NULL;
    int open = closed == Py_False;
    Py_DECREF(closed);
    if (!open)
        return NULL;
    PyObject *current = PyDict_GetItemWithError(self->values, self->name);
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
    if (PyDict_SetItem(self->values, self->name, obj) < 0) {
        Py_DECREF(obj);
        return NULL;
    }
    return obj;
}

/* The plain case in C: the new value, or NULL with no error set when this
 * call is not the plain case (the caller then takes the Python method),
 * NULL with an error set on failure. Nothing is changed unless it returns
 * the new value. */
static PyObject *
op_try(IntOp *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    long long n = 1;
    int usable = kwnames == NULL && (nargs == 1 || (nargs == 0 && self->default_one));
    if (usable && nargs == 1) {
        int overflow = 0;
        usable = PyLong_CheckExact(args[0]);
        if (usable) {
            n = PyLong_AsLongLongAndOverflow(args[0], &overflow);
            if (n == -1 && PyErr_Occurred())
                return NULL;
            usable = !overflow && !(self->sign < 0 && n == LLONG_MIN);
        }
    }
    if (!usable)
        return NULL;
    if (mb_call_noargs(self->acquire) < 0)
        return NULL;
    PyObject *result = apply_locked(self, self->sign * n);
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    int released = mb_call_noargs(self->release);
    if (released < 0) {
        Py_XDECREF(result);
        if (type != NULL) {
            PyErr_WriteUnraisable(self->release);
            PyErr_Restore(type, value, tb);
        }
        return NULL;
    }
    PyErr_Restore(type, value, tb);
    return result;
}

static PyObject *
op_vectorcall(IntOp *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    PyObject *result = op_try(self, args, PyVectorcall_NARGS(nargsf), kwnames);
    if (result != NULL || PyErr_Occurred())
        return result;
    return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
}

/* op.quick(*args): the new value, or NotImplemented (nothing done) for
 * anything but the plain case. What Lua's quick host call runs
 * (moonbus.lua.fastconvert.QuickCalls): the caller then calls the op
 * through lupa, which runs the Python method and raises its exact error. */
static PyObject *
op_quick(IntOp *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *result = op_try(self, args, nargs, NULL);
    if (result != NULL || PyErr_Occurred())
        return result;
    Py_RETURN_NOTIMPLEMENTED;
}

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
    .tp_vectorcall_offset = offsetof(IntOp, vectorcall),
    .tp_call = PyVectorcall_Call,
};

/* ------------------------------------------------------------ KindCheck */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *values, *name, *state, *acquire, *release, *fallback;
    PyTypeObject *kind;
} KindCheck;

static int
check_traverse(KindCheck *self, visitproc visit, void *arg)
{
    Py_VISIT(self->values);
    Py_VISIT(self->name);
    Py_VISIT(self->state);
    Py_VISIT(self->acquire);
    Py_VISIT(self->release);
    Py_VISIT(self->fallback);
    Py_VISIT(self->kind);
    return 0;
}

static int
check_clear(KindCheck *self)
{
    Py_CLEAR(self->values);
    Py_CLEAR(self->name);
    Py_CLEAR(self->state);
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
    check_clear(self);
    self->vectorcall = (vectorcallfunc)check_vectorcall;
    PyObject *lock = PyObject_GetAttrString(state, "lock");
    if (lock == NULL)
        return -1;
    self->acquire = PyObject_GetAttrString(lock, "acquire");
    self->release = PyObject_GetAttrString(lock, "release");
    Py_DECREF(lock);
    if (self->acquire == NULL || self->release == NULL)
        return -1;
    self->values = Py_NewRef(values);
    self->name = Py_NewRef(name);
    self->state = Py_NewRef(state);
    self->kind = (PyTypeObject *)Py_NewRef(kind);
    self->fallback = Py_NewRef(fallback);
    return 0;
}

/* Under the lock: 1 the key is absent or of the kind, the store open; 0 it
 * is not (the fallback says why); -1 with an error set. */
static int
kind_matches_locked(KindCheck *self)
{
    PyObject *closed = PyObject_GetAttr(self->state, str_closed);
    if (closed == NULL)
        return -1;
    int open = closed == Py_False;
    Py_DECREF(closed);
    if (!open)
        return 0;
    PyObject *current = PyDict_GetItemWithError(self->values, self->name);
    if (current == NULL)
        return PyErr_Occurred() ? -1 : 1;
    return Py_IS_TYPE(current, self->kind);
}

/* 1 the key is absent or of the kind, the store open; 0 not; -1 error. */
static int
check_locked(KindCheck *self)
{
    if (mb_call_noargs(self->acquire) < 0)
        return -1;
    int matches = kind_matches_locked(self);
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
    int matches = check_locked(self);
    if (matches < 0)
        return NULL;
    if (matches)
        Py_RETURN_NONE;
    return PyObject_CallNoArgs(self->fallback);
}

/* check.quick() -> True when the key is absent or of the kind and the store
 * open, else NotImplemented: the caller then runs the full check (through
 * lupa), whose fallback raises the store's error. */
static PyObject *
check_quick(KindCheck *self, PyObject *Py_UNUSED(ignored))
{
    int matches = check_locked(self);
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
    .tp_vectorcall_offset = offsetof(KindCheck, vectorcall),
    .tp_call = PyVectorcall_Call,
};

static struct PyModuleDef fastint_module = {
    PyModuleDef_HEAD_INIT, "_fastint", "Memory-backend int operations, in C.", -1, NULL};

PyMODINIT_FUNC
PyInit__fastint(void)
{
    str_closed = PyUnicode_InternFromString("closed");
    if (str_closed == NULL || PyType_Ready(&IntOpType) < 0 || PyType_Ready(&KindCheckType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&fastint_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "IntOp", (PyObject *)&IntOpType) < 0 ||
        PyModule_AddObjectRef(m, "KindCheck", (PyObject *)&KindCheckType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
