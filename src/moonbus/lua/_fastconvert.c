/*
 * moonbus.lua._fastconvert: Python data into a new Lua table, in C.
 *
 * Why: a host API returning 30 dicts of six scalars (an entity query run
 * every frame) cost ~100 us per call through LuaConverter.to_lua, which
 * makes a Python dict per element and calls lupa's table_from for each
 * (lupa's generic push checks every value against a dozen types). This
 * copies the shapes games return straight into Lua.
 *
 * Converter(state=, lupa_lock=, global_key=, classes=, max_depth=)
 *   conv.bind(builder)    the Lua function the constructor parked under
 *                         global_key (see fastconvert.py)
 *   conv(value)           a new Lua table (lupa object), or None: "use the
 *                         generic path" (LuaConverter._to_lua)
 *
 * What it takes: an exact list, tuple or dict at the top, nested up to
 * min(MAX_FAST_DEPTH, max_depth + 1) container levels, of exact str (valid
 * UTF-8), int (64-bit), float, bool and None, dict keys exact str, int,
 * float (not NaN) or bool, and instances of classes already in ``classes``
 * (LuaConverter._classes: type -> its proxy metatable, filled by the generic
 * path the first time it meets a @lua_api class). Anything else, or more than
 * MAX_OPS values, returns None before anything was done in Lua, so the
 * generic path gives exactly today's result or error (deep or cyclic
 * values, big ints, bad keys, unknown objects, lone surrogates...).
 *
 * How: pass 1 (GIL held, no Lua, no Python code runs) walks the value into a
 * flat list of ops (strings are kept alive by a new reference each); pass 2
 * is a lua_CFunction (``build``) called through the bound lupa function with
 * the @lua_api objects and their metatables as arguments, so lupa takes its
 * runtime lock, pushes the objects as it pushes any Python object, runs the
 * call protected (a Lua memory error becomes lupa's LuaMemoryError, as any
 * call's) and wraps the returned table. ``build`` makes each proxy with the
 * make_proxy of host_bridge.lua (so proxies are exactly the generic path's), then
 * replays the ops with lua_createtable/rawset; it reads no Python object and
 * runs without the GIL.
 *
 * Threads: a converter belongs to one engine and is used by the thread that
 * runs it (holding the engine's lock). ``busy`` makes a re-entrant or
 * concurrent use (a finalizer running host code during pass 2) take the
 * generic path instead of sharing the op buffer.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../_capi.h"

/* ------------------------------------------------------------ Lua 5.4 API */
#include "_luaapi.h"

#define lua_upvalueindex(i) (LUA_REGISTRYINDEX - (i))

#define MAX_FAST_DEPTH 8      /* container levels taken here; deeper: generic */
#define MAX_OPS (1 << 16)     /* values per conversion; more: generic */
#define MAX_OBJECTS 4096      /* @lua_api objects per conversion; more: generic */
#define KEEP_OPS 4096         /* a larger op buffer is freed after the call */
#define NAME_CACHE 64         /* quick_invoke's method names (power of 2) */
#define MAX_INVOKE_ARGS 8     /* more arguments: quick_invoke hands the call to Python */
#define SHORT_RESULT 256      /* longer str results: pushed by Python (lua_room checks) */

/* lupa.lua54.LuaError and LuaMemoryError, looked up at import (alive for the
 * process, like the module holding them). */
static PyObject *lua_error, *lua_memory_error;

/* moonbus.shared._fastint.IntOp and KindCheck (layout head in _capi.h:
 * MbCellUser), looked up once at import; NULL when that module is not
 * built. Static types, alive for the process like the module holding them. */
static PyTypeObject *intop_type, *kindcheck_type;

/* ------------------------------------------------------------------- ops */
enum { OP_NIL, OP_FALSE, OP_TRUE, OP_INT, OP_FLOAT, OP_STR, OP_LIST, OP_DICT, OP_PROXY,
       OP_KEY };

/* Distinct str keys of one conversion (by identity: the same key object in
 * every dict of a list) are pushed once and copied with lua_pushvalue, which
 * skips Lua's string hashing and interning per field. */
#define KEY_SLOTS 64        /* distinct keys kept on the stack; more: pushed each time */
#define KEY_TABLE 128       /* open-addressing table over them (power of 2) */

typedef struct {
    int kind;
    int n;          /* OP_LIST/OP_DICT: entries; OP_PROXY: object; OP_KEY: slot */
    Py_ssize_t len; /* OP_STR: bytes; OP_LIST/OP_DICT: 1 = build as lupa does (below) */
    union {
        lua_Integer i;
        lua_Number f;
        const char *s;
    } v;
} Op;

struct NameCache {
    const char *ptr[NAME_CACHE];
    PyObject *obj[NAME_CACHE];
};

typedef struct {
    PyObject_HEAD
    lua_State *L;
    PyObject *lupa_acquire, *lupa_release;
    PyObject *classes;  /* type -> proxy metatable (LuaConverter._classes) */
    PyObject *builder;  /* the bound lupa function running ``build`` */
    int depth_limit;    /* container levels taken here */
    int busy;
    Op *ops;
    Py_ssize_t nops, cap;
    PyObject **held;    /* new references kept for the call: strings, then args */
    Py_ssize_t nheld, held_cap;
    Py_ssize_t nobjects;
    PyObject *key_obj[KEY_TABLE]; /* key object -> key_slot (NULL: free) */
    int key_slot[KEY_TABLE];
    const char *key_s[KEY_SLOTS]; /* the UTF-8 of slot k */
    Py_ssize_t key_len[KEY_SLOTS];
    int nkeys;
    int box_ref;        /* registry ref of host_bridge.lua's box (to_box) */
    int direct_status;  /* to_box's walk: 1 built, 0 not taken, -1 error set */
    PyObject *direct_value;
    /* quick_invoke (below): what it hands back to Python (take_pending),
     * set and taken with the GIL, NULL when nothing is pending; the method
     * name cache (Lua string address -> interned str, checked by content);
     * how its calls ended. */
    PyObject *pending_obj, *pending_name, *pending_method, *pending_result, *pending_error;
    int pending_tried;
    struct NameCache *names; /* made by the first quick_invoke: most states never call */
    unsigned long long invokes_in_c, invokes_finished_in_python, invokes_fallback;
} Converter;

static int
grow(void **buf, Py_ssize_t *cap, Py_ssize_t need, size_t item)
{
    Py_ssize_t n = *cap ? *cap : 64;
    while (n < need)
        n *= 2;
    void *p = PyMem_Realloc(*buf, (size_t)n * item);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *buf = p;
    *cap = n;
    return 0;
}

static inline Op *
new_op(Converter *c)
{
    if (c->nops >= c->cap && grow((void **)&c->ops, &c->cap, c->nops + 1, sizeof(Op)) < 0)
        return NULL;
    return &c->ops[c->nops++];
}

static inline int
hold(Converter *c, PyObject *o)
{
    if (c->nheld >= c->held_cap &&
        grow((void **)&c->held, &c->held_cap, c->nheld + 1, sizeof(PyObject *)) < 0)
        return -1;
    c->held[c->nheld++] = Py_NewRef(o);
    return 0;
}

/* A str into ``op``: 1; 0 for the generic path (not UTF-8); -1 error set. */
static int
take_str(Converter *c, PyObject *s, Op *op)
{
    Py_ssize_t len;
    const char *u = PyUnicode_AsUTF8AndSize(s, &len);
    if (u == NULL) {
        if (PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
            PyErr_Clear();
            return 0;
        }
        return -1;
    }
    if (hold(c, s) < 0)
        return -1;
    op->kind = OP_STR;
    op->v.s = u;
    op->len = len;
    return 1;
}

/* A scalar into ``op``: 1; 0 not a scalar this path takes; -1 error set. */
static int
take_scalar(Converter *c, PyObject *v, Op *op)
{
    PyTypeObject *t = Py_TYPE(v);
    if (t == &PyUnicode_Type)
        return take_str(c, v, op);
    if (t == &PyLong_Type) {
        int overflow = 0;
        op->v.i = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow)
            return 0; /* the generic path reports it */
        if (op->v.i == -1 && PyErr_Occurred())
            return -1;
        op->kind = OP_INT;
        return 1;
    }
    if (t == &PyFloat_Type) {
        op->kind = OP_FLOAT;
        op->v.f = PyFloat_AS_DOUBLE(v);
        return 1;
    }
    if (t == &PyBool_Type) {
        op->kind = v == Py_True ? OP_TRUE : OP_FALSE;
        return 1;
    }
    if (v == Py_None) {
        op->kind = OP_NIL;
        return 1;
    }
    return 0;
}

/* A str dict key into ``op``: a slot of the key cache when there is room
 * (OP_KEY), else a plain string; 1, 0 (generic path) or -1 as take_str. */
static int
take_key(Converter *c, PyObject *key, Op *op)
{
    size_t h = ((uintptr_t)key >> 4) & (KEY_TABLE - 1);
    while (c->key_obj[h] != NULL) {
        if (c->key_obj[h] == key) {
            op->kind = OP_KEY;
            op->n = c->key_slot[h];
            return 1;
        }
        h = (h + 1) & (KEY_TABLE - 1);
    }
    int r = take_str(c, key, op); /* holds the key: its identity stays unique */
    if (r <= 0 || c->nkeys >= KEY_SLOTS)
        return r;
    int slot = c->nkeys++;
    c->key_obj[h] = key;
    c->key_slot[h] = slot;
    c->key_s[slot] = op->v.s;
    c->key_len[slot] = op->len;
    op->kind = OP_KEY;
    op->n = slot;
    return 1;
}

static int walk(Converter *c, PyObject *v, int depth);

/* One value (pass 1): 1 recorded; 0 for the generic path; -1 error set. */
static int
walk(Converter *c, PyObject *v, int depth)
{
    if (c->nops >= MAX_OPS)
        return 0;
    Op *op = new_op(c);
    if (op == NULL)
        return -1;
    int r = take_scalar(c, v, op);
    if (r != 0)
        return r;
    PyTypeObject *t = Py_TYPE(v);
    Py_ssize_t at = op - c->ops; /* the buffer may move while children are added */
    if (t == &PyList_Type || t == &PyTuple_Type) {
        if (depth >= c->depth_limit)
            return 0;
        Py_ssize_t n = Py_SIZE(v);
        if (n > MAX_OPS)
            return 0;
        op->kind = OP_LIST;
        op->n = (int)n;
        op->len = 0;
        PyObject **items = t == &PyList_Type ? ((PyListObject *)v)->ob_item
                                             : ((PyTupleObject *)v)->ob_item;
        int holes = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            holes |= items[i] == Py_None;
            r = walk(c, items[i], depth + 1);
            if (r <= 0)
                return r;
        }
        c->ops[at].len = holes;
        return 1;
    }
    if (t == &PyDict_Type) {
        if (depth >= c->depth_limit)
            return 0;
        op->kind = OP_DICT;
        op->len = 0;
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        int n = 0, number_keys = 0;
        while (PyDict_Next(v, &pos, &key, &value)) {
            if (value == Py_None)
                continue; /* an absent key, as lupa copies it */
            PyTypeObject *kt = Py_TYPE(key);
            if (kt != &PyUnicode_Type && kt != &PyLong_Type && kt != &PyBool_Type &&
                !(kt == &PyFloat_Type && !isnan(PyFloat_AS_DOUBLE(key))))
                return 0; /* the generic path accepts or reports it */
            number_keys |= kt != &PyUnicode_Type;
            if (c->nops >= MAX_OPS)
                return 0;
            Op *kop = new_op(c);
            if (kop == NULL)
                return -1;
            r = kt == &PyUnicode_Type ? take_key(c, key, kop) : take_scalar(c, key, kop);
            if (r <= 0)
                return r;
            r = walk(c, value, depth + 1);
            if (r <= 0)
                return r;
            n++;
        }
        c->ops[at].n = n;
        c->ops[at].len = number_keys;
        return 1;
    }
    /* a @lua_api object whose class the generic path has seen already */
    PyObject *mt = PyDict_GetItemWithError(c->classes, (PyObject *)t);
    if (mt == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (c->nobjects >= MAX_OBJECTS)
        return 0;
    op->kind = OP_PROXY;
    op->n = (int)c->nobjects++;
    return 1;
}

/* The arguments of the builder call (metatable, object per proxy, in op
 * order), appended to ``held`` after position ``first``. */
static int
collect_objects(Converter *c, PyObject *v, Py_ssize_t *pos)
{
    /* replays pass 1's order over the same (unchanged: no Python code ran) value */
    Op *op = &c->ops[(*pos)++];
    switch (op->kind) {
    case OP_LIST: {
        PyObject **items = PyList_CheckExact(v) ? ((PyListObject *)v)->ob_item
                                                : ((PyTupleObject *)v)->ob_item;
        for (int i = 0; i < op->n; i++)
            if (collect_objects(c, items[i], pos) < 0)
                return -1;
        return 0;
    }
    case OP_DICT: {
        Py_ssize_t dpos = 0;
        PyObject *key, *value;
        while (PyDict_Next(v, &dpos, &key, &value)) {
            if (value == Py_None)
                continue;
            (*pos)++; /* the key */
            if (collect_objects(c, value, pos) < 0)
                return -1;
        }
        return 0;
    }
    case OP_PROXY: {
        PyObject *mt = PyDict_GetItemWithError(c->classes, (PyObject *)Py_TYPE(v));
        if (mt == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_RuntimeError, "proxy class vanished during conversion");
            return -1;
        }
        if (hold(c, mt) < 0 || hold(c, v) < 0)
            return -1;
        return 0;
    }
    default:
        return 0;
    }
}

/* ------------------------------------------------------ pass 2 (in Lua) */
static void
replay(lua_State *L, const Op *ops, Py_ssize_t *pos, int proxies, int keys)
{
    const Op *op = &ops[(*pos)++];
    switch (op->kind) {
    case OP_KEY: lua.pushvalue(L, keys + op->n); break;
    case OP_NIL: lua.pushnil(L); break;
    case OP_FALSE: lua.pushboolean(L, 0); break;
    case OP_TRUE: lua.pushboolean(L, 1); break;
    case OP_INT: lua.pushinteger(L, op->v.i); break;
    case OP_FLOAT: lua.pushnumber(L, op->v.f); break;
    case OP_STR: lua.pushlstring(L, op->v.s, (size_t)op->len); break;
    case OP_PROXY: lua.pushvalue(L, proxies + op->n); break;
    /* Presized tables are built without rehashing. Where the layout shows
     * (the border `#` finds in a list with holes or a table of number keys),
     * the table is built with lupa's own sequence of calls instead (a new
     * empty table, rawset of every value, nil included), so `#` answers as
     * on the generic path. */
    case OP_LIST:
        lua.createtable(L, op->len ? 0 : op->n, 0);
        for (int i = 1; i <= op->n; i++) {
            replay(L, ops, pos, proxies, keys);
            lua.rawseti(L, -2, i);
        }
        break;
    case OP_DICT:
        lua.createtable(L, 0, op->len ? 0 : op->n);
        for (int i = 0; i < op->n; i++) {
            replay(L, ops, pos, proxies, keys);
            replay(L, ops, pos, proxies, keys);
            lua.rawset(L, -3);
        }
        break;
    }
}

/* build(mt1, obj1, mt2, obj2, ...) -> the converted table. Upvalues: the
 * Converter (light userdata) and host_bridge.lua's make_proxy. Runs inside lupa's
 * protected call, without the GIL; errors (memory) propagate to lupa. */
static int
build(lua_State *L)
{
    Converter *c = (Converter *)lua.touserdata(L, lua_upvalueindex(1));
    int nargs = lua.gettop(L);
    int nobjects = nargs / 2;
    if (!lua.checkstack(L, nobjects + c->nkeys + 3 * MAX_FAST_DEPTH + 8)) {
        lua.pushlstring(L, "not enough memory", 17);
        return lua.error(L);
    }
    for (int k = 0; k < nobjects; k++) {
        lua.pushvalue(L, lua_upvalueindex(2));
        lua.pushvalue(L, 2 * k + 2); /* the object */
        lua.pushvalue(L, 2 * k + 1); /* its metatable */
        lua.callk(L, 2, 1, 0, NULL);
    }
    for (int k = 0; k < c->nkeys; k++)
        lua.pushlstring(L, c->key_s[k], (size_t)c->key_len[k]);
    Py_ssize_t pos = 0;
    replay(L, c->ops, &pos, nargs + 1, nargs + nobjects + 1);
    return 1;
}

/* Registers ``build`` under the global named by the light userdata argument;
 * that global holds {make_proxy, box} (fastconvert.py): make_proxy becomes an
 * upvalue of ``build``, the box gets a registry reference (for to_box). */
static int
install(lua_State *L)
{
    Converter *c = (Converter *)lua.touserdata(L, 1);
    const char *key = (const char *)lua.touserdata(L, 2);
    lua.getglobal(L, key);      /* 3: {make_proxy, box} */
    lua.rawgeti(L, 3, 2);
    c->box_ref = lua.ref(L, LUA_REGISTRYINDEX);
    lua.pushvalue(L, 1);        /* the Converter */
    lua.rawgeti(L, 3, 1);       /* make_proxy */
    lua.pushcclosure(L, build, 2);
    lua.setglobal(L, key);
    return 0;
}

/* ----------------------------------------- to_box: one pass, GIL held */
/* For a host API method's result (LuaConverter._invoke): the value is walked
 * and built in one pass, holding the GIL, inside a lua_pcall on the main
 * state under lupa's lock; the table goes to box[1], and host_bridge.lua's method
 * wrapper takes it out (no lupa object is made for it). Every item, dict value
 * and new key met is held before it is used (``held``, released after the
 * call, also when a Lua error unwound the walk; the root is the caller's): a
 * Lua allocation may run a finalizer of a lupa object, i.e. Python code,
 * which could change the value under the walk. @lua_api objects, number keys and anything the two-pass path
 * or the generic path must see return "not taken" (0) before the result is
 * stored; the caller then converts as usual. */
#define KEY_BASE 2 /* stack: 1 box, 2..KEY_SLOTS+1 key slots, then the tables */

static int
push_key(lua_State *L, Converter *c, PyObject *key)
{
    size_t h = ((uintptr_t)key >> 4) & (KEY_TABLE - 1);
    while (c->key_obj[h] != NULL) {
        if (c->key_obj[h] == key) {
            lua.pushvalue(L, KEY_BASE + c->key_slot[h]);
            return 1;
        }
        h = (h + 1) & (KEY_TABLE - 1);
    }
    Py_ssize_t len;
    const char *u = PyUnicode_AsUTF8AndSize(key, &len);
    if (u == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
            return -1;
        PyErr_Clear();
        return 0;
    }
    if (hold(c, key) < 0)
        return -1;
    lua.pushlstring(L, u, (size_t)len);
    if (c->nkeys < KEY_SLOTS) {
        /* held until the end: its identity stays unique */
        int slot = c->nkeys++;
        c->key_obj[h] = key;
        c->key_slot[h] = slot;
        lua.copy(L, -1, KEY_BASE + slot);
    }
    return 1;
}

/* A plain number or boolean (not a str), read into a C value at once, before
 * any Lua allocation could run a finalizer; pushed by push_number. */
typedef struct {
    int kind; /* OP_INT, OP_FLOAT, OP_TRUE, OP_FALSE */
    lua_Integer i;
    lua_Number f;
} Number;

/* 1 read, 0 not one (or too big for Lua: the generic path reports it), -1 error. */
static inline int
read_number(PyObject *v, Number *out)
{
    PyTypeObject *t = Py_TYPE(v);
    if (t == &PyLong_Type) {
        int overflow = 0;
        out->i = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow)
            return 0;
        if (out->i == -1 && PyErr_Occurred())
            return -1;
        out->kind = OP_INT;
        return 1;
    }
    if (t == &PyFloat_Type) {
        out->kind = OP_FLOAT;
        out->f = PyFloat_AS_DOUBLE(v);
        return 1;
    }
    if (t == &PyBool_Type) {
        out->kind = v == Py_True ? OP_TRUE : OP_FALSE;
        return 1;
    }
    return 0;
}

static inline void
push_number(lua_State *L, const Number *n)
{
    switch (n->kind) {
    case OP_INT: lua.pushinteger(L, n->i); break;
    case OP_FLOAT: lua.pushnumber(L, n->f); break;
    default: lua.pushboolean(L, n->kind == OP_TRUE); break;
    }
}

/* One value: 1 pushed, 0 not taken, -1 error set. ``v`` is alive now; it is
 * held before the first Lua allocation that could run a finalizer, unless
 * ``held`` says the caller holds it already. */
static int
push_direct(lua_State *L, Converter *c, PyObject *v, int depth, int held)
{
    if (++c->nops > MAX_OPS)
        return 0;
    PyTypeObject *t = Py_TYPE(v);
    if (t == &PyUnicode_Type) {
        Py_ssize_t len;
        const char *u = PyUnicode_AsUTF8AndSize(v, &len);
        if (u == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
                return -1;
            PyErr_Clear();
            return 0;
        }
        if (!held && hold(c, v) < 0)
            return -1;
        lua.pushlstring(L, u, (size_t)len);
        return 1;
    }
    if (v == Py_None) {
        lua.pushnil(L);
        return 1;
    }
    Number num;
    int r = read_number(v, &num);
    if (r != 0) {
        if (r > 0)
            push_number(L, &num);
        return r;
    }
    if (depth >= c->depth_limit)
        return 0;
    if (t == &PyList_Type || t == &PyTuple_Type) {
        Py_ssize_t n = Py_SIZE(v);
        if (n > MAX_OPS)
            return 0;
        if (!held && hold(c, v) < 0)
            return -1;
        int holes = 0;
        for (Py_ssize_t i = 0; i < n && !holes; i++)
            holes = (t == &PyList_Type ? PyList_GET_ITEM(v, i) : PyTuple_GET_ITEM(v, i))
                    == Py_None;
        lua.createtable(L, holes ? 0 : (int)n, 0); /* holes: as lupa builds it */
        /* re-read every item: a finalizer run by a Lua allocation may have
         * changed the list (the generic path would have seen the change too) */
        for (Py_ssize_t i = 0; i < Py_SIZE(v); i++) {
            PyObject *item = t == &PyList_Type ? PyList_GET_ITEM(v, i) : PyTuple_GET_ITEM(v, i);
            r = push_direct(L, c, item, depth + 1, 0);
            if (r <= 0)
                return r;
            lua.rawseti(L, -2, i + 1);
        }
        return 1;
    }
    if (t == &PyDict_Type) {
        if (!held && hold(c, v) < 0)
            return -1;
        lua.createtable(L, 0, (int)PyDict_GET_SIZE(v));
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        while (PyDict_Next(v, &pos, &key, &value)) {
            if (value == Py_None)
                continue;
            if (Py_TYPE(key) != &PyUnicode_Type)
                return 0; /* number keys: the two-pass path builds them as lupa does */
            PyTypeObject *vt = Py_TYPE(value);
            if (vt == &PyLong_Type || vt == &PyFloat_Type || vt == &PyBool_Type) {
                Number num; /* read before the key is pushed (which may allocate) */
                r = read_number(value, &num);
                if (r <= 0)
                    return r;
                r = push_key(L, c, key);
                if (r <= 0)
                    return r;
                push_number(L, &num);
            } else {
                if (hold(c, value) < 0)
                    return -1;
                r = push_key(L, c, key);
                if (r <= 0)
                    return r;
                r = push_direct(L, c, value, depth + 1, 1);
                if (r <= 0)
                    return r;
            }
            lua.rawset(L, -3);
        }
        return 1;
    }
    return 0;
}

/* The body of a builder run by lua_pcall with the Converter as its only
 * argument: stack slot 1 gets the box (``box``) or stays nil, the key slots
 * follow, then push_direct of c->direct_value (held by the caller) leaves
 * the table on top; its status goes to c->direct_status and is returned. */
static int
build_on_stack(lua_State *L, int box)
{
    Converter *c = (Converter *)lua.touserdata(L, 1);
    lua.settop(L, 0);
    if (!lua.checkstack(L, KEY_SLOTS + 3 * MAX_FAST_DEPTH + 8)) {
        lua.pushlstring(L, "not enough memory", 17);
        return lua.error(L);
    }
    if (box)
        lua.rawgeti(L, LUA_REGISTRYINDEX, c->box_ref);
    lua.settop(L, KEY_BASE + KEY_SLOTS - 1); /* the key slots, nil */
    int r = push_direct(L, c, c->direct_value, 0, 1);
    c->direct_status = r;
    return r;
}

/* to_box's builder: the table goes into box[1]. */
static int
build_direct(lua_State *L)
{
    if (build_on_stack(L, 1) == 1)
        lua.rawseti(L, 1, 1);
    return 0;
}

/* ---------------------------------------------------------- Converter */
static void
release_call(Converter *c)
{
    for (Py_ssize_t i = 0; i < c->nheld; i++)
        Py_DECREF(c->held[i]);
    c->nheld = 0;
    c->nops = 0;
    c->nobjects = 0;
    if (c->nkeys) {
        memset(c->key_obj, 0, sizeof(c->key_obj));
        c->nkeys = 0;
    }
    if (c->cap > KEEP_OPS) {
        PyMem_Free(c->ops);
        c->ops = NULL;
        c->cap = 0;
    }
    if (c->held_cap > KEEP_OPS) {
        PyMem_Free(c->held);
        c->held = NULL;
        c->held_cap = 0;
    }
    c->busy = 0;
}

static PyObject *
converter_call(Converter *c, PyObject *args, PyObject *kwds)
{
    PyObject *value;
    if (!PyArg_ParseTuple(args, "O:Converter", &value))
        return NULL;
    PyTypeObject *t = Py_TYPE(value);
    if (c->busy || c->builder == NULL ||
        (t != &PyList_Type && t != &PyTuple_Type && t != &PyDict_Type))
        Py_RETURN_NONE;
    c->busy = 1;
    int r = walk(c, value, 0);
    if (r <= 0) {
        release_call(c);
        if (r < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    Py_ssize_t first = c->nheld;
    if (c->nobjects) {
        Py_ssize_t pos = 0;
        if (collect_objects(c, value, &pos) < 0) {
            release_call(c);
            return NULL;
        }
    }
    PyObject *table = PyObject_Vectorcall(c->builder, c->held + first,
                                          (size_t)(c->nheld - first), NULL);
    release_call(c);
    return table;
}

/* to_box(value) -> True when box[1] now holds the new table, False when not
 * taken (the caller converts as usual); a Lua error raises lupa's. */
static PyObject *
converter_to_box(Converter *c, PyObject *value)
{
    PyTypeObject *t = Py_TYPE(value);
    /* the bound builder keeps lupa's runtime, hence c->L, alive */
    if (c->busy || c->L == NULL || c->builder == NULL || c->box_ref <= 0 ||
        (t != &PyList_Type && t != &PyTuple_Type && t != &PyDict_Type))
        Py_RETURN_FALSE;
    if (mb_call_noargs(c->lupa_acquire) < 0)
        return NULL;
    c->busy = 1;
    c->direct_value = value;
    c->direct_status = -2;
    c->nops = 0;
    lua_State *L = c->L;
    int base = lua.gettop(L);
    lua.pushcclosure(L, build_direct, 0);
    lua.pushlightuserdata(L, (void *)c);
    int status = lua.pcallk(L, 1, 0, 0, 0, NULL);
    if (status != LUA_OK && !PyErr_Occurred()) {
        size_t len = 0;
        const char *msg = lua.tolstring(L, -1, &len);
        PyErr_SetString(status == LUA_ERRMEM ? lua_memory_error : lua_error,
                        msg != NULL ? msg : "error while copying a value into Lua");
    }
    lua.settop(L, base);
    c->direct_value = NULL;
    release_call(c); /* the held references, the key cache; not busy any more */
    int outcome = status == LUA_OK ? c->direct_status : -1;
    if (outcome < 0) {
        mb_release_keeping_error(c->lupa_release);
        return NULL;
    }
    if (mb_call_noargs(c->lupa_release) < 0)
        return NULL;
    return Py_NewRef(outcome == 1 ? Py_True : Py_False);
}

static PyObject *
converter_bind(Converter *c, PyObject *builder)
{
    Py_XSETREF(c->builder, Py_NewRef(builder));
    Py_RETURN_NONE;
}

static int
converter_init(Converter *c, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"state", "lupa_lock", "global_key", "classes", "max_depth", NULL};
    PyObject *state, *lupa_lock, *classes;
    const char *global_key;
    int max_depth;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "$OOsO!i", kwlist, &state, &lupa_lock,
                                     &global_key, &PyDict_Type, &classes, &max_depth))
        return -1;
    if (c->L != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Converter is already initialised");
        return -1;
    }
    lua_State *L = (lua_State *)PyLong_AsVoidPtr(state);
    if (L == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "state must be a lua_State address");
        return -1;
    }
    c->lupa_acquire = PyObject_GetAttrString(lupa_lock, "acquire");
    c->lupa_release = PyObject_GetAttrString(lupa_lock, "release");
    if (c->lupa_acquire == NULL || c->lupa_release == NULL)
        return -1;
    c->classes = Py_NewRef(classes);
    c->depth_limit = max_depth + 1 < MAX_FAST_DEPTH ? max_depth + 1 : MAX_FAST_DEPTH;
    if (c->depth_limit < 1)
        c->depth_limit = 0; /* nothing nested: every container goes the generic way */

    if (mb_call_noargs(c->lupa_acquire) < 0)
        return -1;
    int base = lua.gettop(L);
    lua.pushcclosure(L, install, 0);
    lua.pushlightuserdata(L, (void *)c);
    lua.pushlightuserdata(L, (void *)global_key);
    int status = lua.pcallk(L, 2, 0, 0, 0, NULL);
    lua.settop(L, base);
    if (mb_call_noargs(c->lupa_release) < 0)
        return -1;
    if (status != LUA_OK) {
        PyErr_SetString(PyExc_RuntimeError, "could not install the Lua table builder");
        return -1;
    }
    c->L = L;
    return 0;
}

static int
converter_traverse(Converter *c, visitproc visit, void *arg)
{
    Py_VISIT(c->lupa_acquire);
    Py_VISIT(c->lupa_release);
    Py_VISIT(c->classes);
    Py_VISIT(c->builder);
    Py_VISIT(c->pending_obj);
    Py_VISIT(c->pending_method);
    Py_VISIT(c->pending_result);
    Py_VISIT(c->pending_error);
    return 0;
}

static int
converter_clear(Converter *c)
{
    Py_CLEAR(c->lupa_acquire);
    Py_CLEAR(c->lupa_release);
    Py_CLEAR(c->classes);
    Py_CLEAR(c->builder);
    Py_CLEAR(c->pending_obj);
    Py_CLEAR(c->pending_name);
    Py_CLEAR(c->pending_method);
    Py_CLEAR(c->pending_result);
    Py_CLEAR(c->pending_error);
    if (c->names != NULL) {
        for (int i = 0; i < NAME_CACHE; i++)
            Py_CLEAR(c->names->obj[i]);
        PyMem_Free(c->names);
        c->names = NULL;
    }
    return 0;
}

static void
converter_dealloc(Converter *c)
{
    PyObject_GC_UnTrack(c);
    converter_clear(c);
    for (Py_ssize_t i = 0; i < c->nheld; i++)
        Py_DECREF(c->held[i]);
    PyMem_Free(c->ops);
    PyMem_Free(c->held);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

/* take_pending() -> (obj, name, method, result, error, tried): what
 * quick_invoke handed back to Python (result None with an error), now no
 * longer pending; ``tried``: C already tried the direct build of result. */
static PyObject *
converter_take_pending(Converter *c, PyObject *unused)
{
    if (c->pending_obj == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "no host method call is pending");
        return NULL;
    }
    PyObject *result = c->pending_result != NULL ? c->pending_result : Py_NewRef(Py_None);
    PyObject *error = c->pending_error != NULL ? c->pending_error : Py_NewRef(Py_None);
    PyObject *method = c->pending_method != NULL ? c->pending_method : Py_NewRef(Py_None);
    PyObject *out = Py_BuildValue("(NNNNNO)", c->pending_obj, c->pending_name, method, result,
                                  error, c->pending_tried ? Py_True : Py_False);
    c->pending_obj = c->pending_name = c->pending_method = NULL;
    c->pending_result = c->pending_error = NULL;
    return out;
}

static PyMemberDef converter_members[] = {
    {"invokes_in_c", T_ULONGLONG, offsetof(Converter, invokes_in_c), READONLY,
     "host method calls quick_invoke made and answered in C"},
    {"invokes_finished_in_python", T_ULONGLONG, offsetof(Converter, invokes_finished_in_python),
     READONLY, "calls it made whose error or result Python finished (take_pending)"},
    {"invokes_fallback", T_ULONGLONG, offsetof(Converter, invokes_fallback), READONLY,
     "calls it handed to the Python invoke before calling (unusual arguments, re-entry)"},
    {NULL, 0, 0, 0, NULL},
};

/* release(): lets go of every lupa and Lua object this holds (its engine
 * closed). The state holds this converter (quick_invoke's closures) and this
 * held the state (the builder, lupa's lock): a cycle through Lua that only a
 * pass of the cycle collector broke. Every entry declines afterwards (busy,
 * no builder), as for a re-entrant call; the owner no longer calls it. */
static PyObject *
converter_release(Converter *c, PyObject *unused)
{
    (void)unused;
    if (c->busy && c->builder != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Converter.release: a conversion is running");
        return NULL;
    }
    converter_clear(c);
    c->busy = 1;
    Py_RETURN_NONE;
}

static PyMethodDef converter_methods[] = {
    {"release", (PyCFunction)converter_release, METH_NOARGS,
     "release(): drop every Lua and lupa object held (the engine closed)"},
    {"take_pending", (PyCFunction)converter_take_pending, METH_NOARGS,
     "take_pending() -> (obj, name, method, result, error, tried): see quick_invoke"},
    {"bind", (PyCFunction)converter_bind, METH_O,
     "bind(builder): the Lua function the constructor parked under global_key"},
    {"to_box", (PyCFunction)converter_to_box, METH_O,
     "to_box(value) -> whether box[1] now holds value as a new table"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ConverterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "moonbus.lua._fastconvert.Converter",
    .tp_basicsize = sizeof(Converter),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Copies plain data and @lua_api objects into a new Lua table, in C.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)converter_init,
    .tp_call = (ternaryfunc)converter_call,
    .tp_members = converter_members,
    .tp_traverse = (traverseproc)converter_traverse,
    .tp_clear = (inquiry)converter_clear,
    .tp_dealloc = (destructor)converter_dealloc,
    .tp_methods = converter_methods,
};

/* ------------------------------------------------------- quick host calls */
/*
 * A Python callable that Lua calls with no lupa call in between: for the
 * hottest host calls of a script, `counter:increment()` and the kind check
 * of `shared:int(name)` (moonbus.shared._fastint's ``quick`` methods).
 * Through lupa each cost a py-object dispatch, an argument tuple, the
 * result's conversion and script_env.lua's pcall wrapper: ~5 us per call
 * when 10,000 scripts each run one handler per tick (every state's objects
 * are cold), most of a handler that counts ticks.
 *
 * bind(obj, address) -> a C closure calling ``obj``; ``address`` is
 * id(obj), handed over by trusted code (script_env.lua, from the host's
 * tuple) with the object itself, which stays an upvalue so lupa keeps it
 * alive as long as the closure. bind refuses an address that is not the
 * object lupa's userdata holds (the first field of lupa's ``py_object``),
 * so a wrong id can never make the closure call whatever lives there; and
 * the closure reads the object from that userdata on every call, so once
 * lupa's __gc released it (lua_close finalizes the newest objects first,
 * a finalizer could still reach the closure) it answers nothing instead of
 * calling a freed object. The closure takes no argument or one Lua
 * integer, calls obj with the GIL (taken as lupa takes it for any call into
 * Python) and returns a Lua integer for an int result, true for True, and
 * nothing for anything else: NotImplemented ("not the plain case"), an
 * exception (cleared), other arguments. Returning nothing means "call the
 * ordinary host function": it runs the Python method, which raises the
 * store's exact error; a quick call changes nothing unless it returns a
 * value. It raises no Lua error and allocates nothing in Lua.
 *
 * Threads: runs inside the state's Lua, on the thread running it (which
 * holds lupa's lock, with or without the GIL).
 */
static int
quick_call(lua_State *L)
{
    int nargs = lua.gettop(L);
    if (nargs > 1 || (nargs == 1 && !lua.isinteger(L, 1)))
        return 0;
    lua_Integer n = nargs == 1 ? lua.tointegerx(L, 1, NULL) : 0;
    PyObject **held = (PyObject **)lua.touserdata(L, lua_upvalueindex(1));
    PyObject *func = held == NULL ? NULL : *held; /* NULL: lupa released it */
    if (func == NULL)
        return 0;
    int outcome = 0; /* 0: nothing; 1: true; 2: the integer in `value` */
    lua_Integer value = 0;
    PyGILState_STATE gil = PyGILState_Ensure();
    Py_INCREF(func); /* lupa's reference is the only other one */
    PyObject *arg = NULL;
    if (nargs == 1) {
        arg = PyLong_FromLongLong(n);
        if (arg == NULL)
            PyErr_Clear();
    }
    if (nargs == 0 || arg != NULL) {
        PyObject *args[1] = {arg};
        PyObject *result = PyObject_Vectorcall(func, args, (size_t)nargs, NULL);
        if (result == NULL) {
            PyErr_Clear(); /* the ordinary call raises it again, as the host's error */
        } else if (result == Py_True) {
            outcome = 1;
        } else if (PyLong_CheckExact(result)) {
            int overflow = 0;
            value = PyLong_AsLongLongAndOverflow(result, &overflow);
            if (value == -1 && PyErr_Occurred())
                PyErr_Clear();
            else if (!overflow)
                outcome = 2;
        }
        Py_XDECREF(result);
    }
    Py_XDECREF(arg);
    Py_DECREF(func);
    PyGILState_Release(gil);
    if (outcome == 1)
        lua.pushboolean(L, 1);
    else if (outcome == 2)
        lua.pushinteger(L, value);
    return outcome ? 1 : 0;
}

/*
 * The quick host call of a memory-store int op or kind check (``quick`` of
 * moonbus.shared._fastint's IntOp / KindCheck): first, with no GIL and no
 * lock, the object's cached cell (see _fastint.c for the ownership and the
 * ordering): alive in an open store, `op()` / `op(n)` is mb_cell_add (one
 * CAS loop, nothing changed if the result would leave 64 bits) and the
 * check answers true. Otherwise, or for any other arguments, quick_call:
 * the GIL, ``quick`` (which looks the key up under the store's lock and
 * caches its cell), and the ordinary host call when that answers nothing.
 *
 * No Python API call and no reference count change on the GIL-free path:
 * it reads lupa's py_object (``*held``, released only by lupa's __gc, in
 * this state, on this thread), the bound method's ``m_self`` and the
 * cached cell, all kept alive by references this Lua state owns; and only
 * this state's thread writes the cached cell (``quick``, with the GIL).
 * cell_fast is that path, shared with quick_method below.
 */

/* The GIL-free plain case of a cell user's quick call on its ``nops``
 * arguments from stack index ``first`` (see quick_cell_call): 1 with the
 * answer pushed, 0 (nothing done, nothing pushed) otherwise. ``held`` is
 * lupa's py_object of the bound ``quick``, ``user`` its m_self. */
static inline int
cell_fast(lua_State *L, PyObject **held, MbCellUser *user, int nops, int first)
{
    if (held == NULL || *held == NULL) /* lupa released it: user may be gone */
        return 0;
    MbIntCell *cell = user->cell;
    if (cell == NULL || nops > 1 || (nops == 1 && !lua.isinteger(L, first)))
        return 0;
    if (Py_IS_TYPE((PyObject *)user, kindcheck_type)) {
        if (nops == 0 && mb_cell_live(cell)) {
            user->calls_without_gil++;
            lua.pushboolean(L, 1);
            return 1;
        }
    } else if (nops == 1 || user->default_one) {
        lua_Integer n = nops == 1 ? lua.tointegerx(L, first, NULL) : 1;
        int64_t result;
        if (!(user->sign < 0 && n == LLONG_MIN) &&
            mb_cell_add(cell, user->sign < 0 ? -(int64_t)n : (int64_t)n, &result)) {
            user->calls_without_gil++;
            lua.pushinteger(L, (lua_Integer)result);
            return 1;
        }
    }
    return 0;
}

static int
quick_cell_call(lua_State *L)
{
    int nargs = lua.gettop(L);
    PyObject **held = (PyObject **)lua.touserdata(L, lua_upvalueindex(1));
    if (held == NULL || *held == NULL) /* NULL: lupa released it */
        return 0;
    /* the bound method's m_self, kept by bind (upvalue 2): it lives as long
     * as the method, which lives while *held is set; one pointer chase less
     * per call when 10,000 states each make one (cold) */
    MbCellUser *user = (MbCellUser *)lua.touserdata(L, lua_upvalueindex(2));
    if (nargs > 1 || (nargs == 1 && !lua.isinteger(L, 1)))
        return 0;
    if (cell_fast(L, held, user, nargs, 1))
        return 1;
    user->calls_with_gil++;
    return quick_call(L);
}

/* Calls the function at upvalue ``fallback`` with the whole stack as its
 * arguments and returns all its results (the C closures' "do what the Lua
 * code does"): errors propagate unchanged. Needs one free stack slot, which
 * Lua guarantees a C function (LUA_MINSTACK). */
static int
call_fallback(lua_State *L, int fallback)
{
    int nargs = lua.gettop(L);
    lua.pushvalue(L, lua_upvalueindex(fallback));
    lua.rotate(L, 1, 1);
    lua.callk(L, nargs, LUA_MULTRET, 0, NULL);
    return lua.gettop(L);
}

/*
 * A memory-store int handle's kind check, flattened into C (script_env.lua's
 * host_method, when bind gets a third argument), called with no arguments;
 * and, as quick_handle_method below, the handle's methods. The plain case
 * is cell_fast on the arguments after the first (a method's self): no Lua
 * function runs between the script's `h:increment()` and the cell's CAS.
 * Anything else calls host_method's Lua closure (upvalue 3) with the same
 * arguments, so every other outcome, error and message is exactly the Lua
 * path's (host errors take the position of the nearest script frame,
 * script_position in host_bridge.lua, which skips this C frame; the Lua
 * closure's own error is raised one level further up). Upvalues: lupa's
 * userdata of the bound ``quick``, its m_self (light), the Lua closure; none
 * is ever returned to the caller.
 *
 * Threads: as quick_cell_call (the state's thread, GIL held or not).
 */
static int
quick_method(lua_State *L)
{
    int nargs = lua.gettop(L);
    PyObject **held = (PyObject **)lua.touserdata(L, lua_upvalueindex(1));
    MbCellUser *user = (MbCellUser *)lua.touserdata(L, lua_upvalueindex(2));
    if (cell_fast(L, held, user, nargs > 0 ? nargs - 1 : 0, 2))
        return 1;
    return call_fallback(L, 3);
}

/* What a handle's method reads per call: one userdata (upvalue 2 of
 * quick_handle_method) instead of two upvalues and a compare of Lua values
 * (about 60 instructions less per `h:increment()`, measured with callgrind). */
typedef struct {
    PyObject **held;    /* lupa's slot of the bound ``quick`` (upvalue 1 keeps it) */
    MbCellUser *user;   /* its m_self, kept alive by the bound method */
    const void *handle; /* the handle table (upvalue 4 keeps it: the address stays its) */
} HandleMethod;

/*
 * A handle's method (bind's four-argument form): as quick_method, but it
 * runs only when self is its handle; anything else (`h.increment(5)`, a '.'
 * where ':' was meant, or no argument) goes to the Lua closure, which
 * raises the error that names the method. Upvalues: lupa's userdata of the
 * bound ``quick``, the HandleMethod userdata, the Lua closure, the handle.
 */
static int
quick_handle_method(lua_State *L)
{
    int nargs = lua.gettop(L);
    const HandleMethod *m = (const HandleMethod *)lua.touserdata(L, lua_upvalueindex(2));
    if (nargs > 0 && lua.topointer(L, 1) == m->handle &&
        cell_fast(L, m->held, m->user, nargs - 1, 2))
        return 1;
    return call_fallback(L, 3);
}

/*
 * `shared.<kind>(name)` / `shared:<kind>(name)` flattened into C (bind with
 * four arguments, from script_env.lua). Upvalues: QS_SELVES (the library
 * objects method_args drops as a leading self), QS_LIBRARY the script's
 * ``shared`` library (the self of `shared:int(name)`, recognised without a
 * lookup), QS_CACHE the kind's cache (name -> handle, handle -> its check),
 * QS_IMPL the Lua implementation, and the last name found in the cache with
 * what it gave (QS_NAME, QS_HANDLE, QS_CHECK, and when the check is a
 * quick_method closure its two upvalues, QS_HELD and QS_USER). The plain
 * case (name a string with a cached handle) does what the Lua
 * implementation does with no Lua function: runs the cached check and
 * returns the handle. Anything else (first use of a name, a name that is
 * not a string...) calls the Lua implementation with the same arguments; it
 * raises its own errors one level further up, past this C frame, so the
 * script sees the same message and position. Returns only the handle or the
 * Lua implementation's results: never an upvalue.
 *
 * Why the last name (issue 16): a handler that writes
 * `shared:int("ticks"):increment()` asks for the same name on every event.
 * At 10,000 scripts each object a call touches is a cache miss; the cache
 * table, its node for the name, its node for the handle, the check closure
 * and its call frame were five of them, on top of the closure itself. The
 * same name (rawequal: a short string compares by address) now reads only
 * this closure's upvalues and, for a memory-store int, runs the check's
 * cell test (cell_fast) in place. The same answer either way: the cache
 * never changes a name's handle or a handle's check once set (get_handle in
 * script_env.lua), and the check runs on every call, as before, so a key
 * removed or given another kind is still seen (the check's slow path raises).
 *
 * Threads: runs inside the state's Lua, on the thread running it; the
 * upvalues it rewrites are this state's own.
 */
enum { QS_SELVES = 1, QS_LIBRARY, QS_CACHE, QS_IMPL, QS_NAME, QS_HANDLE, QS_CHECK, QS_HELD,
       QS_USER, QS_COUNT = QS_USER };

static int
quick_shared(lua_State *L)
{
    int nargs = lua.gettop(L);
    int at = 1; /* the name */
    if (nargs >= 1 && lua.type(L, 1) != LUA_TSTRING) {
        /* `shared:int(name)`: the self is this closure's own library, known
         * without a table lookup; any other leading argument is dropped as
         * method_args drops it, when it is one of the library objects */
        int self = lua.rawequal(L, 1, lua_upvalueindex(QS_LIBRARY));
        if (!self) {
            lua.pushvalue(L, 1);
            self = lua.rawget(L, lua_upvalueindex(QS_SELVES)) != LUA_TNIL && lua.toboolean(L, -1);
            lua.settop(L, nargs);
        }
        at = self ? 2 : 1;
    }
    if (at > nargs || lua.type(L, at) != LUA_TSTRING)
        return call_fallback(L, QS_IMPL);
    if (!lua.rawequal(L, at, lua_upvalueindex(QS_NAME))) {
        /* another name than last time: the cache, as the Lua code reads it */
        lua.pushvalue(L, at);
        if (lua.rawget(L, lua_upvalueindex(QS_CACHE)) == LUA_TNIL) { /* nargs+1: the handle */
            lua.settop(L, nargs);
            return call_fallback(L, QS_IMPL);
        }
        lua.pushvalue(L, nargs + 1);
        lua.rawget(L, lua_upvalueindex(QS_CACHE)); /* nargs+2: its check */
        /* kept for the next call: the check's cell test, when it is a
         * kind check's quick_method (cell_fast with no argument answers
         * the check there; any other user would do its op) */
        int direct = lua.tocfunction(L, nargs + 2) == quick_method &&
                     lua.getupvalue(L, nargs + 2, 1) != NULL &&
                     lua.getupvalue(L, nargs + 2, 2) != NULL &&
                     Py_IS_TYPE((PyObject *)lua.touserdata(L, nargs + 4), kindcheck_type);
        if (!direct) {
            lua.settop(L, nargs + 2);
            lua.pushnil(L);
            lua.pushnil(L);
        }
        lua.copy(L, nargs + 4, lua_upvalueindex(QS_USER));
        lua.copy(L, nargs + 3, lua_upvalueindex(QS_HELD));
        lua.copy(L, nargs + 2, lua_upvalueindex(QS_CHECK));
        lua.copy(L, nargs + 1, lua_upvalueindex(QS_HANDLE));
        lua.copy(L, at, lua_upvalueindex(QS_NAME));
        lua.settop(L, nargs);
    }
    /* the check, as the Lua code runs it (a non-function raises) */
    PyObject **held = (PyObject **)lua.touserdata(L, lua_upvalueindex(QS_HELD));
    if (held == NULL || !cell_fast(L, held, (MbCellUser *)lua.touserdata(L,
                                   lua_upvalueindex(QS_USER)), 0, 0)) {
        lua.pushvalue(L, lua_upvalueindex(QS_CHECK));
        lua.callk(L, 0, 0, 0, NULL);
    }
    lua.settop(L, nargs);
    lua.pushvalue(L, lua_upvalueindex(QS_HANDLE));
    return 1;
}

/*
 * A host API method call (a proxy's method, host_bridge.lua's build_class)
 * in C: the ``invoke`` its Lua wrapper calls inside host_function's pcall,
 * as (obj, name, ...), obj being lupa's userdata of the host object. Why: the
 * same call through lupa and LuaConverter._invoke costs two Python frames,
 * lupa's argument and result conversion and, for a list or dict, to_box's
 * trip through the box; about 1 us of a ~1.2 us plain call.
 *
 * The plain case: at most MAX_INVOKE_ARGS arguments after the name, each
 * nil, a boolean, a number or a string (decoded as lupa does). With the GIL
 * it gets the method (getattr(obj, name), the name from a small cache) and
 * calls it, then pushes None, a bool, an int that fits 64 bits, a float or
 * a str up to SHORT_RESULT bytes itself (the str after the GIL is released:
 * a Lua memory error cannot jump past a held GIL), and builds an exact list or
 * dict with push_direct inside a lua_pcall on the calling thread's stack
 * (memory errors caught, as to_box's). Anything else -- an exception, a
 * result C does not push, a list it did not take -- is handed to Python
 * with the method already called: stored in the converter (pending_*) and
 * finished by the ``finish`` upvalue (LuaConverter._finish_pending, through
 * lupa: the error, without frames, or the result converted as _invoke does).
 * Before the call, any other argument, a re-entrant use (busy, or a call
 * still pending) or a released object hands the whole call to the ``slow``
 * upvalue (detached LuaConverter._invoke) with the same arguments. So every
 * outcome and message is _invoke's; the method runs exactly once.
 *
 * Upvalues: 1 lupa's userdata of the Converter (its reference keeps it
 * alive; read on every call: NULL once lupa released it), 2 slow, 3 finish.
 * Not bound when host calls are timed (deferred delivery's host_calls):
 * those keep the Python path. Threads: the state's thread, inside its Lua
 * (lupa's lock held, the GIL not); the pending slots are touched with the
 * GIL only, the counters by that thread only (Python reads them).
 */
static PyObject *
method_name(Converter *c, const char *s, size_t len)
{
    if (c->names == NULL)
        c->names = PyMem_Calloc(1, sizeof(struct NameCache)); /* NULL: no cache */
    struct NameCache *cache = c->names;
    size_t h = ((uintptr_t)s >> 4) & (NAME_CACHE - 1);
    PyObject *name = cache == NULL ? NULL : cache->obj[h];
    if (name != NULL && cache->ptr[h] == s) {
        Py_ssize_t n;
        const char *u = PyUnicode_AsUTF8AndSize(name, &n); /* kept by the str */
        if (u != NULL && (size_t)n == len && memcmp(u, s, len) == 0)
            return Py_NewRef(name);
        PyErr_Clear();
    }
    name = PyUnicode_DecodeUTF8(s, (Py_ssize_t)len, NULL);
    if (name == NULL)
        return NULL;
    PyUnicode_InternInPlace(&name);
    if (cache != NULL) {
        Py_XSETREF(cache->obj[h], Py_NewRef(name));
        cache->ptr[h] = s;
    }
    return name;
}

/* Lua argument ``i`` as a new Python object (nil, boolean, number or string
 * only), as lupa converts it: a string is decoded as strict UTF-8 (NULL with
 * the error set when it is not: lupa would raise it for the call). */
static PyObject *
invoke_arg(lua_State *L, int i)
{
    switch (lua.type(L, i)) {
    case LUA_TNIL: return Py_NewRef(Py_None);
    case LUA_TBOOLEAN: return Py_NewRef(lua.toboolean(L, i) ? Py_True : Py_False);
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua.tolstring(L, i, &len);
        return PyUnicode_DecodeUTF8(s, (Py_ssize_t)len, NULL);
    }
    default:
        if (lua.isinteger(L, i))
            return PyLong_FromLongLong(lua.tointegerx(L, i, NULL));
        return PyFloat_FromDouble(lua.tonumberx(L, i, NULL));
    }
}

/* quick_invoke's builder, on the calling thread's stack: returns the table. */
static int
build_here(lua_State *L)
{
    return build_on_stack(L, 0) == 1 ? 1 : 0;
}

/* The error now set, as an exception object carrying its traceback. */
static PyObject *
fetch_error(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value != NULL && tb != NULL)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value != NULL ? value : Py_NewRef(PyExc_SystemError);
}

/* Whether a str result of ``len`` UTF-8 bytes passes lua_room's check
 * (LuaRoom.admit, which the Python path makes before lupa pushes it: its
 * estimated cost, _STRING + len, within the state's free memory less MARGIN).
 * When not, the call is finished in Python, which refuses it with admit's
 * error. lupa's allocator userdata is its MemoryStatus (used, base_usage,
 * limit, in bytes) when the state has a memory limit, NULL (luaL_newstate's
 * allocator) when it has none. */
typedef struct {
    size_t used, base_usage, limit;
} LupaMemory;
#define ROOM_MARGIN (16 * 1024) /* lua_room.MARGIN */
#define ROOM_STRING 40          /* lua_room._STRING */

/* moonbus.lua._arena's C API (its ALLOC_API capsule), NULL when that
 * extension is not built: a state with an arena keeps lupa's MemoryStatus
 * behind the arena's own ud. Set once at import. */
typedef struct {
    void *(*memory_status)(lua_Alloc f, void *ud);
} MbArenaApi;
static const MbArenaApi *arena_api;

static int
str_fits(lua_State *L, size_t len)
{
    void *ud = NULL;
    lua_Alloc f = lua.getallocf(L, &ud);
    if (arena_api != NULL)
        ud = arena_api->memory_status(f, ud);
    if (ud == NULL)
        return 1;
    const LupaMemory *m = (const LupaMemory *)ud;
    if (m->limit == 0 || m->limit == (size_t)-1)
        return 1; /* no limit: admit lets everything in */
    long long room = (long long)m->limit - (long long)m->used - ROOM_MARGIN;
    return (long long)(ROOM_STRING + len) <= room;
}

static int
quick_invoke(lua_State *L)
{
    int nargs = lua.gettop(L);
    PyObject **cheld = (PyObject **)lua.touserdata(L, lua_upvalueindex(1));
    Converter *c = cheld == NULL ? NULL : (Converter *)*cheld; /* NULL: lupa released it */
    int plain = c != NULL && !c->busy && c->pending_obj == NULL && nargs >= 2 &&
                nargs <= 2 + MAX_INVOKE_ARGS && lua.type(L, 1) == LUA_TUSERDATA &&
                lua.type(L, 2) == LUA_TSTRING;
    for (int i = 3; plain && i <= nargs; i++) {
        int t = lua.type(L, i);
        plain = t == LUA_TNIL || t == LUA_TBOOLEAN || t == LUA_TNUMBER || t == LUA_TSTRING;
    }
    PyObject **oheld = plain ? (PyObject **)lua.touserdata(L, 1) : NULL;
    if (oheld == NULL || *oheld == NULL) { /* not the plain case: nothing done yet */
        if (c != NULL)
            c->invokes_fallback++; /* a plain counter: the GIL is not needed for it */
        return call_fallback(L, 2);
    }
    size_t len;
    const char *s = lua.tolstring(L, 2, &len);
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *obj = Py_NewRef(*oheld);
    PyObject *name = method_name(c, s, len);
    PyObject *args[1 + MAX_INVOKE_ARGS] = {NULL};
    int n = 0;
    for (int i = 3; name != NULL && i <= nargs; i++) {
        if ((args[1 + n] = invoke_arg(L, i)) == NULL)
            break;
        n++;
    }
    if (name == NULL || n != nargs - 2) { /* not UTF-8, no memory: nothing called yet */
        PyErr_Clear();
        for (int i = 1; i <= n; i++)
            Py_DECREF(args[i]);
        Py_XDECREF(name);
        Py_DECREF(obj);
        c->invokes_fallback++;
        PyGILState_Release(gil);
        return call_fallback(L, 2);
    }
    /* The arguments are converted: empty this frame's stack, as lupa's
     * call_python does before it calls. Python code that calls back into this
     * state through lupa (a table read, a function call) counts on it: lupa's
     * execute_lua_call takes every value on the stack as a result. */
    lua.settop(L, 0);
    PyObject *method = PyObject_GetAttr(obj, name);
    PyObject *result = method == NULL ? NULL
        : PyObject_Vectorcall(method, args + 1, (size_t)n | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    for (int i = 1; i <= n; i++)
        Py_DECREF(args[i]);
    PyObject *error = result == NULL ? fetch_error() : NULL;
    int tried = 0;
    int pushed = 0; /* 1: the answer is on the stack (top), 2: a short str in buf */
    char buf[SHORT_RESULT];
    size_t buf_len = 0;
    PyTypeObject *t = result == NULL ? NULL : Py_TYPE(result);
    if (result == NULL) {
    } else if (result == Py_None) {
        lua.pushnil(L);
        pushed = 1;
    } else if (t == &PyBool_Type) {
        lua.pushboolean(L, result == Py_True);
        pushed = 1;
    } else if (t == &PyFloat_Type) {
        lua.pushnumber(L, PyFloat_AS_DOUBLE(result));
        pushed = 1;
    } else if (t == &PyLong_Type) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(result, &overflow);
        if (v == -1 && PyErr_Occurred())
            PyErr_Clear();
        else if (!overflow) {
            lua.pushinteger(L, (lua_Integer)v);
            pushed = 1;
        }
    } else if (t == &PyUnicode_Type) {
        Py_ssize_t ulen;
        const char *u = PyUnicode_AsUTF8AndSize(result, &ulen);
        if (u == NULL) {
            PyErr_Clear(); /* not UTF-8 (a lone surrogate): Python reports it */
        } else if ((size_t)ulen <= sizeof buf && str_fits(L, (size_t)ulen)) {
            memcpy(buf, u, (size_t)ulen);
            buf_len = (size_t)ulen;
            pushed = 2;
        }
    } else if ((t == &PyList_Type || t == &PyDict_Type) && !c->busy) {
        tried = 1;
        int base = lua.gettop(L);
        c->busy = 1;
        c->direct_value = result;
        c->direct_status = -2;
        c->nops = 0;
        lua.pushcclosure(L, build_here, 0);
        lua.pushlightuserdata(L, (void *)c);
        int status = lua.pcallk(L, 1, 1, 0, 0, NULL);
        c->direct_value = NULL;
        release_call(c); /* the held references, the key cache; not busy any more */
        if (status == LUA_OK && c->direct_status == 1) {
            pushed = 1;
        } else {
            lua.settop(L, base); /* nil, or the error message */
            if (PyErr_Occurred())
                PyErr_Clear(); /* Python meets it again when it converts the result */
        }
    }
    if (pushed) {
        c->invokes_in_c++;
        Py_DECREF(result);
        Py_DECREF(method);
        Py_DECREF(name);
        Py_DECREF(obj);
        PyGILState_Release(gil);
        if (pushed == 2)
            lua.pushlstring(L, buf, buf_len); /* may raise Lua's memory error: nothing held */
        return 1;
    }
    c->invokes_finished_in_python++;
    c->pending_obj = obj;
    c->pending_name = name;
    c->pending_method = method; /* NULL when getattr failed */
    c->pending_result = result;
    c->pending_error = error;
    c->pending_tried = tried;
    PyGILState_Release(gil);
    lua.settop(L, 0);
    lua.pushvalue(L, lua_upvalueindex(3));
    lua.callk(L, 0, LUA_MULTRET, 0, NULL);
    return lua.gettop(L);
}

/* Whether ``func`` is the bound ``quick`` of an IntOp or a KindCheck: reads
 * type pointers only (no GIL needed; bind may run without it). */
static int
is_cell_user_quick(PyObject *func)
{
    if (intop_type == NULL || !PyCFunction_Check(func))
        return 0;
    PyObject *self = PyCFunction_GET_SELF(func);
    const char *name = ((PyCFunctionObject *)func)->m_ml->ml_name;
    return self != NULL && (Py_IS_TYPE(self, intop_type) || Py_IS_TYPE(self, kindcheck_type)) &&
           strcmp(name, "quick") == 0;
}

/* bind(obj, address): see above. bind(obj, address, fallback[, handle]):
 * a quick_method closure when obj is a cell user's ``quick``, else nil (the
 * caller keeps its Lua closure); with ``handle``, a quick_handle_method
 * closure: a method that runs only when called on that handle. bind(selves, library, cache, fallback):
 * a quick_shared closure. Errors are Lua errors (wrong
 * arguments). Only trusted host Lua code (script_env.lua) holds bind. */
static int
quick_bind(lua_State *L)
{
    int nargs = lua.gettop(L);
    if (nargs == 4 && lua.type(L, 1) == LUA_TUSERDATA && lua.type(L, 4) != LUA_TTABLE) {
        /* (converter, address, slow, finish) */
        PyObject **held = (PyObject **)lua.touserdata(L, 1);
        if (held == NULL || *held == NULL || !Py_IS_TYPE(*held, &ConverterType) ||
            (intptr_t)*held != (intptr_t)lua.tointegerx(L, 2, NULL) ||
            (lua.type(L, 3) != LUA_TFUNCTION && lua.type(L, 3) != LUA_TUSERDATA) ||
            (lua.type(L, 4) != LUA_TFUNCTION && lua.type(L, 4) != LUA_TUSERDATA)) {
            static const char msg[] = "quick bind: expected a converter, its address, slow, finish";
            lua.pushlstring(L, msg, sizeof msg - 1);
            return lua.error(L);
        }
        lua.settop(L, 4);
        lua.rotate(L, 2, -1); /* converter, slow, finish, address */
        lua.settop(L, 3);
        lua.pushcclosure(L, quick_invoke, 3);
        return 1;
    }
    if (nargs == 4 && lua.type(L, 1) != LUA_TUSERDATA) {
        if (lua.type(L, 1) != LUA_TTABLE || lua.type(L, 2) != LUA_TTABLE ||
            lua.type(L, 3) != LUA_TTABLE || lua.type(L, 4) != LUA_TFUNCTION) {
            static const char msg[] = "quick bind: expected selves, library, cache, fallback";
            lua.pushlstring(L, msg, sizeof msg - 1);
            return lua.error(L);
        }
        for (int i = QS_IMPL; i < QS_COUNT; i++)
            lua.pushnil(L); /* no name looked up yet */
        lua.pushcclosure(L, quick_shared, QS_COUNT);
        return 1;
    }
    if (nargs < 2 || nargs > 4 || lua.type(L, 1) != LUA_TUSERDATA || !lua.isinteger(L, 2) ||
        (nargs >= 3 && lua.type(L, 3) != LUA_TFUNCTION) ||
        (nargs == 4 && lua.type(L, 4) != LUA_TTABLE)) {
        lua.pushlstring(L, "quick bind: expected a host object and its address", 50);
        return lua.error(L);
    }
    PyObject **held = (PyObject **)lua.touserdata(L, 1);
    if (held == NULL || *held == NULL ||
        (intptr_t)*held != (intptr_t)lua.tointegerx(L, 2, NULL)) {
        lua.pushlstring(L, "quick bind: the address is not the object's", 43);
        return lua.error(L);
    }
    int cell_user = is_cell_user_quick(*held);
    if (nargs == 4) { /* a handle's method */
        if (!cell_user)
            return 0;
        HandleMethod *m = (HandleMethod *)lua.newuserdatauv(L, sizeof *m, 0);
        m->held = held;
        m->user = (MbCellUser *)PyCFunction_GET_SELF(*held);
        m->handle = lua.topointer(L, 4);
        lua.pushvalue(L, 1);
        lua.pushvalue(L, 5);
        lua.pushvalue(L, 3);
        lua.pushvalue(L, 4);
        lua.pushcclosure(L, quick_handle_method, 4);
        return 1;
    }
    if (nargs == 3) { /* the kind check */
        if (!cell_user)
            return 0;
        lua.pushvalue(L, 1);
        lua.pushlightuserdata(L, PyCFunction_GET_SELF(*held));
        lua.pushvalue(L, 3);
        lua.pushcclosure(L, quick_method, 3);
        return 1;
    }
    lua.pushvalue(L, 1);
    if (cell_user) {
        lua.pushlightuserdata(L, PyCFunction_GET_SELF(*held));
        lua.pushcclosure(L, quick_cell_call, 2);
    } else {
        lua.pushcclosure(L, quick_call, 1);
    }
    return 1;
}

/* Sets the global named by the light userdata argument to ``quick_bind``. */
static int
install_quick(lua_State *L)
{
    const char *key = (const char *)lua.touserdata(L, 1);
    lua.pushcclosure(L, quick_bind, 0);
    lua.setglobal(L, key);
    return 0;
}

/* install_quick_bind(state=, lupa_lock=, global_key=): puts ``quick_bind``
 * in the state's global ``global_key`` (the caller takes it out at once). */
static PyObject *
install_quick_bind(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"state", "lupa_lock", "global_key", NULL};
    PyObject *state, *lupa_lock;
    const char *global_key;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "$OOs", kwlist, &state, &lupa_lock,
                                     &global_key))
        return NULL;
    lua_State *L = (lua_State *)PyLong_AsVoidPtr(state);
    if (L == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "state must be a lua_State address");
        return NULL;
    }
    PyObject *acquire = PyObject_GetAttrString(lupa_lock, "acquire");
    PyObject *release = acquire == NULL ? NULL : PyObject_GetAttrString(lupa_lock, "release");
    if (release == NULL) {
        Py_XDECREF(acquire);
        return NULL;
    }
    int status = -1;
    if (mb_call_noargs(acquire) == 0) {
        int base = lua.gettop(L);
        lua.pushcclosure(L, install_quick, 0);
        lua.pushlightuserdata(L, (void *)global_key);
        status = lua.pcallk(L, 1, 0, 0, 0, NULL);
        lua.settop(L, base);
        if (mb_call_noargs(release) < 0)
            status = -1;
        else if (status != LUA_OK)
            PyErr_SetString(PyExc_RuntimeError, "could not install the quick host call");
    }
    Py_DECREF(acquire);
    Py_DECREF(release);
    if (status != LUA_OK)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef fastconvert_functions[] = {
    {"install_quick_bind", (PyCFunction)(void (*)(void))install_quick_bind,
     METH_VARARGS | METH_KEYWORDS,
     "install_quick_bind(*, state, lupa_lock, global_key): see _fastconvert.c"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fastconvert_module = {
    PyModuleDef_HEAD_INIT, "_fastconvert", "Python data into Lua tables, in C.", -1,
    fastconvert_functions};

PyMODINIT_FUNC
PyInit__fastconvert(void)
{
    PyObject *lupa = import_lupa(NULL);
    if (lupa == NULL)
        return NULL;
    lua_error = PyObject_GetAttrString(lupa, "LuaError");
    lua_memory_error = PyObject_GetAttrString(lupa, "LuaMemoryError");
    Py_DECREF(lupa);
    if (lua_error == NULL || lua_memory_error == NULL)
        return NULL;
    PyObject *fastint = PyImport_ImportModule("moonbus.shared._fastint");
    if (fastint == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_ImportError))
            return NULL;
        PyErr_Clear(); /* not built: every quick call takes the GIL */
    } else {
        intop_type = (PyTypeObject *)PyObject_GetAttrString(fastint, "IntOp");
        kindcheck_type = intop_type == NULL ? NULL
            : (PyTypeObject *)PyObject_GetAttrString(fastint, "KindCheck");
        Py_DECREF(fastint);
        if (kindcheck_type == NULL) {
            Py_CLEAR(intop_type);
            return NULL;
        }
    }
    PyObject *arena = PyImport_ImportModule("moonbus.lua._arena");
    if (arena == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_ImportError))
            return NULL;
        PyErr_Clear(); /* not built: no state has an arena */
    } else {
        arena_api = PyCapsule_Import("moonbus.lua._arena.ALLOC_API", 0);
        Py_DECREF(arena);
        if (arena_api == NULL)
            return NULL;
    }
    if (PyType_Ready(&ConverterType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&fastconvert_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Converter", (PyObject *)&ConverterType) < 0 ||
        PyModule_AddStringConstant(m, "LUA_MODULE", LUPA_MODULE) < 0 ||
        PyModule_AddIntConstant(m, "MAX_FAST_DEPTH", MAX_FAST_DEPTH) < 0 ||
        PyModule_AddIntConstant(m, "MAX_OPS", MAX_OPS) < 0 ||
        PyModule_AddIntConstant(m, "ROOM_MARGIN", ROOM_MARGIN) < 0 || /* tested equal */
        PyModule_AddIntConstant(m, "ROOM_STRING", ROOM_STRING) < 0) { /* to lua_room's */
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
