/*
 * Small helpers shared by moonbus's C extensions (bus/_fastemit.c,
 * lua/_fastcall.c, shared/_fastint.c). Header-only: each extension is its own
 * shared object, so these are static inline functions, not a library.
 */
#ifndef MOONBUS_CAPI_H
#define MOONBUS_CAPI_H

#include <Python.h>

/* The layout of moonbus.bus._fastemit.FrozenData (frozen event data of str
 * keys and scalar values, pairs inline): defined here because
 * lua/_fastcall.c reads it to copy event data into Lua without a Python
 * call. ob_size is the number of pairs. */
typedef struct {
    PyObject_VAR_HEAD
    PyObject *pairs[1]; /* key0, value0, key1, value1, ...: 2 * ob_size */
} MbFrozenData;

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
