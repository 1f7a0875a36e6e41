/*
 * Small helpers and layouts shared by moonbus's C extensions
 * (bus/_fastemit.c, lua/_fastcall.c, lua/_fastconvert.c, shared/_fastint.c).
 * Header-only: each extension is its own shared object, so these are static
 * inline functions, not a library.
 */
#ifndef MOONBUS_CAPI_H
#define MOONBUS_CAPI_H

#include <Python.h>
#include <stdatomic.h>
#include <stdint.h>

/* The layout of moonbus.bus._fastemit.FrozenData (frozen event data of str
 * keys and scalar values, pairs inline): defined here because
 * lua/_fastcall.c reads it to copy event data into Lua without a Python
 * call. ob_size is the number of pairs. */
typedef struct {
    PyObject_VAR_HEAD
    PyObject *pairs[1]; /* key0, value0, key1, value1, ...: 2 * ob_size */
} MbFrozenData;

/* The layouts of moonbus.shared._fastint's StoreGate, IntCell, IntOp and
 * KindCheck: defined here because lua/_fastconvert.c runs a Lua script's
 * `counter:increment()` and the kind check of `shared:int(name)` on them
 * without the GIL (see _fastint.c for the design, the thread ownership and
 * the memory ordering). Plain C11 atomics, sequentially consistent.
 *
 * StoreGate: one per memory store; ``closed`` is set (to 1, never back)
 * under the store's lock when the store closes. */
typedef struct {
    PyObject_HEAD
    _Atomic int closed;
} MbStoreGate;

/* IntCell: a top-level int of the memory store. ``value`` changes only by
 * atomic store / compare-and-swap; ``alive`` goes 1 -> 0 (never back) under
 * the store's lock when the key is removed (remove, clear, close). ``gate``
 * is set once at creation (a strong reference). */
typedef struct {
    PyObject_HEAD
    _Atomic int64_t value;
    _Atomic int alive;
    MbStoreGate *gate;
} MbIntCell;

/* The head of IntOp and KindCheck that the Lua side reads: ``cell`` is the
 * cell last seen under the lock by the object's ``quick`` method (a strong
 * reference, or NULL), read and replaced only by the one thread running
 * the Lua state that holds the object (see _fastint.c). */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    MbIntCell *cell;
    int sign;        /* IntOp: +1 increment/add, -1 decrement/subtract */
    int default_one; /* IntOp: op() means op(1) */
    /* Written by the Lua side only (its one thread at a time), read by
     * tests: calls done on the cached cell without the GIL, and calls
     * handed to ``quick`` with the GIL. */
    unsigned long long calls_without_gil;
    unsigned long long calls_with_gil;
} MbCellUser;

/* The plain case of an int operation on a cell, with no Python call and no
 * GIL: 1 and the new value in ``*out`` when the cell is alive, its store
 * open and the result fits in 64 bits; 0 (nothing changed) otherwise. */
static inline int
mb_cell_add(MbIntCell *cell, int64_t delta, int64_t *out)
{
    if (!atomic_load(&cell->alive) || atomic_load(&cell->gate->closed))
        return 0;
    int64_t current = atomic_load(&cell->value);
    int64_t result;
    do {
        if (__builtin_add_overflow(current, delta, &result))
            return 0;
    } while (!atomic_compare_exchange_weak(&cell->value, &current, result));
    *out = result;
    return 1;
}

/* Whether a cell is alive and its store open (no GIL needed). */
static inline int
mb_cell_live(MbIntCell *cell)
{
    return atomic_load(&cell->alive) && !atomic_load(&cell->gate->closed);
}

/* Call ``func()`` for its side effect: 0, or -1 with the exception set. */
static inline int
mb_call_noargs(PyObject *func)
{
    PyObject *r = PyObject_CallNoArgs(func);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* Call ``func(arg)`` for its side effect: 0, or -1 with the exception set. */
static inline int
mb_call_one(PyObject *func, PyObject *arg)
{
    PyObject *r = PyObject_CallOneArg(func, arg);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* Call ``release()`` (a lock's bound release) keeping the exception that is
 * set, if any; a failing release then goes to sys.unraisablehook. With no
 * exception set, a failing release leaves its own exception set. */
static inline void
mb_release_keeping_error(PyObject *release)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (mb_call_noargs(release) < 0) {
        if (type == NULL)
            return;
        PyErr_WriteUnraisable(release);
    }
    PyErr_Restore(type, value, tb);
}

#endif /* MOONBUS_CAPI_H */
