/*
 * moonbus.bus._fastemit: the common case of Bus.emit, in C.
 *
 * Why: emit is the hottest call of the runtime. Its Python form costs about
 * 1.2 us with one handler, of which the interpreter's own overhead (frames,
 * attribute loads, bytecode) is most; pyee's emit, which commits nothing,
 * costs ~0.7 us. This module does exactly what bus.py's emit does for the
 * usual event, with the same locks and the same state, and hands everything
 * else back to bus.py before it has changed anything.
 *
 * The contract (bus.py is the reference; tests/bus run against both):
 *
 *   EmitCore(...)             one per Bus, made in Bus.__init__
 *   core.seq, core.delivered  ints, core.closed, core.draining bools,
 *   core.in_flight            the Route being delivered (or None):
 *                             the bus's mutable emit state, shared with bus.py
 *   core.linked               bus.py made cascade state while a handler ran
 *                             (moonbus.bus.cascade): the drain ends in
 *                             bus._drain_pending, which resets it
 *   core.emit(type, data, source, tick)
 *       -> the committed Event, or NotImplemented when this event needs
 *          the general path (unknown type name, data that is not a dict of
 *          scalars under str keys, a closed bus, a nested emit, queued or
 *          waited-for events, a route not cached yet or not plain). In the
 *          NotImplemented case nothing was committed and no lock is held.
 *   core.pace                 None, or a callable run after every top-level
 *                             emit this core commits, once the emit lock is
 *                             released (Bus.set_pace: deferred delivery's
 *                             backpressure); bus.py's emit does the same.
 *
 * Threads: every field is read and written with the GIL held and, for the
 * emit state, under the bus's emit lock (an RLock, acquired through its
 * bound methods exactly as bus.py does), so the C and Python paths can
 * interleave freely. Handlers are called with the GIL held and may run
 * Python that emits (nested: the Python path queues on the pending deque,
 * and this code then hands the rest of the drain to bus._drain_pending).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <time.h>

#include "../_capi.h"

/* ------------------------------------------------------------ GateCounter
 * The counting half of moonbus.host.gate.DeliveryGate (its base class):
 * ``active`` drains in progress, ``waiting`` workers held off. exit() calls
 * ``self._wake()`` when the last drain ends and a worker waits. Both run on
 * the bus's delivering thread with the GIL held; the core below does the
 * same in C when the bus's gate is one of these, so a drain costs no Python
 * call. */
typedef struct {
    PyObject_HEAD
    Py_ssize_t active;
    Py_ssize_t waiting;
} GateCounter;

static PyObject *str_wake;

static int
gate_exit_impl(PyObject *gate)
{
    GateCounter *g = (GateCounter *)gate;
    g->active -= 1;
    if (g->waiting > 0 && g->active == 0) {
        PyObject *r = PyObject_CallMethodNoArgs(gate, str_wake);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
    }
    return 0;
}

static PyObject *
gate_enter(PyObject *gate, PyObject *unused)
{
    ((GateCounter *)gate)->active += 1;
    Py_RETURN_NONE;
}

static PyObject *
gate_exit(PyObject *gate, PyObject *unused)
{
    if (gate_exit_impl(gate) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef gate_methods[] = {
    {"enter", gate_enter, METH_NOARGS, "A drain starts (delivering thread)."},
    {"exit", gate_exit, METH_NOARGS,
     "A drain ended; calls self._wake() when none is left and a worker waits."},
    {NULL}};

static PyMemberDef gate_members[] = {
    {"active", T_PYSSIZET, offsetof(GateCounter, active), 0, "drains in progress"},
    {"waiting", T_PYSSIZET, offsetof(GateCounter, waiting), 0, "workers held off"},
    {NULL}};

static PyTypeObject GateCounterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "moonbus.bus._fastemit.GateCounter",
    .tp_basicsize = sizeof(GateCounter),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Counts drains in progress (the base of DeliveryGate).",
    .tp_new = PyType_GenericNew,
    .tp_methods = gate_methods,
    .tp_members = gate_members,
};

/* ------------------------------------------------------------ EmitCore */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall; /* calling the core is Bus.emit */
    /* emit state shared with bus.py (under the emit lock) */
    long long seq;
    long long delivered;
    char closed;
    char draining;
    char linked;
    PyObject *in_flight;
    /* what this core did (read by Bus.statistics): emits it committed
     * (`taken`), and emits it handed to bus.py's general path (`handed_back`);
     * increments under the GIL */
    long long taken;
    long long handed_back;
    /* wiring, fixed at construction */
    PyTypeObject *event_type;
    PyObject *type_names;
    PyObject *lock_acquire;
    PyObject *lock_release;
    PyObject *clock;
    PyObject *store;
    PyObject *log_append;
    PyObject *pending;
    PyObject *gate;        /* a GateCounter handled in C, or NULL */
    PyObject *gate_enter;
    PyObject *gate_exit;
    PyObject *waiters;
    PyObject *routes;
    PyObject *default_source;
    PyObject *empty_data;
    PyObject *handler_failed;
    PyObject *drain_pending;
    PyObject *general;
    PyObject *pace;        /* run after a top-level emit, or NULL (see above) */
} EmitCore;

static PyObject *core_vectorcall(EmitCore *self, PyObject *const *args, size_t nargsf,
                                 PyObject *kwnames);

static PyObject *str_any, *str_plain, *str_handlers, *str_settings, *str_wants,
    *str_append, *str_offer, *str_tick, *str_source, *num_thousand;

static int
core_traverse(EmitCore *self, visitproc visit, void *arg)
{
    Py_VISIT(self->in_flight);
    Py_VISIT(self->event_type);
    Py_VISIT(self->type_names);
    Py_VISIT(self->lock_acquire);
    Py_VISIT(self->lock_release);
    Py_VISIT(self->clock);
    Py_VISIT(self->store);
    Py_VISIT(self->log_append);
    Py_VISIT(self->pending);
    Py_VISIT(self->gate);
    Py_VISIT(self->pace);
    Py_VISIT(self->gate_enter);
    Py_VISIT(self->gate_exit);
    Py_VISIT(self->waiters);
    Py_VISIT(self->routes);
    Py_VISIT(self->default_source);
    Py_VISIT(self->empty_data);
    Py_VISIT(self->handler_failed);
    Py_VISIT(self->drain_pending);
    Py_VISIT(self->general);
    return 0;
}

static int
core_clear(EmitCore *self)
{
    Py_CLEAR(self->in_flight);
    Py_CLEAR(self->event_type);
    Py_CLEAR(self->type_names);
    Py_CLEAR(self->lock_acquire);
    Py_CLEAR(self->lock_release);
    Py_CLEAR(self->clock);
    Py_CLEAR(self->store);
    Py_CLEAR(self->log_append);
    Py_CLEAR(self->pending);
    Py_CLEAR(self->gate);
    Py_CLEAR(self->pace);
    Py_CLEAR(self->gate_enter);
    Py_CLEAR(self->gate_exit);
    Py_CLEAR(self->waiters);
    Py_CLEAR(self->routes);
    Py_CLEAR(self->default_source);
    Py_CLEAR(self->empty_data);
    Py_CLEAR(self->handler_failed);
    Py_CLEAR(self->drain_pending);
    Py_CLEAR(self->general);
    return 0;
}

static void
core_dealloc(EmitCore *self)
{
    PyObject_GC_UnTrack(self);
    core_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
core_init(EmitCore *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {
        "event_type", "type_names", "lock", "clock", "store", "log", "pending",
        "gate", "waiters", "routes", "default_source", "empty_data",
        "handler_failed", "drain_pending", "general", "seq", NULL};
    PyObject *event_type, *type_names, *lock, *clock, *store, *log, *pending,
        *gate, *waiters, *routes, *default_source, *empty_data, *handler_failed,
        *drain_pending, *general;
    long long seq;
    if (!PyArg_ParseTupleAndKeywords(
            args, kwds, "$OOOOOOOOOOOOOOOL", kwlist, &event_type, &type_names,
            &lock, &clock, &store, &log, &pending, &gate, &waiters, &routes,
            &default_source, &empty_data, &handler_failed, &drain_pending,
            &general, &seq))
        return -1;
    if (!PyType_Check(event_type) ||
        !PyType_IsSubtype((PyTypeObject *)event_type, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "event_type must be a tuple subclass");
        return -1;
    }
    if (!PySet_Check(type_names) || !PyDict_Check(routes)) {
        PyErr_SetString(PyExc_TypeError, "type_names must be a set, routes a dict");
        return -1;
    }
    core_clear(self);
    self->vectorcall = (vectorcallfunc)core_vectorcall;
    self->seq = seq;
    self->delivered = 0;
    self->closed = 0;
    self->draining = 0;
    self->linked = 0;
    self->in_flight = Py_NewRef(Py_None);
    self->event_type = (PyTypeObject *)Py_NewRef(event_type);
    self->type_names = Py_NewRef(type_names);
    self->lock_acquire = PyObject_GetAttrString(lock, "acquire");
    self->lock_release = PyObject_GetAttrString(lock, "release");
    self->clock = Py_NewRef(clock);
    self->store = Py_NewRef(store);
    self->log_append = PyObject_GetAttr(log, str_append);
    self->pending = Py_NewRef(pending);
    if (gate == Py_None || PyObject_TypeCheck(gate, &GateCounterType)) {
        self->gate = gate == Py_None ? NULL : Py_NewRef(gate);
        self->gate_enter = Py_NewRef(Py_None);
        self->gate_exit = Py_NewRef(Py_None);
    } else {
        self->gate_enter = PyObject_GetAttrString(gate, "enter");
        self->gate_exit = PyObject_GetAttrString(gate, "exit");
    }
    self->waiters = Py_NewRef(waiters);
    self->routes = Py_NewRef(routes);
    self->default_source = Py_NewRef(default_source);
    self->empty_data = Py_NewRef(empty_data);
    self->handler_failed = Py_NewRef(handler_failed);
    self->drain_pending = Py_NewRef(drain_pending);
    self->general = Py_NewRef(general);
    if (!self->lock_acquire || !self->lock_release || !self->log_append ||
        !self->gate_enter || !self->gate_exit)
        return -1;
    return 0;
}


/* 1: a scalar the bus keeps as it is (exact types, as bus.py checks them). */
static inline int
is_scalar(PyObject *v)
{
    PyTypeObject *t = Py_TYPE(v);
    return t == &PyUnicode_Type || t == &PyLong_Type || t == &PyFloat_Type ||
           t == &PyBool_Type || v == Py_None;
}

/* ------------------------------------------------------------ FrozenData
 * The frozen data of the common event: a read-only mapping of str keys to
 * scalars (str, int, float, bool, None), its pairs stored inline in the
 * source dict's order. Why not dict + mappingproxy (bus.py's form, kept for
 * nested data): that is three allocations per event, and the proxy is a GC
 * object the cyclic collector tracks, so every event queued for deferred
 * delivery or kept in the log is scanned again by each collection (a fifth
 * of the emitting thread's time with a backlog of events). Holding only
 * scalars, a FrozenData can never be part of a reference cycle, so its type
 * is not a GC type at all. It is small by construction (at most
 * FROZEN_MAX_PAIRS pairs from the emit path), so lookups scan the pairs:
 * identity first (keys are usually the same interned literals), then
 * hash + equality as a dict would. Reading it needs no Python call, which is
 * what lets _fastcall.c copy it into Lua directly. */
#define FROZEN_MAX_PAIRS 32

typedef MbFrozenData FrozenData; /* the layout lives in _capi.h */

static PyTypeObject FrozenDataType;

static void
frozen_dealloc(FrozenData *self)
{
    for (Py_ssize_t i = 0; i < 2 * Py_SIZE(self); i++)
        Py_XDECREF(self->pairs[i]);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* A FrozenData of a dict already known to hold only str keys and scalar
 * values (at most FROZEN_MAX_PAIRS, or any number from the constructor). */
static PyObject *
frozen_from_plain_dict(PyTypeObject *type, PyObject *dict)
{
    Py_ssize_t n = PyDict_GET_SIZE(dict);
    FrozenData *self = (FrozenData *)type->tp_alloc(type, n);
    if (self == NULL)
        return NULL;
    Py_ssize_t pos = 0, i = 0;
    PyObject *key, *value;
    while (PyDict_Next(dict, &pos, &key, &value) && i < n) {
        self->pairs[2 * i] = Py_NewRef(key);
        self->pairs[2 * i + 1] = Py_NewRef(value);
        i++;
    }
    Py_SET_SIZE(self, i);
    return (PyObject *)self;
}

/* The value under ``key`` (borrowed), NULL without an error if absent,
 * NULL with an error if the key is unhashable or a comparison raised. */
static PyObject *
frozen_lookup(FrozenData *self, PyObject *key)
{
    Py_ssize_t n = Py_SIZE(self);
    for (Py_ssize_t i = 0; i < n; i++)
        if (self->pairs[2 * i] == key)
            return self->pairs[2 * i + 1];
    Py_hash_t hash = PyObject_Hash(key);
    if (hash == -1)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *k = self->pairs[2 * i];
        if (PyObject_Hash(k) != hash) /* str hashes are cached */
            continue;
        int eq = PyObject_RichCompareBool(k, key, Py_EQ);
        if (eq < 0)
            return NULL;
        if (eq)
            return self->pairs[2 * i + 1];
    }
    return NULL;
}

static PyObject *
frozen_to_dict(FrozenData *self)
{
    PyObject *dict = PyDict_New();
    if (dict == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < Py_SIZE(self); i++) {
        if (PyDict_SetItem(dict, self->pairs[2 * i], self->pairs[2 * i + 1]) < 0) {
            Py_DECREF(dict);
            return NULL;
        }
    }
    return dict;
}

static PyObject *
frozen_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *source = NULL;
    static char *kwlist[] = {"mapping", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:FrozenData", kwlist, &source))
        return NULL;
    PyObject *dict = PyDict_New();
    if (dict == NULL)
        return NULL;
    if (source != NULL && PyDict_Merge(dict, source, 1) < 0) {
        Py_DECREF(dict);
        return NULL;
    }
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(dict, &pos, &key, &value)) {
        if (!PyUnicode_CheckExact(key) || !is_scalar(value)) {
            PyErr_Format(PyExc_TypeError,
                         "FrozenData holds str keys and scalar values (str, int, float, "
                         "bool, None); got %R: %.100s",
                         key, Py_TYPE(value)->tp_name);
            Py_DECREF(dict);
            return NULL;
        }
    }
    PyObject *self = frozen_from_plain_dict(type, dict);
    Py_DECREF(dict);
    return self;
}

static Py_ssize_t
frozen_length(FrozenData *self)
{
    return Py_SIZE(self);
}

static PyObject *
frozen_subscript(FrozenData *self, PyObject *key)
{
    PyObject *value = frozen_lookup(self, key);
    if (value == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    return Py_NewRef(value);
}

static int
frozen_contains(FrozenData *self, PyObject *key)
{
    if (frozen_lookup(self, key) != NULL)
        return 1;
    return PyErr_Occurred() ? -1 : 0;
}

static PyObject *
frozen_keys_tuple(FrozenData *self)
{
    PyObject *keys = PyTuple_New(Py_SIZE(self));
    if (keys == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < Py_SIZE(self); i++)
        PyTuple_SET_ITEM(keys, i, Py_NewRef(self->pairs[2 * i]));
    return keys;
}

static PyObject *
frozen_iter(FrozenData *self)
{
    PyObject *keys = frozen_keys_tuple(self);
    if (keys == NULL)
        return NULL;
    PyObject *it = PyObject_GetIter(keys);
    Py_DECREF(keys);
    return it;
}

static PyObject *
frozen_get(FrozenData *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "get(key, default=None)");
        return NULL;
    }
    PyObject *value = frozen_lookup(self, args[0]);
    if (value != NULL)
        return Py_NewRef(value);
    if (PyErr_Occurred())
        return NULL;
    return Py_NewRef(nargs == 2 ? args[1] : Py_None);
}

/* keys(), values(), items(): views of a dict copy (the data never changes,
 * so a snapshot view reads exactly as a live one would). */
static PyObject *
frozen_view(FrozenData *self, const char *method)
{
    PyObject *dict = frozen_to_dict(self);
    if (dict == NULL)
        return NULL;
    PyObject *view = PyObject_CallMethod(dict, method, NULL);
    Py_DECREF(dict);
    return view;
}

static PyObject *
frozen_keys(FrozenData *self, PyObject *unused)
{
    return frozen_view(self, "keys");
}

static PyObject *
frozen_values(FrozenData *self, PyObject *unused)
{
    return frozen_view(self, "values");
}

static PyObject *
frozen_items(FrozenData *self, PyObject *unused)
{
    return frozen_view(self, "items");
}

static PyObject *
frozen_copy(FrozenData *self, PyObject *unused)
{
    return frozen_to_dict(self);
}

static PyObject *
frozen_reversed(FrozenData *self, PyObject *unused)
{
    PyObject *keys = frozen_keys_tuple(self);
    if (keys == NULL)
        return NULL;
    PyObject *it = PyObject_CallOneArg((PyObject *)&PyReversed_Type, keys);
    Py_DECREF(keys);
    return it;
}

static PyObject *
frozen_reduce(FrozenData *self, PyObject *unused)
{
    PyObject *dict = frozen_to_dict(self);
    if (dict == NULL)
        return NULL;
    return Py_BuildValue("(O(N))", (PyObject *)Py_TYPE(self), dict);
}

#define OP_OR (-1) /* on_dicts: `|` instead of a comparison */

/* ``left <op> right`` with each FrozenData operand replaced by a plain dict
 * copy: comparisons and `|` then behave exactly as a dict's (the data never
 * changes, so the copy reads as the original). */
static PyObject *
on_dicts(PyObject *left, PyObject *right, int op)
{
    PyObject *l = PyObject_TypeCheck(left, &FrozenDataType)
                      ? frozen_to_dict((FrozenData *)left) : Py_NewRef(left);
    if (l == NULL)
        return NULL;
    PyObject *r = PyObject_TypeCheck(right, &FrozenDataType)
                      ? frozen_to_dict((FrozenData *)right) : Py_NewRef(right);
    if (r == NULL) {
        Py_DECREF(l);
        return NULL;
    }
    PyObject *result = op == OP_OR ? PyNumber_Or(l, r) : PyObject_RichCompare(l, r, op);
    Py_DECREF(l);
    Py_DECREF(r);
    return result;
}

static PyObject *
frozen_richcompare(PyObject *self, PyObject *other, int op)
{
    if ((op != Py_EQ && op != Py_NE) || !PyObject_TypeCheck(self, &FrozenDataType))
        Py_RETURN_NOTIMPLEMENTED;
    if (!PyDict_Check(other) && !PyObject_TypeCheck(other, &FrozenDataType) &&
        !PyObject_TypeCheck(other, &PyDictProxy_Type))
        Py_RETURN_NOTIMPLEMENTED;
    return on_dicts(self, other, op);
}

/* data | other, other | data: a new dict, as mappingproxy gives. */
static PyObject *
frozen_or(PyObject *left, PyObject *right)
{
    return on_dicts(left, right, OP_OR);
}

static PyObject *
frozen_repr(FrozenData *self)
{
    PyObject *dict = frozen_to_dict(self);
    if (dict == NULL)
        return NULL;
    PyObject *repr = PyUnicode_FromFormat("FrozenData(%R)", dict);
    Py_DECREF(dict);
    return repr;
}

static PyMappingMethods frozen_as_mapping = {
    .mp_length = (lenfunc)frozen_length,
    .mp_subscript = (binaryfunc)frozen_subscript,
};

static PySequenceMethods frozen_as_sequence = {
    .sq_contains = (objobjproc)frozen_contains,
};

static PyNumberMethods frozen_as_number = {
    .nb_or = frozen_or,
};

static PyMethodDef frozen_methods[] = {
    {"get", (PyCFunction)(void (*)(void))frozen_get, METH_FASTCALL,
     "get(key, default=None)"},
    {"keys", (PyCFunction)frozen_keys, METH_NOARGS, "a view of the keys"},
    {"values", (PyCFunction)frozen_values, METH_NOARGS, "a view of the values"},
    {"items", (PyCFunction)frozen_items, METH_NOARGS, "a view of the (key, value) pairs"},
    {"copy", (PyCFunction)frozen_copy, METH_NOARGS, "a plain, mutable dict copy"},
    {"__reversed__", (PyCFunction)frozen_reversed, METH_NOARGS, "keys, last first"},
    {"__reduce__", (PyCFunction)frozen_reduce, METH_NOARGS, "pickle support"},
    {NULL}};

static PyTypeObject FrozenDataType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "moonbus.bus._fastemit.FrozenData",
    .tp_basicsize = offsetof(FrozenData, pairs),
    .tp_itemsize = 2 * sizeof(PyObject *),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "FrozenData(mapping=()): read-only event data of str keys and scalar values.",
    .tp_new = frozen_new,
    .tp_dealloc = (destructor)frozen_dealloc,
    .tp_repr = (reprfunc)frozen_repr,
    .tp_hash = PyObject_HashNotImplemented,
    .tp_richcompare = frozen_richcompare,
    .tp_iter = (getiterfunc)frozen_iter,
    .tp_as_mapping = &frozen_as_mapping,
    .tp_as_sequence = &frozen_as_sequence,
    .tp_as_number = &frozen_as_number,
    .tp_methods = frozen_methods,
};

/* The frozen copy of a dict of scalars under str keys; NULL without an error
 * set when the data needs the general path; NULL with an error on failure. */
static PyObject *
freeze_plain(EmitCore *self, PyObject *data)
{
    if (data == Py_None)
        return Py_NewRef(self->empty_data);
    if (!PyDict_CheckExact(data))
        return NULL;
    if (PyDict_GET_SIZE(data) == 0)
        return Py_NewRef(self->empty_data);
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(data, &pos, &key, &value)) {
        if (!PyUnicode_CheckExact(key) || !is_scalar(value))
            return NULL;
    }
    if (PyDict_GET_SIZE(data) <= FROZEN_MAX_PAIRS)
        return frozen_from_plain_dict(&FrozenDataType, data);
    PyObject *copy = PyDict_Copy(data);
    if (copy == NULL)
        return NULL;
    PyObject *proxy = PyDictProxy_New(copy);
    Py_DECREF(copy);
    return proxy;
}

static PyObject *
timestamp_ms(EmitCore *self)
{
    if (self->clock == Py_None) {
        /* time.time_ns() // 1_000_000: the same clock (CLOCK_REALTIME) */
        struct timespec ts;
        if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
            return PyErr_SetFromErrno(PyExc_OSError);
        long long ns = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
        return PyLong_FromLongLong(ns / 1000000LL);
    }
    /* int(clock() * 1000), as bus.py computes it */
    PyObject *now = PyObject_CallNoArgs(self->clock);
    if (now == NULL)
        return NULL;
    PyObject *scaled = PyNumber_Multiply(now, num_thousand);
    Py_DECREF(now);
    if (scaled == NULL)
        return NULL;
    PyObject *ms = PyNumber_Long(scaled);
    Py_DECREF(scaled);
    return ms;
}

/* Resolve wait_for waiters on ``event`` if there are any (0, or -1). */
static int
offer_to_waiters(EmitCore *self, PyObject *event)
{
    PyObject *any = PyObject_GetAttr(self->waiters, str_any);
    if (any == NULL)
        return -1;
    int waited = PyObject_IsTrue(any);
    Py_DECREF(any);
    if (waited <= 0)
        return waited;
    PyObject *r = PyObject_CallMethodOneArg(self->waiters, str_offer, event);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* Run the handlers of a plain route on ``event`` (draining, lock held).
 * 0, or -1 with an exception that is not an Exception (it propagates). */
static int
deliver_plain(EmitCore *self, PyObject *route, PyObject *handlers, PyObject *event)
{
    Py_SETREF(self->in_flight, Py_NewRef(route));
    self->delivered += PyList_GET_SIZE(handlers);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(handlers); i++) {
        /* a route of many scripts' handlers: each handler object is out of
         * cache, so fetch the one after next while this one runs (a prefetch
         * changes nothing but timing) */
        if (i + 2 < PyList_GET_SIZE(handlers))
            __builtin_prefetch(PyList_GET_ITEM(handlers, i + 2));
        /* another thread may replace a slot (Route.skip) while one runs */
        PyObject *handler = Py_NewRef(PyList_GET_ITEM(handlers, i));
        PyObject *r = PyObject_CallOneArg(handler, event);
        if (r != NULL) {
            Py_DECREF(r);
            Py_DECREF(handler);
            continue;
        }
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            Py_DECREF(handler);
            return -1;
        }
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (tb != NULL)
            PyException_SetTraceback(value, tb);
        PyObject *args[4] = {route, handler, event, value};
        PyObject *logged = PyObject_Vectorcall(self->handler_failed, args, 4, NULL);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
        Py_DECREF(handler);
        if (logged == NULL)
            return -1;
        Py_DECREF(logged);
    }
    return 0;
}

static PyObject *
try_emit(EmitCore *self, PyObject *type, PyObject *data, PyObject *source, PyObject *tick)
{
    if (!PyUnicode_CheckExact(type))
        Py_RETURN_NOTIMPLEMENTED;
    int known = PySet_Contains(self->type_names, type);
    if (known < 0)
        return NULL;
    if (!known)
        Py_RETURN_NOTIMPLEMENTED;
    PyObject *frozen = freeze_plain(self, data);
    if (frozen == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NOTIMPLEMENTED;
    }
    if (source == Py_None)
        source = self->default_source;

    PyObject *locked = PyObject_CallNoArgs(self->lock_acquire);
    if (locked == NULL) {
        Py_DECREF(frozen);
        return NULL;
    }
    Py_DECREF(locked);

    /* ---- may this event take the fast path? (nothing changed yet) */
    PyObject *route = NULL, *handlers = NULL, *event = NULL, *ts = NULL;
    if (self->closed || self->draining || PyObject_Length(self->pending) != 0)
        goto general;
    route = PyDict_GetItemWithError(self->routes, type);
    if (route == NULL) {
        if (PyErr_Occurred())
            goto fail;
        goto general;
    }
    Py_INCREF(route);
    PyObject *plain = PyObject_GetAttr(route, str_plain);
    if (plain == NULL)
        goto fail;
    int is_plain = plain == Py_True;
    Py_DECREF(plain);
    if (!is_plain)
        goto general;
    handlers = PyObject_GetAttr(route, str_handlers);
    if (handlers == NULL)
        goto fail;
    if (!PyList_CheckExact(handlers))
        goto general;

    /* ---- commit */
    long long seq = self->seq + 1;
    ts = timestamp_ms(self);
    if (ts == NULL)
        goto fail;
    PyObject *seq_obj = PyLong_FromLongLong(seq);
    if (seq_obj == NULL)
        goto fail;
    event = self->event_type->tp_alloc(self->event_type, 6);
    if (event == NULL) {
        Py_DECREF(seq_obj);
        goto fail;
    }
    PyTuple_SET_ITEM(event, 0, Py_NewRef(type));
    PyTuple_SET_ITEM(event, 1, frozen);
    frozen = NULL;
    PyTuple_SET_ITEM(event, 2, seq_obj);
    PyTuple_SET_ITEM(event, 3, Py_NewRef(tick));
    PyTuple_SET_ITEM(event, 4, ts);
    ts = NULL;
    PyTuple_SET_ITEM(event, 5, Py_NewRef(source));
    /* Every field is a scalar or frozen data of scalars (a read-only proxy
     * of a private dict): the event cannot be part of a reference cycle, so
     * the cyclic collector need not scan it, as CPython untracks plain
     * tuples of scalars. (The proxy stays tracked: its dealloc expects it.) */
    if (is_scalar(source))
        PyObject_GC_UnTrack(event);
    if (self->store != Py_None) {
        PyObject *settings = PyObject_GetAttr(self->store, str_settings);
        if (settings == NULL)
            goto fail;
        PyObject *wants = PyObject_CallMethodOneArg(settings, str_wants, type);
        Py_DECREF(settings);
        if (wants == NULL)
            goto fail;
        int wanted = PyObject_IsTrue(wants);
        Py_DECREF(wants);
        if (wanted < 0)
            goto fail;
        if (wanted) {
            /* raises: nothing committed, no seq consumed */
            PyObject *r = PyObject_CallMethodOneArg(self->store, str_append, event);
            if (r == NULL)
                goto fail;
            Py_DECREF(r);
        }
    }
    self->seq = seq;
    PyObject *appended = PyObject_CallOneArg(self->log_append, event);
    if (appended == NULL)
        goto fail; /* committed (seq taken) but not logged: as bus.py would */
    Py_DECREF(appended);

    /* ---- deliver (waiters are resolved once the event has its place in the
     * delivery order, so an emit from a `where` predicate queues behind it) */
    self->draining = 1;
    int failed = 0;
    if (self->gate != NULL) {
        ((GateCounter *)self->gate)->active += 1;
    } else if (self->gate_enter != Py_None && mb_call_noargs(self->gate_enter) < 0) {
        self->draining = 0;
        goto fail;
    }
    failed = offer_to_waiters(self, event);
    if (!failed && PyObject_Length(self->pending) != 0) {
        /* a `where` predicate emitted: bus.py delivers everything in order */
        failed = mb_call_one(self->drain_pending, event);
    } else if (!failed) {
        failed = deliver_plain(self, route, handlers, event);
        if (!failed && (PyObject_Length(self->pending) != 0 || self->linked)) {
            /* handlers emitted (or asked for their cascade): bus.py delivers
             * the queued events in order and resets the cascade state */
            failed = mb_call_one(self->drain_pending, Py_None);
        }
    }
    {
        PyObject *type_, *value, *tb;
        PyErr_Fetch(&type_, &value, &tb);
        self->draining = 0;
        Py_SETREF(self->in_flight, Py_NewRef(Py_None));
        int gate_failed = self->gate != NULL
                              ? gate_exit_impl(self->gate)
                              : (self->gate_exit != Py_None ? mb_call_noargs(self->gate_exit) : 0);
        if (gate_failed < 0) {
            if (type_ != NULL) {
                PyErr_WriteUnraisable(self->gate != NULL ? self->gate : self->gate_exit);
            } else {
                failed = -1;
                PyErr_Fetch(&type_, &value, &tb);
            }
        }
        PyErr_Restore(type_, value, tb);
    }
    Py_DECREF(route);
    Py_DECREF(handlers);
    mb_release_keeping_error(self->lock_release);
    if (failed || PyErr_Occurred()) {
        Py_DECREF(event);
        return NULL;
    }
    return event;

general:
    Py_XDECREF(route);
    Py_XDECREF(handlers);
    Py_DECREF(frozen);
    mb_release_keeping_error(self->lock_release);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NOTIMPLEMENTED;

fail:
    Py_XDECREF(route);
    Py_XDECREF(handlers);
    Py_XDECREF(frozen);
    Py_XDECREF(ts);
    Py_XDECREF(event);
    mb_release_keeping_error(self->lock_release);
    return NULL;
}

/* `event` (a top-level emit committed here, the emit lock released) after
 * the pace hook has run; NULL if the hook raised. */
static PyObject *
paced(EmitCore *self, PyObject *event)
{
    if (self->pace != NULL && mb_call_noargs(self->pace) < 0) {
        Py_DECREF(event);
        return NULL;
    }
    return event;
}

static PyObject *
core_emit(EmitCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "emit(type, data, source, tick)");
        return NULL;
    }
    PyObject *event = try_emit(self, args[0], args[1], args[2], args[3]);
    if (event == Py_NotImplemented)
        self->handed_back++;
    else
        self->taken++;
    return event != NULL && event != Py_NotImplemented ? paced(self, event) : event;
}

/* Keyword names are almost always the interned constants of the caller's code. */
static inline int
same_name(PyObject *name, PyObject *interned)
{
    return name == interned || PyUnicode_Compare(name, interned) == 0;
}

/* core(type, data=None, *, source=None, tick=None): Bus.emit itself. Anything
 * the fast path does not take, including bad arguments, goes to ``general``
 * (bus.py's emit) with the arguments as given, so errors read the same. */
static PyObject *
core_vectorcall(EmitCore *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *source = Py_None, *tick = Py_None;
    int usable = nargs >= 1 && nargs <= 2;
    if (usable && kwnames != NULL) {
        Py_ssize_t nkw = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t i = 0; i < nkw; i++) {
            PyObject *name = PyTuple_GET_ITEM(kwnames, i);
            if (same_name(name, str_tick))
                tick = args[nargs + i];
            else if (same_name(name, str_source))
                source = args[nargs + i];
            else
                usable = 0;
        }
    }
    if (usable) {
        PyObject *event =
            try_emit(self, args[0], nargs == 2 ? args[1] : Py_None, source, tick);
        if (event != Py_NotImplemented) {
            self->taken++; /* committed here (or failed here, as bus.py would) */
            return event != NULL ? paced(self, event) : NULL;
        }
        Py_DECREF(event);
    }
    self->handed_back++;
    return PyObject_Vectorcall(self->general, args, nargsf, kwnames);
}

/* closed and draining: C chars read and written as Python bools; the
 * closure is the field's offset in EmitCore. */
static PyObject *
core_get_flag(EmitCore *self, void *closure)
{
    return PyBool_FromLong(*((char *)self + (Py_ssize_t)closure));
}

static int
core_set_flag(EmitCore *self, PyObject *value, void *closure)
{
    int v = value ? PyObject_IsTrue(value) : -1;
    if (v < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_AttributeError, "cannot delete this attribute");
        return -1;
    }
    *((char *)self + (Py_ssize_t)closure) = (char)v;
    return 0;
}

static PyObject *
core_get_in_flight(EmitCore *self, void *closure)
{
    return Py_NewRef(self->in_flight);
}

static int
core_set_in_flight(EmitCore *self, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete in_flight");
        return -1;
    }
    Py_SETREF(self->in_flight, Py_NewRef(value));
    return 0;
}

static PyObject *
core_get_pace(EmitCore *self, void *closure)
{
    return Py_NewRef(self->pace != NULL ? self->pace : Py_None);
}

static int
core_set_pace(EmitCore *self, PyObject *value, void *closure)
{
    if (value != NULL && value != Py_None && !PyCallable_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "pace must be None or callable");
        return -1;
    }
    Py_XSETREF(self->pace, value == NULL || value == Py_None ? NULL : Py_NewRef(value));
    return 0;
}

static PyGetSetDef core_getset[] = {
    {"pace", (getter)core_get_pace, (setter)core_set_pace,
     "None, or called after each top-level emit, the emit lock released", NULL},
    {"closed", (getter)core_get_flag, (setter)core_set_flag, "the bus refuses emits",
     (void *)offsetof(EmitCore, closed)},
    {"draining", (getter)core_get_flag, (setter)core_set_flag,
     "a thread is delivering (nested emits only queue)", (void *)offsetof(EmitCore, draining)},
    {"linked", (getter)core_get_flag, (setter)core_set_flag,
     "cascade state was made during this drain: it ends in bus.py",
     (void *)offsetof(EmitCore, linked)},
    {"in_flight", (getter)core_get_in_flight, (setter)core_set_in_flight,
     "the plain route being delivered, or None", NULL},
    {NULL}};

static PyMemberDef core_members[] = {
    {"seq", T_LONGLONG, offsetof(EmitCore, seq), 0, "the last committed seq"},
    {"delivered", T_LONGLONG, offsetof(EmitCore, delivered), 0, "handler calls so far"},
    {"taken", T_LONGLONG, offsetof(EmitCore, taken), READONLY, "emits done in C"},
    {"handed_back", T_LONGLONG, offsetof(EmitCore, handed_back), READONLY,
     "emits handed to bus.py's general path"},
    {NULL}};

static PyMethodDef core_methods[] = {
    {"emit", (PyCFunction)(void (*)(void))core_emit, METH_FASTCALL,
     "emit(type, data, source, tick) -> Event, or NotImplemented for the general path"},
    {NULL}};

static PyTypeObject EmitCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "moonbus.bus._fastemit.EmitCore",
    .tp_basicsize = sizeof(EmitCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(EmitCore, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_doc = "The common case of Bus.emit (see the module source for the contract).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)core_init,
    .tp_dealloc = (destructor)core_dealloc,
    .tp_traverse = (traverseproc)core_traverse,
    .tp_clear = (inquiry)core_clear,
    .tp_methods = core_methods,
    .tp_members = core_members,
    .tp_getset = core_getset,
};

static struct PyModuleDef fastemit_module = {
    PyModuleDef_HEAD_INIT, "_fastemit", "The common case of Bus.emit, in C.", -1, NULL};

PyMODINIT_FUNC
PyInit__fastemit(void)
{
    /* interned names and constants: immortal for the process, like the type */
    str_any = PyUnicode_InternFromString("any");
    str_plain = PyUnicode_InternFromString("plain");
    str_handlers = PyUnicode_InternFromString("handlers");
    str_settings = PyUnicode_InternFromString("settings");
    str_wants = PyUnicode_InternFromString("wants");
    str_append = PyUnicode_InternFromString("append");
    str_offer = PyUnicode_InternFromString("offer");
    str_wake = PyUnicode_InternFromString("_wake");
    str_tick = PyUnicode_InternFromString("tick");
    str_source = PyUnicode_InternFromString("source");
    num_thousand = PyLong_FromLong(1000);
    if (!str_any || !str_plain || !str_handlers || !str_settings || !str_wants ||
        !str_append || !str_offer || !str_wake || !str_tick || !str_source ||
        !num_thousand)
        return NULL;
    if (PyType_Ready(&EmitCoreType) < 0 || PyType_Ready(&GateCounterType) < 0 ||
        PyType_Ready(&FrozenDataType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&fastemit_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "EmitCore", (PyObject *)&EmitCoreType) < 0 ||
        PyModule_AddObjectRef(m, "GateCounter", (PyObject *)&GateCounterType) < 0 ||
        PyModule_AddObjectRef(m, "FrozenData", (PyObject *)&FrozenDataType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
