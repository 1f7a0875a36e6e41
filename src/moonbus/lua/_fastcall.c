/*
 * moonbus.lua._fastcall: event delivery into a Lua handler, in C.
 *
 * Why: delivering one event to a Lua handler through Python costs three
 * Python frames (ScriptEngine.deliver, LuaEngine.call_event, _guarded) plus
 * lupa's generic table copy and call, ~4 us. This type does the same steps,
 * in the same order, under the same locks, for the common case, and hands
 * every other case back to the Python path before it has changed anything.
 * engine.py stays the reference: its docstrings explain the protocol that
 * this code follows step by step (see LuaEngine._guarded and _end_call).
 *
 * Delivery(engine, fallback, failed, ...)   one per script event engine
 * delivery(sub_id, event)                   what the bus calls (via partial)
 *
 * The common case: the engine is open and idle (no nested call), no abort is
 * pending for the next call, and the event's data is a read-only dict of up
 * to MAX_FIELDS scalars under str keys. Then, holding the engine's lock:
 * the call's token is taken and marked live, the watchdog entry is armed,
 * lupa's own runtime lock is taken (as lupa does around every call), the GIL
 * is released and lua_pcall runs a C function that builds the payload table
 * and calls the script's Lua `deliver(sub_id, event, tick, seq, type)`; then
 * the watchdog entry is removed and the call is ended under the hook lock.
 * A call that ends with an abort, an error, leftover coroutines or anything
 * unusual is finished by the Python path (engine._end_call, engine._forget,
 * and the `failed` callback, which raises and reports as deliver() does).
 *
 * Threads: called on the bus's delivering thread with the GIL held. Lua runs
 * with the GIL released (so the watchdog can run and abort it with
 * lua_sethook, and lupa's callbacks into Python take the GIL back). The Lua
 * state is touched only while both the engine's lock and lupa's lock are
 * held by this thread, so no other thread can use it concurrently (lupa's
 * own object finalizers take lupa's lock, or defer their unref).
 *
 * Lua errors cannot escape: everything that may raise (allocation included)
 * runs inside lua_pcall. Only Lua 5.4 (lupa.lua54) is supported; the
 * symbols come from lupa's extension module (dlopen RTLD_NOLOAD + dlsym).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../_capi.h"

/* ------------------------------------------------------------ Lua 5.4 API */
typedef struct lua_State lua_State;
typedef long long lua_Integer;
typedef double lua_Number;
typedef intptr_t lua_KContext;
typedef int (*lua_CFunction)(lua_State *L);
typedef int (*lua_KFunction)(lua_State *L, int status, lua_KContext ctx);

#define LUA_OK 0
#define LUA_ERRMEM 4
#define LUA_TSTRING 4
#define LUA_MULTRET (-1)
#define LUA_REGISTRYINDEX (-1000000 - 1000) /* Lua 5.4: -LUAI_MAXSTACK - 1000 */
#define MAX_FIELDS 32

/* The Lua C API of lupa.lua54, resolved once when this module is imported
 * and never changed afterwards (a constant table, like a linker's). */
typedef struct {
    int (*pcallk)(lua_State *, int, int, int, lua_KContext, lua_KFunction);
    void (*callk)(lua_State *, int, int, lua_KContext, lua_KFunction);
    int (*gettop)(lua_State *);
    void (*settop)(lua_State *, int);
    int (*rawgeti)(lua_State *, int, lua_Integer);
    void (*pushinteger)(lua_State *, lua_Integer);
    void (*pushnumber)(lua_State *, lua_Number);
    const char *(*pushlstring)(lua_State *, const char *, size_t);
    void (*pushboolean)(lua_State *, int);
    void (*pushnil)(lua_State *);
    void (*pushlightuserdata)(lua_State *, void *);
    void (*pushcclosure)(lua_State *, lua_CFunction, int);
    void (*createtable)(lua_State *, int, int);
    void (*rawset)(lua_State *, int);
    void *(*touserdata)(lua_State *, int);
    int (*type)(lua_State *, int);
    int (*toboolean)(lua_State *, int);
    const char *(*tolstring)(lua_State *, int, size_t *);
    int (*getglobal)(lua_State *, const char *);
    void (*setglobal)(lua_State *, const char *);
    int (*ref)(lua_State *, int);
    lua_Integer (*tointegerx)(lua_State *, int, int *);
} LuaApi;

static LuaApi lua;

static int
load_api(const char *path)
{
    void *lib = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    if (lib == NULL) {
        PyErr_Format(PyExc_ImportError, "lupa's Lua module is not loaded: %s", dlerror());
        return -1;
    }
#define SYM(field, name)                                                          \
    do {                                                                          \
        *(void **)(&lua.field) = dlsym(lib, name);                                \
        if (lua.field == NULL) {                                                  \
            PyErr_Format(PyExc_ImportError, "lupa's Lua module lacks %s", name);  \
            dlclose(lib);                                                         \
            return -1;                                                            \
        }                                                                         \
    } while (0)
    SYM(pcallk, "lua_pcallk");
    SYM(callk, "lua_callk");
    SYM(gettop, "lua_gettop");
    SYM(settop, "lua_settop");
    SYM(rawgeti, "lua_rawgeti");
    SYM(pushinteger, "lua_pushinteger");
    SYM(pushnumber, "lua_pushnumber");
    SYM(pushlstring, "lua_pushlstring");
    SYM(pushboolean, "lua_pushboolean");
    SYM(pushnil, "lua_pushnil");
    SYM(pushlightuserdata, "lua_pushlightuserdata");
    SYM(pushcclosure, "lua_pushcclosure");
    SYM(createtable, "lua_createtable");
    SYM(rawset, "lua_rawset");
    SYM(touserdata, "lua_touserdata");
    SYM(type, "lua_type");
    SYM(toboolean, "lua_toboolean");
    SYM(tolstring, "lua_tolstring");
    SYM(getglobal, "lua_getglobal");
    SYM(setglobal, "lua_setglobal");
    SYM(ref, "luaL_ref");
    SYM(tointegerx, "lua_tointegerx");
#undef SYM
    /* lupa's module stays loaded for the life of the process (CPython never
     * unloads extension modules); this drops only our extra handle. */
    dlclose(lib);
    return 0;
}

/* ------------------------------------------------------- one delivery call */
enum { F_NIL, F_BOOL, F_INT, F_FLOAT, F_STR };

typedef struct {
    const char *key;
    Py_ssize_t key_len;
    int kind;
    lua_Integer i;
    lua_Number f;
    const char *s;
    Py_ssize_t s_len;
} Field;

/* Everything the Lua side needs, extracted with the GIL held; the strings
 * point into Python str objects that the event keeps alive. */
typedef struct {
    int func_ref;
    lua_Integer sub_id;
    int nfields;
    int has_tick;
    lua_Integer tick;
    lua_Integer seq;
    const char *type;
    Py_ssize_t type_len;
    Field fields[MAX_FIELDS];
} CallArgs;

/* Runs inside lua_pcall (so allocation failures and errors are caught):
 * deliver(sub_id, {payload}, tick, seq, type), leaving its results. */
static int
deliver_in_lua(lua_State *L)
{
    const CallArgs *a = (const CallArgs *)lua.touserdata(L, 1);
    lua.rawgeti(L, LUA_REGISTRYINDEX, a->func_ref);
    lua.pushinteger(L, a->sub_id);
    lua.createtable(L, 0, a->nfields + 3);
    for (int i = 0; i < a->nfields; i++) {
        const Field *f = &a->fields[i];
        if (f->kind == F_NIL)
            continue; /* a None value is an absent key, as lupa copies it */
        lua.pushlstring(L, f->key, (size_t)f->key_len);
        switch (f->kind) {
        case F_BOOL: lua.pushboolean(L, (int)f->i); break;
        case F_INT: lua.pushinteger(L, f->i); break;
        case F_FLOAT: lua.pushnumber(L, f->f); break;
        default: lua.pushlstring(L, f->s, (size_t)f->s_len); break;
        }
        lua.rawset(L, -3);
    }
    if (a->has_tick)
        lua.pushinteger(L, a->tick);
    else
        lua.pushnil(L);
    lua.pushinteger(L, a->seq);
    lua.pushlstring(L, a->type, (size_t)a->type_len);
    lua.callk(L, 5, LUA_MULTRET, 0, NULL);
    return lua.gettop(L) - 1;
}

/* Registers the function stored under the global ``key`` and clears it. */
static int
take_global(lua_State *L)
{
    const char *key = (const char *)lua.touserdata(L, 1);
    lua.getglobal(L, key);
    int ref = lua.ref(L, LUA_REGISTRYINDEX);
    lua.pushnil(L);
    lua.setglobal(L, key);
    lua.pushinteger(L, ref);
    return 1;
}

/* 1: plain, copied into ``a``; 0: needs the general path; -1: error set. */
static int
extract_payload(PyObject *data, CallArgs *a, PyTypeObject *proxy_type)
{
    if (Py_TYPE(data) != proxy_type)
        return 0;
    /* mappingproxy's only field is the mapping; checked at import time */
    PyObject *dict = ((PyObject **)((char *)data + sizeof(PyObject)))[0];
    if (!PyDict_CheckExact(dict) || PyDict_GET_SIZE(dict) > MAX_FIELDS)
        return 0;
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    int n = 0;
    while (PyDict_Next(dict, &pos, &key, &value)) {
        if (!PyUnicode_CheckExact(key))
            return 0;
        Field *f = &a->fields[n++];
        f->key = PyUnicode_AsUTF8AndSize(key, &f->key_len);
        if (f->key == NULL)
            goto not_utf8;
        PyTypeObject *t = Py_TYPE(value);
        if (t == &PyUnicode_Type) {
            f->kind = F_STR;
            f->s = PyUnicode_AsUTF8AndSize(value, &f->s_len);
            if (f->s == NULL)
                goto not_utf8;
        } else if (t == &PyBool_Type) {
            f->kind = F_BOOL;
            f->i = value == Py_True;
        } else if (t == &PyLong_Type) {
            int overflow = 0;
            f->i = PyLong_AsLongLongAndOverflow(value, &overflow);
            if (overflow)
                return 0; /* lupa's rules for big ints apply */
            if (f->i == -1 && PyErr_Occurred())
                return -1;
            f->kind = F_INT;
        } else if (t == &PyFloat_Type) {
            f->kind = F_FLOAT;
            f->f = PyFloat_AS_DOUBLE(value);
        } else if (value == Py_None) {
            f->kind = F_NIL;
        } else {
            return 0;
        }
    }
    a->nfields = n;
    return 1;
not_utf8: /* lone surrogates: the general path reports them as lupa does */
    if (PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
        PyErr_Clear();
        return 0;
    }
    return -1;
}

/* ------------------------------------------------------------ Delivery type */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    lua_State *L;
    int func_ref;
    PyObject *runtime;     /* keeps the lupa runtime (and so L) alive */
    PyObject *engine;      /* the LuaEngine: the watchdog's key */
    PyObject *engine_dict; /* its __dict__: the call state engine.py keeps */
    PyObject *lock_acquire, *lock_release; /* engine._lock */
    PyObject *hook_acquire, *hook_release; /* engine._hook_lock */
    PyObject *lupa_acquire, *lupa_release; /* lupa's runtime lock */
    PyObject *armed;       /* watchdog.armed */
    PyObject *watchdog;    /* .idle, .wake() */
    PyObject *clock;       /* watchdog.clock */
    PyObject *settings;    /* .handler_timeout: float seconds or None, read per call */
    PyObject *end_call;    /* engine._end_call */
    PyObject *fallback;    /* ScriptEngine.deliver(sub_id, event) */
    PyObject *failed;      /* failed(sub_id, result, failure, reason) */
    PyObject *lua_error, *lua_memory_error;
    PyTypeObject *proxy_type;
} Delivery;

static PyObject *s_closed, *s_depth, *s_token, *s_pending_token, *s_in_call,
    *s_abort_reason, *s_last_reason, *s_chain, *s_forget, *s_idle, *s_wake,
    *s_unknown, *s_handler_timeout, *s_abort_on_entry, *num_zero, *num_one;

static int
delivery_traverse(Delivery *self, visitproc visit, void *arg)
{
    Py_VISIT(self->runtime);
    Py_VISIT(self->engine);
    Py_VISIT(self->engine_dict);
    Py_VISIT(self->lock_acquire);
    Py_VISIT(self->lock_release);
    Py_VISIT(self->hook_acquire);
    Py_VISIT(self->hook_release);
    Py_VISIT(self->lupa_acquire);
    Py_VISIT(self->lupa_release);
    Py_VISIT(self->armed);
    Py_VISIT(self->watchdog);
    Py_VISIT(self->clock);
    Py_VISIT(self->settings);
    Py_VISIT(self->end_call);
    Py_VISIT(self->fallback);
    Py_VISIT(self->failed);
    Py_VISIT(self->lua_error);
    Py_VISIT(self->lua_memory_error);
    Py_VISIT(self->proxy_type);
    return 0;
}

static int
delivery_clear(Delivery *self)
{
    self->L = NULL;
    Py_CLEAR(self->runtime);
    Py_CLEAR(self->engine);
    Py_CLEAR(self->engine_dict);
    Py_CLEAR(self->lock_acquire);
    Py_CLEAR(self->lock_release);
    Py_CLEAR(self->hook_acquire);
    Py_CLEAR(self->hook_release);
    Py_CLEAR(self->lupa_acquire);
    Py_CLEAR(self->lupa_release);
    Py_CLEAR(self->armed);
    Py_CLEAR(self->watchdog);
    Py_CLEAR(self->clock);
    Py_CLEAR(self->settings);
    Py_CLEAR(self->end_call);
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->failed);
    Py_CLEAR(self->lua_error);
    Py_CLEAR(self->lua_memory_error);
    Py_CLEAR(self->proxy_type);
    return 0;
}

static void
delivery_dealloc(Delivery *self)
{
    PyObject_GC_UnTrack(self);
    delivery_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *delivery_vectorcall(Delivery *self, PyObject *const *args, size_t nargsf,
                                     PyObject *kwnames);

static int
delivery_init(Delivery *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"engine", "runtime", "state", "lupa_lock", "global_key",
                             "fallback", "failed", "settings", NULL};
    PyObject *engine, *runtime, *state, *lupa_lock, *fallback, *failed, *settings;
    const char *global_key;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "$OOOOsOOO", kwlist, &engine, &runtime,
                                     &state, &lupa_lock, &global_key, &fallback, &failed,
                                     &settings))
        return -1;
    delivery_clear(self);
    self->vectorcall = (vectorcallfunc)delivery_vectorcall;
    void *L = PyLong_AsVoidPtr(state);
    if (L == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "state must be a lua_State address");
        return -1;
    }
    self->runtime = Py_NewRef(runtime);
    self->engine = Py_NewRef(engine);
    self->engine_dict = PyObject_GenericGetDict(engine, NULL);
    if (self->engine_dict == NULL)
        return -1;
    PyObject *lock = PyDict_GetItemString(self->engine_dict, "_lock");
    PyObject *hook_lock = PyDict_GetItemString(self->engine_dict, "_hook_lock");
    PyObject *watchdog = PyDict_GetItemString(self->engine_dict, "_watchdog");
    PyObject *armed = PyDict_GetItemString(self->engine_dict, "_armed");
    PyObject *clock = PyDict_GetItemString(self->engine_dict, "_clock");
    PyObject *lua_module = PyDict_GetItemString(self->engine_dict, "_lua");
    if (!lock || !hook_lock || !watchdog || !armed || !clock || !lua_module ||
        !PyDict_Check(armed)) {
        PyErr_SetString(PyExc_TypeError, "engine does not look like a LuaEngine");
        return -1;
    }
    self->lock_acquire = PyObject_GetAttrString(lock, "acquire");
    self->lock_release = PyObject_GetAttrString(lock, "release");
    self->hook_acquire = PyObject_GetAttrString(hook_lock, "acquire");
    self->hook_release = PyObject_GetAttrString(hook_lock, "release");
    self->lupa_acquire = PyObject_GetAttrString(lupa_lock, "acquire");
    self->lupa_release = PyObject_GetAttrString(lupa_lock, "release");
    self->end_call = PyObject_GetAttrString(engine, "_end_call");
    self->lua_error = PyObject_GetAttrString(lua_module, "LuaError");
    self->lua_memory_error = PyObject_GetAttrString(lua_module, "LuaMemoryError");
    if (!self->lock_acquire || !self->lock_release || !self->hook_acquire ||
        !self->hook_release || !self->lupa_acquire || !self->lupa_release ||
        !self->end_call || !self->lua_error || !self->lua_memory_error)
        return -1;
    self->armed = Py_NewRef(armed);
    self->watchdog = Py_NewRef(watchdog);
    self->clock = Py_NewRef(clock);
    self->settings = Py_NewRef(settings);
    self->fallback = Py_NewRef(fallback);
    self->failed = Py_NewRef(failed);
    self->proxy_type = (PyTypeObject *)Py_NewRef((PyObject *)&PyDictProxy_Type);

    /* take the Lua function out of the global the caller parked it in */
    if (mb_call_noargs(self->lupa_acquire) < 0)
        return -1;
    lua_State *Ls = (lua_State *)L;
    int base = lua.gettop(Ls);
    lua.pushcclosure(Ls, take_global, 0);
    lua.pushlightuserdata(Ls, (void *)global_key);
    int status = lua.pcallk(Ls, 1, 1, 0, 0, NULL);
    int isnum = 0;
    lua_Integer ref = status == LUA_OK ? lua.tointegerx(Ls, -1, &isnum) : 0;
    lua.settop(Ls, base);
    if (mb_call_noargs(self->lupa_release) < 0)
        return -1;
    if (status != LUA_OK || !isnum || ref <= 0) {
        PyErr_SetString(PyExc_RuntimeError, "could not register the Lua deliver function");
        return -1;
    }
    self->func_ref = (int)ref;
    self->L = Ls;
    return 0;
}

/* The caller's thread id as the watchdog wants it (threading.get_native_id). */
static PyObject *
native_thread_id(void)
{
    static __thread long tid = 0; /* per-thread cache of a per-thread constant */
    if (tid == 0)
        tid = (long)syscall(SYS_gettid);
    return PyLong_FromLong(tid);
}

/* Ends the call as LuaEngine._end_call does; returns the abort reason (a new
 * reference, Py_None when there was none) or NULL on error. */
static PyObject *
end_call(Delivery *self)
{
    PyObject *d = self->engine_dict;
    if (mb_call_noargs(self->hook_acquire) < 0)
        return NULL;
    PyObject *reason = PyDict_GetItemWithError(d, s_abort_reason);
    PyObject *chain = PyDict_GetItemWithError(d, s_chain);
    int simple = reason == Py_None && chain != NULL && PyList_CheckExact(chain) &&
                 PyList_GET_SIZE(chain) == 0;
    if (simple) {
        if (PyDict_SetItem(d, s_in_call, Py_False) < 0 ||
            PyDict_SetItem(d, s_last_reason, Py_None) < 0) {
            mb_release_keeping_error(self->hook_release);
            return NULL;
        }
    }
    if (mb_call_noargs(self->hook_release) < 0)
        return NULL;
    if (simple)
        return Py_NewRef(Py_None);
    /* an abort or coroutines left mid-resume: engine.py's own code ends it */
    PyObject *leftover = PyObject_CallNoArgs(self->end_call);
    if (leftover == NULL)
        return NULL;
    int forget = PyObject_IsTrue(leftover);
    Py_DECREF(leftover);
    if (forget < 0)
        return NULL;
    if (forget) {
        PyObject *func = PyDict_GetItemWithError(d, s_forget);
        if (func != NULL && func != Py_None && mb_call_noargs(func) < 0)
            return NULL;
        if (PyErr_Occurred())
            return NULL;
    }
    PyObject *last = PyDict_GetItemWithError(d, s_last_reason);
    if (last == NULL)
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    return Py_NewRef(last);
}

/* 1 if the engine can take a call now (open and idle), storing the token the
 * call gets; 0 if not; -1 on error. Engine lock held. */
static int
engine_ready(Delivery *self, long long *token)
{
    PyObject *d = self->engine_dict;
    PyObject *closed = PyDict_GetItemWithError(d, s_closed);
    PyObject *depth = PyDict_GetItemWithError(d, s_depth);
    PyObject *current = PyDict_GetItemWithError(d, s_token);
    if (!closed || !depth || !current)
        return PyErr_Occurred() ? -1 : 0;
    if (closed != Py_False || !PyLong_CheckExact(depth) || !PyLong_CheckExact(current))
        return 0;
    long long level = PyLong_AsLongLong(depth);
    long long next = PyLong_AsLongLong(current);
    if (PyErr_Occurred())
        return -1;
    if (level != 0 || next == LLONG_MAX)
        return 0;
    *token = next + 1;
    return 1;
}

/* After the call is marked live: an abort recorded for its token before it
 * started takes effect now (LuaEngine._guarded's check, in the same order:
 * an abort() racing with the marking is seen either here or by abort()). */
static int
abort_on_entry(Delivery *self, PyObject *token_obj)
{
    PyObject *pending = PyDict_GetItemWithError(self->engine_dict, s_pending_token);
    if (pending == NULL)
        return PyErr_Occurred() ? -1 : 0;
    int same = PyObject_RichCompareBool(pending, token_obj, Py_EQ);
    if (same <= 0)
        return same;
    PyObject *r = PyObject_CallMethodOneArg(self->engine, s_abort_on_entry, token_obj);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

static PyObject *
delivery_vectorcall(Delivery *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 2 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "Delivery(sub_id, event) takes 2 arguments");
        return NULL;
    }
    PyObject *sub_id = args[0], *event = args[1];
    if (self->L == NULL)
        goto general;
    CallArgs a;
    if (!PyTuple_Check(event) || PyTuple_GET_SIZE(event) < 4 || !PyLong_CheckExact(sub_id))
        goto general;
    PyObject *type = PyTuple_GET_ITEM(event, 0), *data = PyTuple_GET_ITEM(event, 1),
             *seq = PyTuple_GET_ITEM(event, 2), *tick = PyTuple_GET_ITEM(event, 3);
    if (!PyUnicode_CheckExact(type) || !PyLong_CheckExact(seq) ||
        (tick != Py_None && !PyLong_CheckExact(tick)))
        goto general;
    int overflow = 0;
    a.func_ref = self->func_ref;
    a.sub_id = PyLong_AsLongLongAndOverflow(sub_id, &overflow);
    if (overflow)
        goto general;
    a.seq = PyLong_AsLongLongAndOverflow(seq, &overflow);
    if (overflow)
        goto general;
    a.has_tick = tick != Py_None;
    a.tick = a.has_tick ? PyLong_AsLongLongAndOverflow(tick, &overflow) : 0;
    if (overflow)
        goto general;
    if (PyErr_Occurred())
        return NULL;
    a.type = PyUnicode_AsUTF8AndSize(type, &a.type_len);
    if (a.type == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
            return NULL;
        PyErr_Clear();
        goto general;
    }
    int plain = extract_payload(data, &a, self->proxy_type);
    if (plain < 0)
        return NULL;
    if (plain == 0)
        goto general;

    /* ---- the engine's lock, then the call's token (LuaEngine._guarded) */
    if (mb_call_noargs(self->lock_acquire) < 0)
        return NULL;
    long long token = 0;
    int ready = engine_ready(self, &token);
    if (ready <= 0) {
        mb_release_keeping_error(self->lock_release);
        if (ready < 0)
            return NULL;
        goto general;
    }
    PyObject *d = self->engine_dict;
    PyObject *entry = NULL, *limit = NULL;
    PyObject *token_obj = PyLong_FromLongLong(token);
    if (token_obj == NULL)
        goto unlock_fail;
    limit = PyObject_GetAttr(self->settings, s_handler_timeout);
    if (limit == NULL)
        goto unlock_fail;
    if (limit != Py_None) {
        PyObject *now = PyObject_CallNoArgs(self->clock);
        PyObject *tid = native_thread_id();
        if (now == NULL || tid == NULL) {
            Py_XDECREF(now);
            Py_XDECREF(tid);
            goto unlock_fail;
        }
        entry = PyTuple_Pack(4, now, limit, token_obj, tid);
        Py_DECREF(now);
        Py_DECREF(tid);
        if (entry == NULL)
            goto unlock_fail;
    }
    if (PyDict_SetItem(d, s_token, token_obj) < 0 || PyDict_SetItem(d, s_in_call, Py_True) < 0)
        goto unlock_fail;
    if (abort_on_entry(self, token_obj) < 0)
        goto end_fail;
    if (entry != NULL) {
        if (PyDict_SetItem(self->armed, self->engine, entry) < 0)
            goto end_fail;
        PyObject *idle = PyObject_GetAttr(self->watchdog, s_idle);
        if (idle == NULL)
            goto end_fail;
        int sleeping = PyObject_IsTrue(idle);
        Py_DECREF(idle);
        if (sleeping < 0)
            goto end_fail;
        if (sleeping) {
            PyObject *r = PyObject_CallMethodNoArgs(self->watchdog, s_wake);
            if (r == NULL)
                goto end_fail;
            Py_DECREF(r);
        }
    }
    if (PyDict_SetItem(d, s_depth, num_one) < 0)
        goto end_fail;

    /* ---- Lua, under lupa's lock, without the GIL */
    if (mb_call_noargs(self->lupa_acquire) < 0) {
        PyDict_SetItem(d, s_depth, num_zero);
        goto end_fail;
    }
    lua_State *L = self->L;
    int base = lua.gettop(L);
    lua.pushcclosure(L, deliver_in_lua, 0);
    lua.pushlightuserdata(L, &a);
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = lua.pcallk(L, 1, LUA_MULTRET, 0, 0, NULL);
    Py_END_ALLOW_THREADS
    int nresults = lua.gettop(L) - base;
    int ok = status == LUA_OK && nresults >= 1 && lua.toboolean(L, base + 1);
    PyObject *message = NULL;
    if (!ok) {
        int at = status == LUA_OK ? base + 2 : base + 1;
        if (at <= lua.gettop(L) && lua.type(L, at) == LUA_TSTRING) {
            size_t len = 0;
            const char *text = lua.tolstring(L, at, &len);
            message = PyUnicode_DecodeUTF8(text, (Py_ssize_t)len, "replace");
        } else {
            message = Py_NewRef(s_unknown);
        }
    }
    lua.settop(L, base);
    int released = mb_call_noargs(self->lupa_release);

    /* ---- end the call (LuaEngine._end_call) */
    int cleanup = PyDict_SetItem(d, s_depth, num_zero);
    if (entry != NULL && PyDict_DelItem(self->armed, self->engine) < 0) {
        if (PyErr_ExceptionMatches(PyExc_KeyError))
            PyErr_Clear();
        else
            cleanup = -1;
    }
    PyObject *reason = (released < 0 || cleanup < 0) ? NULL : end_call(self);
    Py_DECREF(token_obj);
    Py_XDECREF(entry);
    if (reason == NULL) {
        Py_XDECREF(message);
        Py_DECREF(limit);
        mb_release_keeping_error(self->lock_release);
        return NULL;
    }
    if (mb_call_noargs(self->lock_release) < 0) {
        Py_DECREF(reason);
        Py_XDECREF(message);
        Py_DECREF(limit);
        return NULL;
    }
    if (ok && reason == Py_None) {
        Py_DECREF(reason);
        Py_DECREF(limit);
        Py_RETURN_NONE;
    }
    if (!ok && message == NULL) {
        Py_DECREF(reason);
        Py_DECREF(limit);
        return NULL;
    }
    /* ---- anything else: engine.py's outcome rules (raise, report) */
    PyObject *result = NULL, *failure = Py_None;
    if (status == LUA_OK) {
        result = ok ? PyTuple_Pack(1, Py_True) : PyTuple_Pack(2, Py_False, message);
        Py_INCREF(failure);
    } else {
        result = Py_NewRef(Py_None);
        failure = PyObject_CallOneArg(
            status == LUA_ERRMEM ? self->lua_memory_error : self->lua_error, message);
    }
    Py_XDECREF(message);
    if (result == NULL || failure == NULL) {
        Py_XDECREF(result);
        Py_XDECREF(failure);
        Py_DECREF(reason);
        Py_DECREF(limit);
        return NULL;
    }
    PyObject *fargs[5] = {sub_id, result, failure, reason, limit};
    PyObject *r = PyObject_Vectorcall(self->failed, fargs, 5, NULL);
    Py_DECREF(limit);
    Py_DECREF(result);
    Py_DECREF(failure);
    Py_DECREF(reason);
    return r;

end_fail:
    /* marked live but never ran: end it the way engine.py would */
    {
        PyObject *type_, *value, *tb;
        PyErr_Fetch(&type_, &value, &tb);
        if (entry != NULL && PyDict_DelItem(self->armed, self->engine) < 0)
            PyErr_Clear(); /* not armed yet */
        PyObject *r = end_call(self);
        if (r == NULL)
            PyErr_WriteUnraisable(self->end_call);
        Py_XDECREF(r);
        PyErr_Restore(type_, value, tb);
    }
unlock_fail:
    Py_XDECREF(limit);
    Py_XDECREF(token_obj);
    Py_XDECREF(entry);
    mb_release_keeping_error(self->lock_release);
    return NULL;

general:
    {
        PyObject *fargs[2] = {sub_id, event};
        return PyObject_Vectorcall(self->fallback, fargs, 2, NULL);
    }
}

static PyTypeObject DeliveryType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "moonbus.lua._fastcall.Delivery",
    .tp_basicsize = sizeof(Delivery),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Event delivery into one script's Lua handlers (see the module source).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)delivery_init,
    .tp_dealloc = (destructor)delivery_dealloc,
    .tp_traverse = (traverseproc)delivery_traverse,
    .tp_clear = (inquiry)delivery_clear,
    .tp_vectorcall_offset = offsetof(Delivery, vectorcall),
    .tp_call = PyVectorcall_Call,
};

/* mappingproxy keeps its mapping as its first field after the header; make
 * sure of that on this interpreter before extract_payload relies on it. */
static int
check_proxy_layout(void)
{
    PyObject *dict = PyDict_New();
    if (dict == NULL)
        return -1;
    PyObject *proxy = PyDictProxy_New(dict);
    if (proxy == NULL) {
        Py_DECREF(dict);
        return -1;
    }
    int same = ((PyObject **)((char *)proxy + sizeof(PyObject)))[0] == dict;
    Py_DECREF(proxy);
    Py_DECREF(dict);
    if (!same) {
        PyErr_SetString(PyExc_ImportError, "unexpected mappingproxy layout");
        return -1;
    }
    return 0;
}

static struct PyModuleDef fastcall_module = {
    PyModuleDef_HEAD_INIT, "_fastcall", "Event delivery into Lua handlers, in C.", -1, NULL};

PyMODINIT_FUNC
PyInit__fastcall(void)
{
    if (check_proxy_layout() < 0)
        return NULL;
    PyObject *lupa = PyImport_ImportModule("lupa.lua54");
    if (lupa == NULL)
        return NULL;
    PyObject *path = PyObject_GetAttrString(lupa, "__file__");
    Py_DECREF(lupa);
    if (path == NULL)
        return NULL;
    const char *cpath = PyUnicode_AsUTF8(path);
    int loaded = cpath == NULL ? -1 : load_api(cpath);
    Py_DECREF(path);
    if (loaded < 0)
        return NULL;
#define INTERN(var, text)                                                             do {                                                                                  var = PyUnicode_InternFromString(text);                                           if (var == NULL)                                                                      return NULL;                                                              } while (0)
    INTERN(s_closed, "_closed");
    INTERN(s_depth, "_depth");
    INTERN(s_token, "_token");
    INTERN(s_pending_token, "_pending_token");
    INTERN(s_in_call, "_in_call");
    INTERN(s_abort_reason, "_abort_reason");
    INTERN(s_last_reason, "_last_reason");
    INTERN(s_chain, "_chain");
    INTERN(s_forget, "_forget");
    INTERN(s_idle, "idle");
    INTERN(s_wake, "wake");
    INTERN(s_unknown, "unknown error");
    INTERN(s_handler_timeout, "handler_timeout");
    INTERN(s_abort_on_entry, "_abort_on_entry");
#undef INTERN
    num_zero = PyLong_FromLong(0);
    num_one = PyLong_FromLong(1);
    if (!num_zero || !num_one)
        return NULL;
    if (PyType_Ready(&DeliveryType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&fastcall_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Delivery", (PyObject *)&DeliveryType) < 0 ||
        PyModule_AddStringConstant(m, "LUA_MODULE", "lupa.lua54") < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
