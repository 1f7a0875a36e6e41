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
 * EventQueue(notify=, report=)              deferred delivery's queue
 *   .handler(target, sub_id) -> Enqueuer    what the bus calls, deferred
 *   .drain(max)                             runs queued events (event thread)
 *
 * Batches (deferred delivery): one engine call runs consecutive events for
 * the same engine in one lua_pcall; the loop in run_items gives every event
 * its own start in the watchdog's WatchSlot (see there) and stops the call
 * at the first handler that fails; the call is then settled as a single
 * delivery would be and a new call takes the remaining events. Having run
 * its batch, the loop may take more queued events for the same script
 * without the GIL (a stretch; see EventQueue).
 *
 * The common case: the engine is open and idle (no nested call), no abort is
 * pending for the next call, and the event's data is a read-only dict of up
 * to MAX_FIELDS scalars under str keys. Then, holding the engine's lock (a C
 * lock inside the CallState, taken without a Python call):
 * the call's token is taken and marked live, the watchdog entry is armed,
 * lupa's own runtime lock is taken (as lupa does around every call), the GIL
 * is released and lua_pcall runs a C function that builds the payload table
 * and calls the script's `deliver(sub_id, event, tick, seq, type)` (in C,
 * c_deliver, when the Lua one's upvalues are found; see there); then
 * the watchdog entry is removed and the call is ended under the hook lock.
 * A call that ends with an abort, an error, leftover coroutines or anything
 * unusual is finished by the Python path (the engine's `end_call` callable,
 * and the `failed` callback, which raises and reports as deliver() does).
 *
 * The engine's state (open or closed, depth, token, abort reasons, the
 * coroutine chain, its two locks) is the engine's CallState (_callstate.h),
 * which C reads and writes as struct fields and engine.py through the same
 * type's members; everything else is handed in when a Delivery is made
 * (the engine's `end_call` and `abort_on_entry` callables, its watchdog,
 * lupa's module), so no C code here looks up a Python object's private
 * attribute.
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
 * symbols come from lupa's extension module (dlopen RTLD_NOLOAD + dlsym),
 * and LUA_REGISTRYINDEX is probed from that Lua at import (_luaapi.h).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <dlfcn.h>
#include <limits.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <pthread.h>

#include "../_capi.h"

/* ------------------------------------------------------------ Lua 5.4 API */
#include "_luaapi.h"
#include "_callstate.h"

#define MAX_FIELDS 32


/* moonbus.bus._fastemit.FrozenData (layout in _capi.h), looked up once when
 * this module is imported and never changed; NULL if that module is not
 * built (event data then comes as mappingproxy only). */
static PyTypeObject *frozen_type;

/* ------------------------------------------------------------- watch slot */
/* The watchdog's entry for this engine's C calls. It reads as the 4-item
 * sequence (start, budget, token, native thread id) that engine.py arms as a
 * tuple, and adds `gen`: the number of the event whose handler runs now.
 * Several events can run in one engine call (EventQueue.drain); between two of
 * them the Lua-side loop, without the GIL, writes the next start and then
 * advances gen by 2 with a compare-and-swap. The watchdog, before it aborts
 * the call, claims the event it judged (claim(gen): gen -> gen | 1); once
 * claimed, the loop cannot advance (its CAS fails), so an abort meant for
 * one event can only hit that event, never the next one. */
typedef struct {
    PyObject_HEAD
    _Atomic long long start_ns; /* CLOCK_MONOTONIC, as time.monotonic() */
    _Atomic long long gen;      /* even: the running event; | 1: claimed */
    double budget;              /* seconds; written with the GIL, before arming */
    PyObject *token;            /* the engine call's token (int) */
    long tid;                   /* native id of the thread running the call */
} WatchSlot;

static long long
monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void
slot_dealloc(WatchSlot *self)
{
    Py_XDECREF(self->token);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_ssize_t
slot_length(PyObject *self)
{
    (void)self;
    return 4;
}

static PyObject *
slot_item(WatchSlot *self, Py_ssize_t i)
{
    switch (i) {
    case 0: return PyFloat_FromDouble((double)atomic_load(&self->start_ns) / 1e9);
    case 1: return PyFloat_FromDouble(self->budget);
    case 2: return Py_NewRef(self->token ? self->token : Py_None);
    case 3: return PyLong_FromLong(self->tid);
    default:
        PyErr_SetString(PyExc_IndexError, "watch slot index out of range");
        return NULL;
    }
}

/* (start, budget, token, tid, gen) read consistently, or None while the
 * running event changes under the reader (the next scan reads it again). */
static PyObject *
slot_snapshot(WatchSlot *self, PyObject *unused)
{
    (void)unused;
    long long before = atomic_load(&self->gen);
    long long start = atomic_load(&self->start_ns);
    if (atomic_load(&self->gen) != before || (before & 1))
        Py_RETURN_NONE;
    return Py_BuildValue("(ddOlL)", (double)start / 1e9, self->budget,
                         self->token ? self->token : Py_None, self->tid, before);
}

static PyObject *
slot_claim(WatchSlot *self, PyObject *arg)
{
    long long expected = PyLong_AsLongLong(arg);
    if (expected == -1 && PyErr_Occurred())
        return NULL;
    if (expected & 1)
        Py_RETURN_FALSE;
    return PyBool_FromLong(atomic_compare_exchange_strong(&self->gen, &expected, expected | 1));
}

static PyObject *
slot_get_gen(WatchSlot *self, void *closure)
{
    (void)closure;
    return PyLong_FromLongLong(atomic_load(&self->gen));
}

static PySequenceMethods slot_as_sequence = {
    .sq_length = slot_length,
    .sq_item = (ssizeargfunc)slot_item,
};

static PyMethodDef slot_methods[] = {
    {"snapshot", (PyCFunction)slot_snapshot, METH_NOARGS,
     "(start, budget, token, native_id, gen), or None while the event changes."},
    {"claim", (PyCFunction)slot_claim, METH_O,
     "claim(gen): True if event gen is still running and is now claimed for an abort."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef slot_getset[] = {
    {"gen", (getter)slot_get_gen, NULL, "the running event's number (| 1 once claimed)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject WatchSlotType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "moonbus.lua._fastcall.WatchSlot",
    .tp_basicsize = sizeof(WatchSlot),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A C delivery's watchdog entry (see the module source).",
    .tp_new = PyType_GenericNew, /* zeroed: start 0, gen 0, no token */
    .tp_dealloc = (destructor)slot_dealloc,
    .tp_as_sequence = &slot_as_sequence,
    .tp_methods = slot_methods,
    .tp_getset = slot_getset,
};

/* --------------------------------------------------------- the Lua side */
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

/* One event for one handler, extracted with the GIL held; the strings point
 * into Python str objects that the event keeps alive. */
typedef struct {
    lua_Integer sub_id;
    int has_tick;
    lua_Integer tick;
    lua_Integer seq;
    const char *type;
    Py_ssize_t type_len;
    int first, nfields; /* its fields in Batch.fields */
} Item;

/* A run of events for one engine call. `next`..`count` are to run; the Lua
 * loop records how far it got (`done`, `current`), which event's handler
 * returned an error (`failed`), and whether the watchdog claimed an event
 * that had already finished (`claimed`: the call stops there).
 * `sub_ids`/`events` are the events' Python objects (owned by the caller).
 * With `stretch` set (deferred delivery), the loop, having run every event,
 * takes more from the queue without the GIL (see stretch_batch). */
struct Stretch;
typedef struct {
    int func_ref;
    int count, next, done, current, failed, claimed;
    Item *items;
    Field *fields;
    PyObject **sub_ids, **events;
    WatchSlot *slot; /* NULL: no time limit */
    long long gen;   /* the slot's gen for items[current] */
    struct Stretch *stretch;
    int has_left;    /* run under `left` seconds, not settings.handler_timeout */
    double left;     /* what the script's budget for this event has left */
    _Atomic long long *progress; /* deferred: the queue's `finished`, or NULL */
    int reported;    /* events the loop counted in *progress (each once) */
    int c_deliver;   /* func_ref is a c_deliver closure (its string caches, push_cached) */
} Batch;

static int stretch_batch(Batch *b);

/* The upvalues of c_deliver (see there), which run_items also reads. */
#define CD_KEYS 4
enum {
    CD_HANDLERS = 1, /* the Lua deliver's handlers, message_handler, delivering, patterns */
    CD_MSGH,
    CD_DELIVERING,
    CD_PATTERNS,
    CD_FN,          /* the key strings "fn", "tick", "type", "seq" */
    CD_TICK,
    CD_TYPE,
    CD_SEQ,
    CD_LAST_TYPE,   /* the strings run_items last passed as the event type and */
    CD_LAST_KEY,    /* as the first CD_KEYS payload keys (see push_cached) */
    CD_COUNT = CD_LAST_KEY + CD_KEYS - 1
};
#define CD_UPVALUE(i) (LUA_REGISTRYINDEX - (i))
/* How many of a state's objects delivery_deliver prefetches (take_global). */
#define WARM_OBJECTS 5

static void push_cached(lua_State *L, int deliver, int slot, const char *s, size_t len);

/* Runs inside lua_pcall (so allocation failures and errors are caught): for
 * each event, deliver(sub_id, {payload}, tick, seq, type); stops at the first
 * that does not return true, leaving that call's results as its own. */
static int
run_items(lua_State *L)
{
    Batch *b = (Batch *)lua.touserdata(L, 1);
    lua.settop(L, 0);
    WatchSlot *slot = b->slot;
    for (int k = b->next; k < b->count || (b->stretch != NULL && stretch_batch(b)); k++) {
        /* the next handler of the same event shares its budget: same start,
         * same number (an abort claimed for one hits the next: intended) */
        if (k > b->next && slot != NULL && b->items[k].seq != b->items[k - 1].seq) {
            atomic_store(&slot->start_ns, monotonic_ns());
            long long g = b->gen;
            if (!atomic_compare_exchange_strong(&slot->gen, &g, g + 2)) {
                b->claimed = 1; /* the watchdog claimed items[k - 1], which ended */
                return 0;
            }
            b->gen = g + 2;
        }
        b->current = k;
        const Item *it = &b->items[k];
        lua.rawgeti(L, LUA_REGISTRYINDEX, b->func_ref); /* 1: deliver */
        lua.pushinteger(L, it->sub_id);
        lua.createtable(L, 0, it->nfields + 3);
        for (int i = 0; i < it->nfields; i++) {
            const Field *f = &b->fields[it->first + i];
            if (f->kind == F_NIL)
                continue; /* a None value is an absent key, as lupa copies it */
            if (b->c_deliver && i < CD_KEYS)
                push_cached(L, 1, CD_LAST_KEY + i, f->key, (size_t)f->key_len);
            else
                lua.pushlstring(L, f->key, (size_t)f->key_len);
            switch (f->kind) {
            case F_BOOL: lua.pushboolean(L, (int)f->i); break;
            case F_INT: lua.pushinteger(L, f->i); break;
            case F_FLOAT: lua.pushnumber(L, f->f); break;
            default: lua.pushlstring(L, f->s, (size_t)f->s_len); break;
            }
            lua.rawset(L, -3);
        }
        if (it->has_tick)
            lua.pushinteger(L, it->tick);
        else
            lua.pushnil(L);
        lua.pushinteger(L, it->seq);
        if (b->c_deliver)
            push_cached(L, 1, CD_LAST_TYPE, it->type, (size_t)it->type_len);
        else
            lua.pushlstring(L, it->type, (size_t)it->type_len);
        lua.callk(L, 5, LUA_MULTRET, 0, NULL);
        int nresults = lua.gettop(L);
        if (nresults < 1 || !lua.toboolean(L, 1)) {
            b->failed = k;
            return nresults; /* (false, message) */
        }
        lua.settop(L, 0);
        b->done = k + 1;
        if (b->progress != NULL) {
            /* an event has run: progress the emitting thread can see (pace) */
            atomic_fetch_add(b->progress, 1);
            b->reported++;
        }
    }
    if (slot != NULL) {
        /* no event runs any more: a claim from now on finds nothing to stop */
        long long g = b->gen;
        if (atomic_compare_exchange_strong(&slot->gen, &g, g + 2))
            b->gen = g + 2;
        else
            b->claimed = 1;
    }
    return 0;
}

/* ------------------------------------------------- deliver, in C (issue 16)
 * script_env.lua's `deliver(id, event, tick, seq, event_type)` (the event
 * engine's hot path; it stays the reference, and the Python path calls it)
 * done by a C closure, step for step: h = handlers[id] (none: true); a
 * table is a once-handler: handlers[id] and patterns[id] = nil, h = h.fn;
 * event.tick / type / seq set unless present;
 * delivering.seq = seq; then h.fn(event) under lua_pcallk with the message
 * handler, which is what xpcall does: (true) or (false, error).
 *
 * Why: the C code is shared by every state and stays in cache, while a Lua
 * function's prototype, bytecode and constants are each state's own; at
 * 10,000 scripts every one of them is a cache miss per delivery, before the
 * handler itself runs. For the same reason the closure holds the values of
 * the Lua deliver's `handlers`, `message_handler`, `delivering` and
 * `patterns` upvalues as its own upvalues (found by name when the delivery is made): reading
 * them through the Lua function (lua_getupvalue) touched its closure, its
 * prototype, the prototype's upvalue names and each upvalue's box, four or
 * five cold objects per delivery. script_env.lua assigns each of the four
 * once, at its `local` line (a test reads the file and checks), so the
 * values found are the ones the Lua code uses. Indexing is
 * lua_gettable/lua_settable, the same operations (metamethods included) as
 * the Lua code. When an upvalue is missing (script_env.lua renamed it), the
 * Lua deliver is used as before. Everything here runs inside run_items'
 * lua_pcall.
 *
 * The closure's upvalues: the enum before run_items, which reads the last ones. */
#ifndef LUA_TNIL
#define LUA_TNIL 0
#endif

/* What c_deliver needs of Lua's API beyond _luaapi.h's (looked up the same way). */
typedef struct {
    const char *(*setupvalue)(lua_State *, int, int);
    int (*gettable)(lua_State *, int);
    void (*settable)(lua_State *, int);
} DeliverApi;

static DeliverApi lua_d; /* set once, when the module is imported */

static int
load_deliver_api(const char *path)
{
    void *lib = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    if (lib == NULL) {
        PyErr_Format(PyExc_ImportError, "lupa's Lua module is not loaded: %s", dlerror());
        return -1;
    }
    *(void **)(&lua_d.setupvalue) = dlsym(lib, "lua_setupvalue");
    *(void **)(&lua_d.gettable) = dlsym(lib, "lua_gettable");
    *(void **)(&lua_d.settable) = dlsym(lib, "lua_settable");
    dlclose(lib); /* lupa's module stays loaded (see load_api) */
    if (!lua_d.setupvalue || !lua_d.gettable || !lua_d.settable) {
        PyErr_SetString(PyExc_ImportError, "lupa's Lua module lacks the upvalue/table API");
        return -1;
    }
    return 0;
}

/* c_deliver(id, event, tick, seq, event_type), as the Lua deliver. */
static int
c_deliver(lua_State *L)
{
    lua.settop(L, 5);
    lua.pushvalue(L, 1);
    int kind = lua_d.gettable(L, CD_UPVALUE(CD_HANDLERS)); /* 6: h = handlers[id] */
    if (kind == LUA_TNIL) {
        lua.pushboolean(L, 1);
        return 1;
    }
    if (kind == LUA_TTABLE) { /* a once-handler: handlers[id], patterns[id] = nil, nil */
        lua.pushvalue(L, 1);
        lua.pushnil(L);
        lua_d.settable(L, CD_UPVALUE(CD_HANDLERS));
        lua.pushvalue(L, 1);
        lua.pushnil(L);
        lua_d.settable(L, CD_UPVALUE(CD_PATTERNS));
        lua.pushvalue(L, CD_UPVALUE(CD_FN)); /* h = h.fn */
        lua_d.gettable(L, 6);
        lua.copy(L, -1, 6);
        lua.settop(L, 6);
    }
    static const int key[3] = {CD_TICK, CD_TYPE, CD_SEQ}, value[3] = {3, 5, 4};
    for (int i = 0; i < 3; i++) { /* if event.tick == nil then event.tick = tick end ... */
        lua.pushvalue(L, CD_UPVALUE(key[i]));
        int present = lua_d.gettable(L, 2) != LUA_TNIL;
        lua.settop(L, 6);
        if (!present) {
            lua.pushvalue(L, CD_UPVALUE(key[i]));
            lua.pushvalue(L, value[i]);
            lua_d.settable(L, 2);
        }
    }
    lua.pushvalue(L, CD_UPVALUE(CD_SEQ)); /* delivering.seq = seq */
    lua.pushvalue(L, 4);
    lua_d.settable(L, CD_UPVALUE(CD_DELIVERING));
    lua.pushvalue(L, CD_UPVALUE(CD_MSGH)); /* 7 */
    lua.pushvalue(L, 6); /* 8: h */
    lua.pushvalue(L, 2);
    /* no results kept: run_items reads none, and with LUA_MULTRET a handler
     * returning many values would leave no room (ci->top == top) for the
     * pushes below without a lua_checkstack (review of issue 16) */
    if (lua.pcallk(L, 1, 0, 7, 0, NULL) == LUA_OK) {
        lua.pushboolean(L, 1); /* xpcall's true (its results: run_items reads none) */
        return 1;
    }
    lua.pushboolean(L, 0); /* xpcall's (false, error) */
    lua.pushvalue(L, -2);
    return 2;
}

/* The Lua deliver at the top of the stack: replaced by a c_deliver closure
 * over its upvalues' values when they are found (1), else left as it is (0). */
static int
wrap_deliver(lua_State *L)
{
    int f = lua.gettop(L);
    int found[4] = {0, 0, 0, 0};
    static const char *names[4] = {"handlers", "message_handler", "delivering", "patterns"};
    const char *name;
    for (int n = 1; (name = lua.getupvalue(L, f, n)) != NULL; n++) {
        lua.settop(L, f);
        for (int i = 0; i < 4; i++)
            if (strcmp(name, names[i]) == 0)
                found[i] = n;
    }
    for (int i = 0; i < 4; i++)
        if (!found[i])
            return 0;
    for (int i = 0; i < 4; i++)
        lua.getupvalue(L, f, found[i]);
    static const char *keys[4] = {"fn", "tick", "type", "seq"};
    for (int i = 0; i < 4; i++)
        lua.pushlstring(L, keys[i], strlen(keys[i]));
    for (int i = CD_LAST_TYPE; i <= CD_COUNT; i++)
        lua.pushnil(L); /* nothing passed yet */
    lua.pushcclosure(L, c_deliver, CD_COUNT);
    lua.copy(L, -1, f);
    lua.settop(L, f);
    return 1;
}

/* Pushes the string s (len bytes) for run_items, reusing the Lua string
 * kept in upvalue ``slot`` of the c_deliver closure at stack index
 * ``deliver`` when it holds the same bytes, else making it (lua_pushlstring)
 * and keeping it there for the next event. Why: making a string looks it up
 * in the state's string table, one more cold cache line per string per
 * delivery at 10,000 scripts, while the closure's upvalues are read by the
 * call anyway; a script sees the same value either way (a short string is
 * interned, so it is the very same object; a long one compares by value). */
static void
push_cached(lua_State *L, int deliver, int slot, const char *s, size_t len)
{
    lua.getupvalue(L, deliver, slot);
    if (lua.type(L, -1) == LUA_TSTRING) {
        size_t have = 0;
        const char *kept = lua.tolstring(L, -1, &have);
        if (have == len && memcmp(kept, s, len) == 0)
            return;
    }
    lua.settop(L, -2);
    lua.pushlstring(L, s, len);
    lua.pushvalue(L, -1);
    lua_d.setupvalue(L, deliver, slot);
}

/* What take_global is given and finds (see delivery_init). */
typedef struct {
    const char *key;          /* the global the Lua deliver is parked in */
    const void *warm[WARM_OBJECTS]; /* the state's objects every delivery reads */
} TakeGlobal;

/* Registers the function stored under the global ``t->key`` (the Lua
 * deliver, wrapped by c_deliver when it can be), clears the global, and
 * notes in ``t->warm`` where the objects that every plain delivery reads
 * first lie: the registry table (the deliver's reference), the deliver's
 * closure (its upvalues), the `handlers` and `delivering` tables it reads
 * and writes, and the state's allocator data (the event's table). Lua
 * never moves an object, and these live as long as the state (the closure
 * is referenced, the tables are its upvalues, never reassigned), so the
 * addresses stay theirs; a table's contents may move, so only the table
 * itself is noted. Results: (ref, wrapped). */
static int
take_global(lua_State *L)
{
    TakeGlobal *t = (TakeGlobal *)lua.touserdata(L, 1);
    lua.getglobal(L, t->key);
    int wrapped = wrap_deliver(L);
    t->warm[0] = lua.topointer(L, LUA_REGISTRYINDEX);
    t->warm[1] = lua.topointer(L, -1);
    if (wrapped) {
        lua.getupvalue(L, -1, CD_HANDLERS);
        t->warm[2] = lua.topointer(L, -1);
        lua.getupvalue(L, -2, CD_DELIVERING);
        t->warm[3] = lua.topointer(L, -1);
        lua.settop(L, -3);
    }
    void *ud = NULL;
    lua.getallocf(L, &ud);
    t->warm[4] = ud;
    int ref = lua.ref(L, LUA_REGISTRYINDEX);
    lua.pushnil(L);
    lua.setglobal(L, t->key);
    lua.pushinteger(L, ref);
    lua.pushboolean(L, wrapped);
    return 2;
}

/* One str key and scalar value into ``f``: 1; 0 when it needs the general
 * path; -1 with an error set. */
static int
extract_field(PyObject *key, PyObject *value, Field *f)
{
    if (!PyUnicode_CheckExact(key))
        return 0;
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
    return 1;
not_utf8: /* lone surrogates: the general path reports them as lupa does */
    if (PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
        PyErr_Clear();
        return 0;
    }
    return -1;
}

/* The fields of read-only event data of at most max_fields scalars under str
 * keys (a FrozenData, or a mappingproxy of a dict), copied into ``fields``:
 * 1; 0 when the data needs the general path; -1 with an error set. */
static int
extract_payload(PyObject *data, Field *fields, int *nfields, PyTypeObject *proxy_type,
                int max_fields)
{
    if (frozen_type != NULL && Py_TYPE(data) == frozen_type) {
        MbFrozenData *frozen = (MbFrozenData *)data;
        Py_ssize_t n = Py_SIZE(frozen);
        if (n > max_fields)
            return 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            int r = extract_field(frozen->pairs[2 * i], frozen->pairs[2 * i + 1], &fields[i]);
            if (r <= 0)
                return r;
        }
        *nfields = (int)n;
        return 1;
    }
    if (Py_TYPE(data) != proxy_type)
        return 0;
    /* mappingproxy's only field is the mapping; checked at import time */
    PyObject *dict = ((PyObject **)((char *)data + sizeof(PyObject)))[0];
    if (!PyDict_CheckExact(dict) || PyDict_GET_SIZE(dict) > max_fields)
        return 0;
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    int n = 0;
    while (PyDict_Next(dict, &pos, &key, &value)) {
        int r = extract_field(key, value, &fields[n++]);
        if (r <= 0)
            return r;
    }
    *nfields = n;
    return 1;
}

/* One (sub_id, event) into ``it`` and ``fields`` (room for max_fields):
 * 1 plain, 0 general path, -1 error set. */
static int
extract_item(PyObject *sub_id, PyObject *event, Item *it, Field *fields, int first,
             PyTypeObject *proxy_type, int max_fields)
{
    if (!PyTuple_Check(event) || PyTuple_GET_SIZE(event) < 4 || !PyLong_CheckExact(sub_id))
        return 0;
    PyObject *type = PyTuple_GET_ITEM(event, 0), *data = PyTuple_GET_ITEM(event, 1),
             *seq = PyTuple_GET_ITEM(event, 2), *tick = PyTuple_GET_ITEM(event, 3);
    if (!PyUnicode_CheckExact(type) || !PyLong_CheckExact(seq) ||
        (tick != Py_None && !PyLong_CheckExact(tick)))
        return 0;
    int overflow = 0;
    it->sub_id = PyLong_AsLongLongAndOverflow(sub_id, &overflow);
    if (overflow)
        return 0;
    it->seq = PyLong_AsLongLongAndOverflow(seq, &overflow);
    if (overflow)
        return 0;
    it->has_tick = tick != Py_None;
    it->tick = it->has_tick ? PyLong_AsLongLongAndOverflow(tick, &overflow) : 0;
    if (overflow)
        return 0;
    if (PyErr_Occurred())
        return -1;
    it->type = PyUnicode_AsUTF8AndSize(type, &it->type_len);
    if (it->type == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
            return -1;
        PyErr_Clear();
        return 0;
    }
    it->first = first;
    return extract_payload(data, fields + first, &it->nfields, proxy_type, max_fields);
}

/* ------------------------------------------------------------ HandlerBudget */
/* One budget per script per event (SPEC §4b): all of one engine's handlers
 * for one event share one handler time limit. The state both paths keep
 * (moonbus.host.budget has the same in Python, the reference): `seq`, the
 * event whose budget was spent last, and `spent_ns`, the wall time its
 * handlers used so far; `blocked`: the script is being stopped (quarantine),
 * run none of its handlers; `skipped`: handler calls not run for either
 * reason; `calls`: handler calls run (ended, failed or cut), the script's
 * own count for /metrics (one add per engine call, no extra work per event). The C path runs only the case where the budget is fresh (a new
 * event) and not blocked; an event whose budget is partly spent goes to the
 * Python path (ScriptEngine.deliver), which runs the handler under what is
 * left or skips it. Consecutive handlers of one event in one engine call
 * (a deferred batch) share the call's start and watchdog number instead.
 * Fields are read and written with the GIL held. */
typedef struct {
    PyObject_HEAD
    long long seq;
    long long spent_ns;
    char blocked;
    long long skipped;
    long long calls;
} HandlerBudget;

static int
budget_init(HandlerBudget *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "", kwlist))
        return -1;
    self->seq = -1;
    self->spent_ns = 0;
    self->blocked = 0;
    self->skipped = 0;
    self->calls = 0;
    return 0;
}

static PyMemberDef budget_members[] = {
    {"seq", T_LONGLONG, offsetof(HandlerBudget, seq), 0,
     "the event whose budget was spent last (-1: none)"},
    {"spent_ns", T_LONGLONG, offsetof(HandlerBudget, spent_ns), 0,
     "wall time this engine's handlers used on that event"},
    {"blocked", T_BOOL, offsetof(HandlerBudget, blocked), 0,
     "the script is being stopped: run none of its handlers"},
    {"skipped", T_LONGLONG, offsetof(HandlerBudget, skipped), 0,
     "handler calls not run (budget spent, or blocked)"},
    {"calls", T_LONGLONG, offsetof(HandlerBudget, calls), 0,
     "handler calls run (ended, failed or cut by the time limit)"},
    {NULL}};

static PyTypeObject HandlerBudgetType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "moonbus.lua._fastcall.HandlerBudget",
    .tp_basicsize = sizeof(HandlerBudget),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One engine's handler time budget per event (see the module source).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)budget_init,
    .tp_members = budget_members,
};

/* ------------------------------------------------------------ DeliveryCounts
 * What the C deliveries of a runtime did (moonbus.lua.fastcall.DeliveryCounts,
 * shared by every Delivery of one runtime; Runtime.fast_path_statistics):
 * `taken` events settled in C (run, failed or skipped for a spent budget),
 * `handed_back` events given to the Python path (ScriptEngine.deliver).
 * Incremented with the GIL held; read-only from Python. */
typedef struct {
    PyObject_HEAD
    long long taken;
    long long handed_back;
} DeliveryCounts;

static PyMemberDef counts_members[] = {
    {"taken", T_LONGLONG, offsetof(DeliveryCounts, taken), READONLY,
     "events delivered (or settled) in C"},
    {"handed_back", T_LONGLONG, offsetof(DeliveryCounts, handed_back), READONLY,
     "events handed to the Python path"},
    {NULL}};

static PyTypeObject DeliveryCountsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "moonbus.lua._fastcall.DeliveryCounts",
    .tp_basicsize = sizeof(DeliveryCounts),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "What the C event deliveries took and handed back (see the module source).",
    .tp_new = PyType_GenericNew,
    .tp_members = counts_members,
};

/* ------------------------------------------------------------ lupa's lock */
/* lupa takes its runtime lock (a FastRLock) around every use of a Lua state,
 * and so does every C delivery, twice per call. Through bound methods
 * (`lock.acquire()`) each call touched a method object of its own per
 * script, cold at 10,000 scripts (issue 16). The functions of the lock's
 * type are shared by every lock, so they stay warm: each call here is
 * `type(lock).acquire(lock)`, the very function a bound method calls, with
 * the same arguments (a FastRLock has no instance __dict__ that could hold
 * other methods; a lock type with one is refused). */
static int
lupa_lock_wire(PyObject *lock, PyObject **acquire, PyObject **release)
{
    PyTypeObject *type = Py_TYPE(lock);
    if (type->tp_dictoffset != 0) {
        PyErr_SetString(PyExc_TypeError, "lupa_lock: a lock with an instance __dict__");
        return -1;
    }
    *acquire = PyObject_GetAttrString((PyObject *)type, "acquire");
    *release = *acquire == NULL ? NULL : PyObject_GetAttrString((PyObject *)type, "release");
    if (*release == NULL)
        return -1;
    if (!PyCallable_Check(*acquire) || !PyCallable_Check(*release)) {
        PyErr_SetString(PyExc_TypeError, "lupa_lock: acquire/release are not callable");
        return -1;
    }
    return 0;
}

/* `func(lock)` for its side effect: 0, or -1 with an error set. */
static inline int
lupa_lock_call(PyObject *func, PyObject *lock)
{
    PyObject *args[1] = {lock};
    PyObject *r = PyObject_Vectorcall(func, args, 1, NULL);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* ------------------------------------------------------------ Delivery type */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    lua_State *L;
    int func_ref;
    int c_clock;           /* the watchdog's clock is time.monotonic (batches need it) */
    char c_deliver;        /* func_ref is c_deliver over the Lua deliver (else the Lua one) */
    PyObject *runtime;     /* keeps the lupa runtime (and so L) alive */
    PyObject *engine;      /* the LuaEngine: the watchdog's key (identity only) */
    CallState *cs;         /* the engine's call state, shared with engine.py */
    /* lupa's runtime lock and its type's acquire/release functions, called
     * with the lock as their first argument (see lupa_lock_call) */
    PyObject *lupa_lock, *lupa_acquire, *lupa_release;
    PyObject *armed;       /* watchdog.armed */
    PyObject *watchdog;    /* .idle, .wake() */
    PyObject *clock;       /* watchdog.clock */
    PyObject *settings;    /* .handler_timeout: float seconds or None, read per call */
    HandlerBudget *budget; /* shared with the Python path; NULL: none */
    DeliveryCounts *counts; /* the runtime's counters; NULL: none */
    PyObject *end_call;    /* end_call(): the engine's own end of an unusual call */
    PyObject *abort_on_entry; /* abort_on_entry(token): an abort recorded before it */
    PyObject *fallback;    /* ScriptEngine.deliver(sub_id, event) */
    PyObject *failed;      /* failed(sub_id, result, failure, reason, limit) */
    PyObject *lua_error, *lua_memory_error;
    PyTypeObject *proxy_type;
    WatchSlot *slot;       /* this engine's watchdog entry while a C call runs */
    /* where the state's objects that every plain delivery reads lie (NULL:
     * not known), prefetched when a delivery starts (take_global) */
    const void *warm[WARM_OBJECTS];
} Delivery;

/* interned at import: public attribute names and a message */
static PyObject *s_idle, *s_wake, *s_unknown, *s_handler_timeout, *num_zero, *num_one;

static int
delivery_traverse(Delivery *self, visitproc visit, void *arg)
{
    Py_VISIT(self->runtime);
    Py_VISIT(self->engine);
    Py_VISIT(self->cs);
    Py_VISIT(self->lupa_lock);
    Py_VISIT(self->lupa_acquire);
    Py_VISIT(self->lupa_release);
    Py_VISIT(self->armed);
    Py_VISIT(self->watchdog);
    Py_VISIT(self->clock);
    Py_VISIT(self->settings);
    Py_VISIT(self->budget);
    Py_VISIT(self->counts);
    Py_VISIT(self->end_call);
    Py_VISIT(self->abort_on_entry);
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
    Py_CLEAR(self->cs);
    Py_CLEAR(self->lupa_lock);
    Py_CLEAR(self->lupa_acquire);
    Py_CLEAR(self->lupa_release);
    Py_CLEAR(self->armed);
    Py_CLEAR(self->watchdog);
    Py_CLEAR(self->clock);
    Py_CLEAR(self->settings);
    Py_CLEAR(self->budget);
    Py_CLEAR(self->counts);
    Py_CLEAR(self->end_call);
    Py_CLEAR(self->abort_on_entry);
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->failed);
    Py_CLEAR(self->lua_error);
    Py_CLEAR(self->lua_memory_error);
    Py_CLEAR(self->proxy_type);
    Py_CLEAR(self->slot);
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
    static char *kwlist[] = {"engine", "call_state", "watchdog", "lua_module", "end_call",
                             "abort_on_entry", "runtime", "state", "lupa_lock",
                             "global_key", "fallback", "failed", "settings", "budget",
                             "counts", NULL};
    PyObject *engine, *call_state, *watchdog, *lua_module, *end_call, *abort_on_entry;
    PyObject *runtime, *state, *lupa_lock, *fallback, *failed, *settings;
    PyObject *budget = Py_None, *counts = Py_None;
    const char *global_key;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "$OOOOOOOOOsOOOOO", kwlist, &engine,
                                     &call_state, &watchdog, &lua_module, &end_call,
                                     &abort_on_entry, &runtime, &state, &lupa_lock,
                                     &global_key, &fallback, &failed, &settings, &budget,
                                     &counts))
        return -1;
    if (!Py_IS_TYPE(call_state, &CallStateType)) {
        PyErr_SetString(PyExc_TypeError, "call_state must be a _fastcall.CallState");
        return -1;
    }
    if (budget != Py_None && !Py_IS_TYPE(budget, &HandlerBudgetType)) {
        PyErr_SetString(PyExc_TypeError, "budget must be a HandlerBudget or None");
        return -1;
    }
    if (counts != Py_None && !Py_IS_TYPE(counts, &DeliveryCountsType)) {
        PyErr_SetString(PyExc_TypeError, "counts must be a DeliveryCounts or None");
        return -1;
    }
    delivery_clear(self);
    self->vectorcall = (vectorcallfunc)delivery_vectorcall;
    void *L = PyLong_AsVoidPtr(state);
    if (L == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "state must be a lua_State address");
        return -1;
    }
    CallState *cs = (CallState *)call_state;
    if (cs->lock.real == NULL || cs->hook_lock.real == NULL || cs->chain == NULL) {
        PyErr_SetString(PyExc_TypeError, "call_state was not initialised");
        return -1;
    }
    self->runtime = Py_NewRef(runtime);
    self->engine = Py_NewRef(engine);
    self->cs = (CallState *)Py_NewRef(call_state);
    /* public names only: the watchdog's table and clock, lupa's lock's
     * methods, lupa's exception types */
    PyObject *armed = PyObject_GetAttrString(watchdog, "armed");
    PyObject *clock = PyObject_GetAttrString(watchdog, "clock");
    self->lupa_lock = Py_NewRef(lupa_lock);
    int lupa_wired = armed && clock ? lupa_lock_wire(lupa_lock, &self->lupa_acquire,
                                                     &self->lupa_release) : -1;
    if (lupa_wired < 0) {
        Py_XDECREF(armed);
        Py_XDECREF(clock);
        return -1;
    }
    self->lua_error = PyObject_GetAttrString(lua_module, "LuaError");
    self->lua_memory_error = PyObject_GetAttrString(lua_module, "LuaMemoryError");
    int wired = armed && clock && lupa_wired == 0 && self->lua_error && self->lua_memory_error;
    if (wired && !PyDict_CheckExact(armed)) {
        PyErr_SetString(PyExc_TypeError, "watchdog.armed must be a dict");
        wired = 0;
    }
    if (!wired) {
        Py_XDECREF(armed);
        Py_XDECREF(clock);
        return -1;
    }
    self->end_call = Py_NewRef(end_call);
    self->abort_on_entry = Py_NewRef(abort_on_entry);
    self->armed = armed;
    self->watchdog = Py_NewRef(watchdog);
    self->clock = clock;
    self->settings = Py_NewRef(settings);
    self->budget = budget == Py_None ? NULL : (HandlerBudget *)Py_NewRef(budget);
    self->counts = counts == Py_None ? NULL : (DeliveryCounts *)Py_NewRef(counts);
    self->fallback = Py_NewRef(fallback);
    self->failed = Py_NewRef(failed);
    self->proxy_type = (PyTypeObject *)Py_NewRef((PyObject *)&PyDictProxy_Type);
    self->slot = PyObject_New(WatchSlot, &WatchSlotType);
    if (self->slot == NULL)
        return -1;
    atomic_init(&self->slot->start_ns, 0);
    atomic_init(&self->slot->gen, 0);
    self->slot->budget = 0.0;
    self->slot->token = NULL;
    self->slot->tid = 0;
    /* Events of a batch get their start times from CLOCK_MONOTONIC without
     * the GIL: only right when the watchdog measures with the same clock. */
    PyObject *time_module = PyImport_ImportModule("time");
    if (time_module == NULL)
        return -1;
    PyObject *monotonic = PyObject_GetAttrString(time_module, "monotonic");
    Py_DECREF(time_module);
    if (monotonic == NULL)
        return -1;
    self->c_clock = monotonic == clock;
    Py_DECREF(monotonic);

    /* take the Lua function out of the global the caller parked it in */
    if (lupa_lock_call(self->lupa_acquire, self->lupa_lock) < 0)
        return -1;
    lua_State *Ls = (lua_State *)L;
    int base = lua.gettop(Ls);
    TakeGlobal taken = {.key = global_key};
    lua.pushcclosure(Ls, take_global, 0);
    lua.pushlightuserdata(Ls, &taken);
    int status = lua.pcallk(Ls, 1, 2, 0, 0, NULL);
    int isnum = 0;
    lua_Integer ref = status == LUA_OK ? lua.tointegerx(Ls, -2, &isnum) : 0;
    self->c_deliver = status == LUA_OK && lua.toboolean(Ls, -1);
    lua.settop(Ls, base);
    if (lupa_lock_call(self->lupa_release, self->lupa_lock) < 0)
        return -1;
    if (status != LUA_OK || !isnum || ref <= 0) {
        PyErr_SetString(PyExc_RuntimeError, "could not register the Lua deliver function");
        return -1;
    }
    self->func_ref = (int)ref;
    memcpy(self->warm, taken.warm, sizeof self->warm);
    self->L = Ls;
    return 0;
}

/* The caller's native thread id (threading.get_native_id), cached per thread. */
static long
native_tid(void)
{
    static __thread long tid = 0;
    if (tid == 0)
        tid = (long)syscall(SYS_gettid);
    return tid;
}

/* Ends the call as LuaEngine._end_call does; returns the abort reason (a new
 * reference, Py_None when there was none) or NULL on error. */
static PyObject *
end_call(Delivery *self)
{
    CallState *cs = self->cs;
    if (mblock_acquire(&cs->hook_lock, -1) < 0)
        return NULL;
    int simple = CS_REASON(cs->abort_reason) == Py_None && PyList_CheckExact(cs->chain) &&
                 PyList_GET_SIZE(cs->chain) == 0 && cs->closed == Py_False;
    if (simple) {
        CS_SET(cs->in_call, Py_False);
        CS_SET(cs->last_reason, Py_None);
    }
    if (mblock_release(&cs->hook_lock) < 0)
        return NULL;
    if (simple)
        return Py_NewRef(Py_None);
    /* an abort, coroutines left mid-resume, or a handler that closed its own
     * engine: engine.py's own code ends it (LuaEngine._finish_call: _end_call,
     * the prelude's forget, and the release close() left to the call's end) */
    if (mb_call_noargs(self->end_call) < 0)
        return NULL;
    return Py_NewRef(CS_REASON(cs->last_reason));
}

/* 1 if the engine can take a call now (open and idle), storing the token the
 * call gets; 0 if not (or a field holds something unexpected: the Python
 * path decides); -1 on error. Engine lock held. */
static int
engine_ready(Delivery *self, long long *token)
{
    CallState *cs = self->cs;
    long long depth = -1, current = LLONG_MAX;
    if (cs->closed != Py_False)
        return 0;
    int ok = cs_long(cs->depth, &depth);
    if (ok > 0)
        ok = cs_long(cs->token, &current);
    if (ok <= 0)
        return ok;
    if (depth != 0 || current == LLONG_MAX)
        return 0;
    *token = current + 1;
    return 1;
}

/* After the call is marked live: an abort recorded for its token before it
 * started takes effect now (LuaEngine._guarded's check, in the same order:
 * an abort() racing with the marking is seen either here or by abort()). */
static int
abort_on_entry(Delivery *self, PyObject *token_obj)
{
    PyObject *pending = self->cs->pending_token;
    int same = pending == NULL ? 0 : PyObject_RichCompareBool(pending, token_obj, Py_EQ);
    if (same <= 0)
        return same;
    PyObject *r = PyObject_CallOneArg(self->abort_on_entry, token_obj);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* How one engine call ended (new references, NULL when not set). */
typedef struct {
    int status;        /* lua_pcall's */
    PyObject *message; /* the error text, when the call or a handler failed */
    PyObject *reason;  /* the abort reason, Py_None if there was none */
    PyObject *limit;   /* the time limit the call ran under */
} Outcome;

static void
outcome_clear(Outcome *o)
{
    Py_CLEAR(o->message);
    Py_CLEAR(o->reason);
    Py_CLEAR(o->limit);
}

/* Arms the watchdog for a call ``token`` under ``budget`` seconds: the slot,
 * then the entry in the armed table (LuaEngine._guarded's inline arm). */
static int
arm_slot(Delivery *self, Batch *b, PyObject *token_obj, double budget)
{
    WatchSlot *slot = self->slot;
    long long start;
    if (self->c_clock) {
        start = monotonic_ns();
    } else {
        PyObject *now = PyObject_CallNoArgs(self->clock);
        if (now == NULL)
            return -1;
        double seconds = PyFloat_AsDouble(now);
        Py_DECREF(now);
        if (seconds == -1.0 && PyErr_Occurred())
            return -1;
        start = (long long)(seconds * 1e9);
    }
    atomic_store(&slot->start_ns, start);
    slot->budget = budget;
    Py_XSETREF(slot->token, Py_NewRef(token_obj));
    slot->tid = native_tid();
    /* a fresh even number: a claim made on an earlier call can never match */
    long long gen = (atomic_load(&slot->gen) | 1) + 1;
    atomic_store(&slot->gen, gen);
    b->gen = gen;
    if (PyDict_SetItem(self->armed, self->engine, (PyObject *)slot) < 0)
        return -1;
    b->slot = slot;
    PyObject *idle = PyObject_GetAttr(self->watchdog, s_idle);
    if (idle == NULL)
        return -1;
    int sleeping = PyObject_IsTrue(idle);
    Py_DECREF(idle);
    if (sleeping < 0)
        return -1;
    if (sleeping) {
        PyObject *r = PyObject_CallMethodNoArgs(self->watchdog, s_wake);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
    }
    return 0;
}

/* One engine call running b->items[b->next ..] in Lua, following
 * LuaEngine._guarded and _end_call step by step. 1: it ran and *o says how
 * it ended (b->done, current, failed, claimed: how far it got); 0: the
 * engine cannot take a call now (closed, or a call of this thread is in
 * progress): nothing was changed, the caller uses the Python path; -1: an
 * error is set. The engine's lock is released on return either way. */
static int
run_call(Delivery *self, Batch *b, Outcome *o)
{
    o->status = LUA_OK;
    o->message = o->reason = o->limit = NULL;
    b->slot = NULL;
    b->claimed = 0;
    b->failed = -1;
    b->done = b->current = b->next;
    CallState *cs = self->cs;
    if (mblock_acquire(&cs->lock, -1) < 0)
        return -1;
    long long token = 0;
    int ready = engine_ready(self, &token);
    if (ready <= 0) {
        mblock_release_keeping_error(&cs->lock);
        return ready;
    }
    PyObject *token_obj = PyLong_FromLongLong(token);
    if (token_obj == NULL)
        goto unlock_fail;
    o->limit = b->has_left ? PyFloat_FromDouble(b->left)
                           : PyObject_GetAttr(self->settings, s_handler_timeout);
    if (o->limit == NULL)
        goto unlock_fail;
    double budget = 0.0;
    if (o->limit != Py_None) {
        budget = PyFloat_AsDouble(o->limit);
        if (budget == -1.0 && PyErr_Occurred())
            goto unlock_fail;
    }
    CS_SET(cs->token, token_obj);
    CS_SET(cs->in_call, Py_True);
    if (abort_on_entry(self, token_obj) < 0)
        goto end_fail;
    if (o->limit != Py_None && arm_slot(self, b, token_obj, budget) < 0)
        goto end_fail;
    CS_SET(cs->depth, num_one);

    /* ---- Lua, under lupa's lock, without the GIL */
    if (lupa_lock_call(self->lupa_acquire, self->lupa_lock) < 0) {
        CS_SET(cs->depth, num_zero);
        goto end_fail;
    }
    lua_State *L = self->L;
    int base = lua.gettop(L);
    lua.pushcclosure(L, run_items, 0);
    lua.pushlightuserdata(L, b);
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = lua.pcallk(L, 1, LUA_MULTRET, 0, 0, NULL);
    Py_END_ALLOW_THREADS
    o->status = status;
    int decode_failed = 0;
    if (status != LUA_OK || b->failed >= 0) {
        int at = status == LUA_OK ? base + 2 : base + 1;
        if (at <= lua.gettop(L) && lua.type(L, at) == LUA_TSTRING) {
            size_t len = 0;
            const char *text = lua.tolstring(L, at, &len);
            o->message = PyUnicode_DecodeUTF8(text, (Py_ssize_t)len, "replace");
            decode_failed = o->message == NULL;
        } else {
            o->message = Py_NewRef(s_unknown);
        }
    }
    lua.settop(L, base);
    int released = lupa_lock_call(self->lupa_release, self->lupa_lock);

    /* ---- end the call (LuaEngine._end_call) */
    CS_SET(cs->depth, num_zero);
    int cleanup = 0;
    if (b->slot != NULL && PyDict_DelItem(self->armed, self->engine) < 0) {
        if (PyErr_ExceptionMatches(PyExc_KeyError))
            PyErr_Clear();
        else
            cleanup = -1;
    }
    o->reason = (released < 0 || cleanup < 0 || decode_failed) ? NULL : end_call(self);
    Py_DECREF(token_obj);
    if (o->reason == NULL) {
        outcome_clear(o);
        mblock_release_keeping_error(&cs->lock);
        return -1;
    }
    if (mblock_release(&cs->lock) < 0) {
        outcome_clear(o);
        return -1;
    }
    return 1;

end_fail:
    /* marked live but never ran: end it the way engine.py would */
    {
        PyObject *type_, *value, *tb;
        PyErr_Fetch(&type_, &value, &tb);
        if (b->slot != NULL && PyDict_DelItem(self->armed, self->engine) < 0)
            PyErr_Clear(); /* not armed yet */
        PyObject *r = end_call(self);
        if (r == NULL)
            PyErr_WriteUnraisable(self->end_call);
        Py_XDECREF(r);
        PyErr_Restore(type_, value, tb);
    }
unlock_fail:
    Py_XDECREF(token_obj);
    outcome_clear(o);
    mblock_release_keeping_error(&cs->lock);
    return -1;
}

/* The event at b->items[k] did not end plainly (its handler failed, or the
 * call was aborted or failed while it ran): settle it with engine.py's
 * outcome rules, through ``failed`` (which raises and reports as deliver()
 * does). 0, or -1 with an error set. */
static int
report_failure(Delivery *self, PyObject *sub_id, const Outcome *o)
{
    PyObject *result, *failure;
    if (o->status == LUA_OK) {
        result = PyTuple_Pack(2, Py_False, o->message);
        failure = Py_NewRef(Py_None);
    } else {
        result = Py_NewRef(Py_None);
        failure = PyObject_CallOneArg(
            o->status == LUA_ERRMEM ? self->lua_memory_error : self->lua_error, o->message);
    }
    if (result == NULL || failure == NULL) {
        Py_XDECREF(result);
        Py_XDECREF(failure);
        return -1;
    }
    PyObject *fargs[5] = {sub_id, result, failure, o->reason, o->limit};
    int rc = 0;
    PyObject *r = PyObject_Vectorcall(self->failed, fargs, 5, NULL);
    if (r == NULL)
        rc = -1;
    Py_XDECREF(r);
    Py_DECREF(result);
    Py_DECREF(failure);
    return rc;
}

static int
call_fallback(Delivery *self, PyObject *sub_id, PyObject *event)
{
    PyObject *fargs[2] = {sub_id, event};
    if (self->counts != NULL)
        self->counts->handed_back++;
    PyObject *r = PyObject_Vectorcall(self->fallback, fargs, 2, NULL);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* Runs the extracted events b->items[0 .. count) (b->sub_ids[k] and
 * b->events[k] are their Python objects; a stretch may add more), in as few
 * engine calls as their outcomes allow: a call goes on to the next event
 * after each plain end; a failed handler, an abort or an error ends the
 * call, the event is settled, and a new call takes the rest. 0, or -1 with
 * an error set. */
static int
run_batch(Delivery *self, Batch *b)
{
    HandlerBudget *budget = self->budget;
    b->next = 0;
    while (b->next < b->count) {
        if (budget != NULL && (budget->blocked || !self->c_clock)) {
            /* a blocked script (or a test clock): the Python path decides */
            if (call_fallback(self, b->sub_ids[b->next], b->events[b->next]) < 0)
                return -1;
            b->next++;
            continue;
        }
        /* The script's budget for this event is partly spent (an earlier call
         * ran some of its handlers): skip the handler when nothing is left,
         * else run this event's handlers alone, under what is left. */
        long long carry = 0;
        int count = b->count;
        struct Stretch *stretch = b->stretch;
        lua_Integer seq = b->items[b->next].seq;
        if (budget != NULL && budget->seq == seq) {
            PyObject *limit = PyObject_GetAttr(self->settings, s_handler_timeout);
            if (limit == NULL)
                return -1;
            double seconds = limit == Py_None ? -1.0 : PyFloat_AsDouble(limit);
            Py_DECREF(limit);
            if (seconds == -1.0 && PyErr_Occurred())
                return -1;
            if (seconds >= 0) {
                carry = budget->spent_ns;
                b->left = seconds - (double)carry / 1e9;
                if (b->left <= 0) {
                    budget->skipped++;
                    if (self->counts != NULL)
                        self->counts->taken++;
                    b->next++;
                    continue;
                }
                b->has_left = 1;
                int end = b->next + 1;
                while (end < count && b->items[end].seq == seq)
                    end++;
                b->count = end;
                b->stretch = NULL;
            }
        }
        Outcome o;
        int ran = run_call(self, b, &o);
        if (b->has_left) {
            b->has_left = 0;
            b->count = count;
            b->stretch = stretch;
        }
        if (ran < 0)
            return -1;
        if (ran > 0 && budget != NULL && b->slot != NULL) {
            /* what the last event that ran spent (its start covers the earlier
             * handlers of the same event in this call, `carry` the calls before) */
            budget->spent_ns = monotonic_ns() - atomic_load(&b->slot->start_ns) +
                               (b->items[b->current].seq == seq ? carry : 0);
            budget->seq = b->items[b->current].seq;
        }
        if (ran == 0) {
            /* closed, or busy on this thread: the Python path says what that means */
            for (int k = b->next; k < b->count; k++)
                if (call_fallback(self, b->sub_ids[k], b->events[k]) < 0)
                    return -1;
            return 0;
        }
        if (o.status == LUA_OK && b->failed < 0) {
            /* every event ran (or a claim came after the last that finished):
             * an abort that hit no running handler changes nothing */
            if (self->counts != NULL)
                self->counts->taken += b->done - b->next;
            if (budget != NULL)
                budget->calls += b->done - b->next;
            b->next = b->done;
            outcome_clear(&o);
            continue;
        }
        int k = o.status == LUA_OK ? b->failed : b->current;
        if (self->counts != NULL)
            self->counts->taken += k + 1 - b->next; /* the events up to the failed one */
        if (budget != NULL)
            budget->calls += k + 1 - b->next;
        int rc = report_failure(self, b->sub_ids[k], &o);
        outcome_clear(&o);
        if (rc < 0)
            return -1;
        b->next = k + 1;
    }
    return 0;
}

/* delivery(sub_id, event): None, or NULL with an error set. */
static PyObject *
delivery_deliver(Delivery *self, PyObject *sub_id, PyObject *event)
{
    if (self->L == NULL)
        goto general;
    /* At 10,000 scripts everything this script owns is out of cache, and the
     * call below would fetch it one miss after the other: start the fetches
     * of the objects a plain delivery always touches now, all at once
     * (issue 16). A prefetch changes nothing but timing. */
    __builtin_prefetch(self->cs);
    __builtin_prefetch((char *)self->cs + 64);
    __builtin_prefetch((char *)self->cs + 128);
    __builtin_prefetch(self->slot);
    __builtin_prefetch(self->budget);
    __builtin_prefetch(self->lupa_lock);
    __builtin_prefetch(self->engine);
    __builtin_prefetch(self->L);
    __builtin_prefetch((char *)self->L + 64);
    __builtin_prefetch((char *)self->L + 128);
    /* and the Lua objects it reads first, whose addresses are known (see
     * take_global): the closure and allocator data span a few lines */
    const void *const *warm = self->warm;
    __builtin_prefetch(warm[0]);
    __builtin_prefetch(warm[1]);
    __builtin_prefetch((const char *)warm[1] + 64);
    __builtin_prefetch((const char *)warm[1] + 128);
    __builtin_prefetch((const char *)warm[1] + 192);
    __builtin_prefetch(warm[2]);
    __builtin_prefetch(warm[3]);
    if (warm[4] != NULL) {
        __builtin_prefetch(warm[4]);
        __builtin_prefetch((const char *)warm[4] + 64);
    }
    Item item;
    Field fields[MAX_FIELDS];
    int plain = extract_item(sub_id, event, &item, fields, 0, self->proxy_type, MAX_FIELDS);
    if (plain < 0)
        return NULL;
    if (plain == 0)
        goto general;
    PyObject *sub_ids[1] = {sub_id}, *events[1] = {event};
    Batch b = {.func_ref = self->func_ref, .c_deliver = self->c_deliver, .count = 1,
               .items = &item, .fields = fields,
               .sub_ids = sub_ids, .events = events};
    if (run_batch(self, &b) < 0)
        return NULL;
    Py_RETURN_NONE;

general:
    if (call_fallback(self, sub_id, event) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
delivery_vectorcall(Delivery *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 2 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "Delivery(sub_id, event) takes 2 arguments");
        return NULL;
    }
    return delivery_deliver(self, args[0], args[1]);
}

/* ------------------------------------------------------------ BoundDelivery */
/* delivery.bind(sub_id): what the bus calls for one subscription, handler(event),
 * the same as functools.partial(delivery, sub_id) but one object: a partial
 * also reads its args tuple and builds an argument array at every call, and
 * at 10,000 scripts each of those objects is out of cache (issue 16). */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Delivery *delivery;
    PyObject *sub_id;
} BoundDelivery;

static PyObject *
bound_vectorcall(BoundDelivery *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "a bound delivery takes 1 argument (the event)");
        return NULL;
    }
    return delivery_deliver(self->delivery, self->sub_id, args[0]);
}

static int
bound_traverse(BoundDelivery *self, visitproc visit, void *arg)
{
    Py_VISIT(self->delivery);
    Py_VISIT(self->sub_id);
    return 0;
}

static int
bound_clear(BoundDelivery *self)
{
    Py_CLEAR(self->delivery);
    Py_CLEAR(self->sub_id);
    return 0;
}

static void
bound_dealloc(BoundDelivery *self)
{
    PyObject_GC_UnTrack(self);
    bound_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
bound_repr(BoundDelivery *self)
{
    return PyUnicode_FromFormat("<bound delivery of sub_id %R>", self->sub_id);
}

static PyMemberDef bound_members[] = {
    {"delivery", T_OBJECT, offsetof(BoundDelivery, delivery), READONLY, "the Delivery"},
    {"sub_id", T_OBJECT, offsetof(BoundDelivery, sub_id), READONLY, "the subscription's id"},
    {NULL}};

static PyTypeObject BoundDeliveryType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "moonbus.lua._fastcall.BoundDelivery",
    .tp_basicsize = sizeof(BoundDelivery),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "delivery.bind(sub_id): handler(event) for one subscription (see the source).",
    .tp_dealloc = (destructor)bound_dealloc,
    .tp_traverse = (traverseproc)bound_traverse,
    .tp_clear = (inquiry)bound_clear,
    .tp_repr = (reprfunc)bound_repr,
    .tp_members = bound_members,
    .tp_vectorcall_offset = offsetof(BoundDelivery, vectorcall),
    .tp_call = PyVectorcall_Call,
};

static PyObject *
delivery_bind(Delivery *self, PyObject *sub_id)
{
    BoundDelivery *bound = PyObject_GC_New(BoundDelivery, &BoundDeliveryType);
    if (bound == NULL)
        return NULL;
    bound->vectorcall = (vectorcallfunc)bound_vectorcall;
    bound->delivery = (Delivery *)Py_NewRef((PyObject *)self);
    bound->sub_id = Py_NewRef(sub_id);
    PyObject_GC_Track(bound);
    return (PyObject *)bound;
}

static PyMemberDef delivery_members[] = {
    {"c_deliver", T_BOOL, offsetof(Delivery, c_deliver), READONLY,
     "True: script_env.lua's deliver steps run in C (c_deliver), else the Lua deliver"},
    {NULL}};

static PyMethodDef delivery_methods[] = {
    {"bind", (PyCFunction)delivery_bind, METH_O,
     "bind(sub_id) -> handler(event): this delivery for one subscription."},
    {NULL, NULL, 0, NULL}};


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
    .tp_methods = delivery_methods,
    .tp_members = delivery_members,
};

/* ------------------------------------------------------------ EventQueue */
/* Deferred delivery's queue (moonbus.host.deferred): the bus calls an
 * Enqueuer(event) for each event-engine subscription; it appends
 * (target, sub_id, event) here and, if the event thread sleeps, wakes it
 * with ``notify()``. drain() takes what is queued, oldest first, and runs
 * each run of events for the same C Delivery as one engine call
 * (run_batch), any other target as target(sub_id, event).
 *
 * Why the work is split this way: the event thread's Lua runs without the
 * GIL, in parallel with the emitting thread, but everything that reads
 * Python objects needs the GIL, which an emitting thread hands over only
 * every switch interval (5 ms). So the emitting thread, which holds the GIL
 * anyway, extracts each event for a C Delivery when it queues it (`plain`,
 * `item`, `fields`: what run_items needs, pointing into the event's str
 * objects, which the entry keeps alive), and the event thread, once in an
 * engine call, keeps taking such entries for the same script from the ring
 * without the GIL (stretch_batch) instead of going back for the GIL after
 * every run. It returns for the GIL when the queue is empty, the next entry
 * is for another target or needs Python, or STRETCH_MAX_EVENTS /
 * STRETCH_MAX_NS are reached (a script's stop waits for the engine's lock
 * at most that long); then the call ends and the references are released.
 *
 * Threads and locks: `mutex` guards the ring (head, size, capacity, the
 * entries) and nothing else; it is held only for copying entries in or out,
 * never while calling Python or Lua, and the GIL is never requested while
 * holding it (the emitting thread takes it with the GIL held, the event
 * thread inside a stretch without), so the two cannot deadlock. `sleeping`,
 * notify and report are used with the GIL held. One drain runs at a time
 * (DeferredDelivery's run lock; a nested call gets its own scratch). The
 * entries' references are owned by the ring, which the collector does not
 * traverse: a queued event is alive until delivered, as it would be on the
 * stack of an immediate delivery. */
#define ENTRY_FIELDS 8                     /* fields extracted at push time */
#define STRETCH_MAX_EVENTS 65536           /* events taken in one stretch */
#define STRETCH_MAX_NS (20 * 1000000LL)    /* and at most this long */
#define STRETCH_MIN_TAKE 256               /* fewer queued: pause first, */
#define STRETCH_DENSE 16                   /* if the last visit took this many */
#define STRETCH_PAUSE_NS 100000            /* 0.1 ms */
#define PACE_RING 4096                     /* push times kept for queue_pace */

typedef struct {
    PyObject *target, *sub_id, *event;
    int plain;                   /* item and fields hold the event, extracted */
    Item item;                   /* item.first is 0: its fields are below */
    Field fields[ENTRY_FIELDS];
} Entry;

/* The arrays of one drain's batch, kept by the queue between drains (a drain
 * of thousands of events would otherwise map and fault in fresh pages every
 * time). Raw allocations: a stretch grows them without the GIL. Used by the
 * thread running the drain only. */
typedef struct {
    PyObject **sub_ids, **events;
    Item *items;
    Field *fields;
    Py_ssize_t capacity, field_capacity;
} Scratch;

static void
scratch_free(Scratch *s)
{
    PyMem_RawFree(s->sub_ids);
    PyMem_RawFree(s->events);
    PyMem_RawFree(s->items);
    PyMem_RawFree(s->fields);
    memset(s, 0, sizeof(*s));
}

/* Room for n events and `fields` fields, keeping what is there: 0, or -1
 * (out of memory; no exception is set: this may run without the GIL). */
static int
scratch_grow(Scratch *s, Py_ssize_t n, Py_ssize_t fields)
{
    if (n > s->capacity) {
        Py_ssize_t cap = s->capacity ? s->capacity : 1024;
        while (cap < n)
            cap *= 2;
        PyObject **sub_ids = PyMem_RawRealloc(s->sub_ids, sizeof(PyObject *) * (size_t)cap);
        if (sub_ids == NULL)
            return -1;
        s->sub_ids = sub_ids;
        PyObject **events = PyMem_RawRealloc(s->events, sizeof(PyObject *) * (size_t)cap);
        if (events == NULL)
            return -1;
        s->events = events;
        Item *items = PyMem_RawRealloc(s->items, sizeof(Item) * (size_t)cap);
        if (items == NULL)
            return -1;
        s->items = items;
        s->capacity = cap;
    }
    if (fields > s->field_capacity) {
        Py_ssize_t cap = s->field_capacity ? s->field_capacity : 4096;
        while (cap < fields)
            cap *= 2;
        Field *grown = PyMem_RawRealloc(s->fields, sizeof(Field) * (size_t)cap);
        if (grown == NULL)
            return -1;
        s->fields = grown;
        s->field_capacity = cap;
    }
    return 0;
}

/* A clock's reading in ns (-1: unreadable; no GIL needed). */
static long long
clock_ns(clockid_t clock)
{
    struct timespec ts;
    if (clock_gettime(clock, &ts) != 0)
        return -1;
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* The estimate of what one delivery costs the event thread in CPU time
 * inside drains (pace_costly). Read and written by emitting threads with the
 * GIL held; a waiting emit works on its own copy without the GIL and stores
 * it back. */
typedef struct {
    clockid_t clock;              /* the event thread's CPU clock */
    int clock_ok;                 /* `clock` is valid */
    long long cpu_mark, fin_mark; /* its drain CPU time and `finished` at the mark */
    long long cost_ns;            /* CPU per delivery, last estimate */
    long long host_ns;            /* host-call wall time seen during waits (pace) */
} PaceCost;

typedef struct {
    PyObject_HEAD
    pthread_mutex_t mutex;           /* guards the ring (see above) */
    int mutex_ready;
    Entry *ring;
    Py_ssize_t capacity, head, size; /* capacity is a power of two */
    int sleeping;                    /* the event thread waits for a notify */
    PyObject *notify;                /* wakes the event thread */
    PyObject *report;                /* report(target, exc): a target raised */
    Scratch scratch;                 /* reused by drains (see Scratch) */
    int scratch_busy;                /* a drain is using it */
    _Atomic long long stretched;     /* entries taken by stretches, ever */
    _Atomic long long paused;        /* pauses stretches took for a dense stream */
    /* Pacing (see queue_pace): */
    _Atomic long long pushed;        /* entries queued, ever (GIL held) */
    _Atomic long long finished;      /* entries whose delivery ended, ever */
    _Atomic int waiting;             /* emitting threads in queue_pace's wait */
    pthread_cond_t progress_cond;    /* signalled (under mutex) when entries end */
    int cond_ready;
    long long lag_ns;                /* max_lag in ns; 0: pacing off (GIL held) */
    unsigned long owner;             /* the event thread's ident (0: none) */
    long long pushed_ns[PACE_RING];  /* entry k was queued at pushed_ns[k % ring] */
    long long gave_up_at;            /* `finished` when a wait last gave up */
    long long waits, waited_ns, gave_up; /* counters (GIL held) */
    PaceCost cost;                   /* what a delivery costs the event thread (GIL held) */
    /* The event thread's CPU inside drain() (written by it, read by pace):
     * the total of finished drains, and its CPU clock at the start of the
     * drain running now (-1: none). Drains only: waking up, sleeping and the
     * Python loop around drain() cost CPU per drain, not per delivery, and
     * would make many small paced drains look costly. */
    _Atomic long long drain_cpu_ns, drain_start_cpu;
    _Atomic long long drain_start_wall; /* monotonic_ns() at that start */
    int drain_depth;                 /* nested drains (the outer one measures) */
    /* Wall time the event thread spends inside host calls (a script's calls
     * into Python: host APIs, shared, logger) during drains, counted as
     * delivery cost with its CPU (see queue_host_enter): the total of
     * finished calls, and monotonic_ns() when the outermost running one
     * began (-1: none). Written by the event thread only, read by pace. */
    _Atomic long long host_ns, host_start;
    int host_depth;                  /* nested host calls (the outer one counts) */
    long long declined;              /* late emits not paced: costly deliveries */
    /* The bound (HostSettings.max_queued_deliveries; 0: none): a push that
     * finds `size` at it is dropped and counted (GIL held; read under mutex). */
    Py_ssize_t max_size, peak;
    long long dropped;
} EventQueue;

/* A stretch: the engine call of a drain taking more entries for its target
 * from the ring, without the GIL (run_items calls stretch_batch when it has
 * run every event of its batch). */
struct Stretch {
    EventQueue *queue;
    Scratch *scratch;
    PyObject *target;
    Py_ssize_t nfields;    /* fields used in scratch->fields */
    long long deadline_ns; /* CLOCK_MONOTONIC */
    int last_take;         /* entries the previous visit to the ring took */
};

static void
queue_dealloc(EventQueue *self)
{
    PyObject_GC_UnTrack(self);
    for (Py_ssize_t k = 0; k < self->size; k++) {
        Entry *e = &self->ring[(self->head + k) & (self->capacity - 1)];
        Py_DECREF(e->target);
        Py_DECREF(e->sub_id);
        Py_DECREF(e->event);
    }
    PyMem_RawFree(self->ring);
    scratch_free(&self->scratch);
    if (self->mutex_ready)
        pthread_mutex_destroy(&self->mutex);
    if (self->cond_ready)
        pthread_cond_destroy(&self->progress_cond);
    Py_XDECREF(self->notify);
    Py_XDECREF(self->report);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
queue_traverse(EventQueue *self, visitproc visit, void *arg)
{
    Py_VISIT(self->notify);
    Py_VISIT(self->report);
    return 0;
}

static int
queue_clear(EventQueue *self)
{
    Py_CLEAR(self->notify);
    Py_CLEAR(self->report);
    return 0;
}

static int
queue_init(EventQueue *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"notify", "report", NULL};
    PyObject *notify, *report;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "$OO", kwlist, &notify, &report))
        return -1;
    if (!self->mutex_ready) {
        if (pthread_mutex_init(&self->mutex, NULL) != 0) {
            PyErr_SetString(PyExc_RuntimeError, "EventQueue: cannot create its mutex");
            return -1;
        }
        self->mutex_ready = 1;
    }
    if (!self->cond_ready) {
        pthread_condattr_t attr;
        int ok = pthread_condattr_init(&attr) == 0;
        ok = ok && pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0 &&
             pthread_cond_init(&self->progress_cond, &attr) == 0;
        pthread_condattr_destroy(&attr);
        if (!ok) {
            PyErr_SetString(PyExc_RuntimeError, "EventQueue: cannot create its condition");
            return -1;
        }
        self->cond_ready = 1;
        self->gave_up_at = -1;
        atomic_store(&self->drain_start_cpu, -1);
        atomic_store(&self->host_start, -1);
    }
    if (self->ring == NULL) {
        self->capacity = 1024;
        self->ring = PyMem_RawMalloc(sizeof(Entry) * (size_t)self->capacity);
        if (self->ring == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    Py_XSETREF(self->notify, Py_NewRef(notify));
    Py_XSETREF(self->report, Py_NewRef(report));
    return 0;
}

/* Appends one entry (GIL held); for a C Delivery, extracts the event now
 * (see the section comment). */
static int
queue_push(EventQueue *self, PyObject *target, PyObject *sub_id, PyObject *event)
{
    if (self->ring == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "EventQueue was not initialised");
        return -1;
    }
    Entry entry;
    entry.plain = 0;
    if (Py_IS_TYPE(target, &DeliveryType) && ((Delivery *)target)->L != NULL &&
        ((Delivery *)target)->c_clock) {
        entry.plain = extract_item(sub_id, event, &entry.item, entry.fields, 0,
                                   ((Delivery *)target)->proxy_type, ENTRY_FIELDS);
        if (entry.plain < 0) {
            /* the drain extracts it again and reports the error there */
            PyErr_Clear();
            entry.plain = 0;
        }
    }
    pthread_mutex_lock(&self->mutex);
    if (self->max_size > 0 && self->size >= self->max_size) {
        /* full: not queued (nothing was referenced yet; not counted as pushed,
         * so pacing does not wait for it); the drain reports the drops */
        pthread_mutex_unlock(&self->mutex);
        self->dropped++;
        return 0;
    }
    if (self->size == self->capacity) {
        Py_ssize_t grown = self->capacity * 2;
        Entry *ring = PyMem_RawMalloc(sizeof(Entry) * (size_t)grown);
        if (ring == NULL) {
            pthread_mutex_unlock(&self->mutex);
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t k = 0; k < self->size; k++)
            ring[k] = self->ring[(self->head + k) & (self->capacity - 1)];
        PyMem_RawFree(self->ring);
        self->ring = ring;
        self->capacity = grown;
        self->head = 0;
    }
    Entry *e = &self->ring[(self->head + self->size) & (self->capacity - 1)];
    entry.target = Py_NewRef(target);
    entry.sub_id = Py_NewRef(sub_id);
    entry.event = Py_NewRef(event);
    if (entry.plain)
        *e = entry;
    else
        memcpy(e, &entry, offsetof(Entry, item));
    self->size++;
    if (self->size > self->peak)
        self->peak = self->size;
    pthread_mutex_unlock(&self->mutex);
    long long k = atomic_load(&self->pushed);
    if (self->lag_ns > 0)
        self->pushed_ns[k & (PACE_RING - 1)] = monotonic_ns();
    atomic_store(&self->pushed, k + 1); /* pushes are serialised by the GIL */
    if (self->sleeping) {
        self->sleeping = 0; /* one notify per sleep is enough */
        return mb_call_noargs(self->notify);
    }
    return 0;
}

static Py_ssize_t
queue_length(EventQueue *self)
{
    pthread_mutex_lock(&self->mutex);
    Py_ssize_t size = self->size;
    pthread_mutex_unlock(&self->mutex);
    return size;
}

/* Moves plain entries for `target` from the ring's head into the scratch
 * batch (from index `count`), at most `max` of them; the ring's references
 * move with them, untouched (refcounts change only with the GIL). Returns
 * the new count (mutex held by the caller; no GIL needed; stops early if
 * the scratch cannot grow). */
static int
take_plain_run(EventQueue *q, Scratch *s, PyObject *target, int count, Py_ssize_t max,
               Py_ssize_t *nfields)
{
    while (count < max && q->size > 0) {
        Entry *e = &q->ring[q->head];
        if (e->target != target || !e->plain)
            break;
        int nf = e->item.nfields;
        if (scratch_grow(s, count + 1, *nfields + nf) < 0)
            break;
        s->items[count] = e->item;
        s->items[count].first = (int)*nfields;
        memcpy(&s->fields[*nfields], e->fields, sizeof(Field) * (size_t)nf);
        *nfields += nf;
        s->sub_ids[count] = e->sub_id; /* the references move to the batch */
        s->events[count] = e->event;   /* (and e->target's: released after it) */
        q->head = (q->head + 1) & (q->capacity - 1);
        q->size--;
        count++;
    }
    return count;
}

/* Called by run_items, inside the engine call and without the GIL, when
 * every event of the batch has run: takes more entries for the same
 * script. 1 if there are more to run, 0 to end the call. */
static int
stretch_batch(Batch *b)
{
    struct Stretch *st = b->stretch;
    if (b->count >= STRETCH_MAX_EVENTS || monotonic_ns() >= st->deadline_ns)
        return 0;
    EventQueue *q = st->queue;
    pthread_mutex_lock(&q->mutex);
    Py_ssize_t queued = q->size;
    pthread_mutex_unlock(&q->mutex);
    if (queued < STRETCH_MIN_TAKE) {
        /* A dense stream (the last visit took many): let the emitting thread
         * queue more first, so each visit takes many entries (fewer hand-offs
         * of the mutex and of the entries' cache lines between the cores).
         * A sparse one: never wait (each event's latency would grow by the
         * pause); take what is there, or end the call if nothing is. */
        if (st->last_take >= STRETCH_DENSE && atomic_load(&q->waiting) == 0) {
            /* (not while an emit waits for this queue in queue_pace: it
             * queues nothing until the call ends) */
            struct timespec pause = {0, STRETCH_PAUSE_NS};
            atomic_fetch_add(&q->paused, 1);
            nanosleep(&pause, NULL);
        } else if (queued == 0) {
            return 0;
        }
    }
    pthread_mutex_lock(&q->mutex);
    int count = take_plain_run(q, st->scratch, st->target, b->count, STRETCH_MAX_EVENTS,
                               &st->nfields);
    pthread_mutex_unlock(&q->mutex);
    st->last_take = count - b->count;
    if (count == b->count)
        return 0;
    atomic_fetch_add(&q->stretched, count - b->count);
    /* the arrays may have moved */
    b->items = st->scratch->items;
    b->fields = st->scratch->fields;
    b->sub_ids = st->scratch->sub_ids;
    b->events = st->scratch->events;
    b->count = count;
    return 1;
}

/* `n` more entries have been delivered: counted, and an emitting thread
 * waiting in queue_pace is woken (any thread, with or without the GIL; the
 * seq_cst pair finished/waiting means a waiter that missed this count is
 * already in its wait and gets the signal). */
static void
queue_finished(EventQueue *q, long long n)
{
    if (n > 0)
        atomic_fetch_add(&q->finished, n);
    if (atomic_load(&q->waiting) > 0) {
        pthread_mutex_lock(&q->mutex);
        pthread_cond_broadcast(&q->progress_cond);
        pthread_mutex_unlock(&q->mutex);
    }
}

/* Reports a target's Exception through ``report`` (0), or returns -1 with
 * an exception that must propagate (not an Exception, or report failed). */
static int
report_target_error(EventQueue *self, PyObject *target)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception))
        return -1;
    PyObject *type, *exc, *tb;
    PyErr_Fetch(&type, &exc, &tb);
    PyErr_NormalizeException(&type, &exc, &tb);
    if (tb != NULL)
        PyException_SetTraceback(exc, tb);
    PyObject *r = PyObject_CallFunctionObjArgs(self->report, target, exc, NULL);
    Py_XDECREF(type);
    Py_XDECREF(exc);
    Py_XDECREF(tb);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* One run of plain entries for the C Delivery at the ring's head, in one
 * engine call that may stretch (see above). `*taken` says how many entries
 * left the ring. 0, or -1 with an exception that must propagate. */
static int
drain_c_run(EventQueue *self, Scratch *s, Delivery *d, Py_ssize_t max, Py_ssize_t *taken)
{
    struct Stretch st = {.queue = self, .scratch = s, .target = (PyObject *)d, .nfields = 0};
    if (scratch_grow(s, 1, ENTRY_FIELDS) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    pthread_mutex_lock(&self->mutex);
    int count = take_plain_run(self, s, (PyObject *)d, 0, max, &st.nfields);
    pthread_mutex_unlock(&self->mutex);
    *taken = 0;
    if (count == 0)
        return 0; /* another drain took the head meanwhile (only if misused) */
    st.deadline_ns = monotonic_ns() + STRETCH_MAX_NS;
    st.last_take = count;
    Batch b = {.func_ref = d->func_ref, .c_deliver = d->c_deliver, .count = count, .items = s->items,
               .fields = s->fields, .sub_ids = s->sub_ids, .events = s->events,
               .stretch = &st, .progress = &self->finished};
    int rc = run_batch(d, &b);
    queue_finished(self, b.count - b.reported);
    if (rc < 0)
        rc = report_target_error(self, (PyObject *)d);
    /* every reference the taken entries held, now that the GIL is held */
    *taken = b.count;
    for (int k = 0; k < b.count; k++) {
        Py_DECREF(s->sub_ids[k]);
        Py_DECREF(s->events[k]);
    }
    for (int k = 0; k < b.count; k++)
        Py_DECREF(d); /* the last may free d: nothing uses it after this */
    return rc;
}

/* drain(max): deliver queued entries, oldest first, starting at most
 * ``max`` of them (a stretch may add more); returns how many were delivered.
 * Entries queued meanwhile for another target wait for the next drain. */
static PyObject *
queue_drain(EventQueue *self, PyObject *arg)
{
    Py_ssize_t max = PyLong_AsSsize_t(arg);
    if (max == -1 && PyErr_Occurred())
        return NULL;
    if (max > INT_MAX / 8)
        max = INT_MAX / 8; /* Batch counts are ints */
    Scratch own = {0};
    Scratch *s = self->scratch_busy ? &own : &self->scratch;
    int was_busy = self->scratch_busy;
    self->scratch_busy = 1;
    /* the event thread's CPU inside its outermost drain (see drain_cpu_ns) */
    int measured = self->owner != 0 && PyThread_get_thread_ident() == self->owner;
    long long cpu_start = -1;
    if (measured && self->drain_depth++ == 0) {
        cpu_start = clock_ns(CLOCK_THREAD_CPUTIME_ID);
        atomic_store(&self->drain_start_wall, monotonic_ns());
        atomic_store(&self->drain_start_cpu, cpu_start);
    }
    Py_ssize_t delivered = 0;
    int rc = 0;
    while (delivered < max && rc == 0) {
        pthread_mutex_lock(&self->mutex);
        if (self->size == 0) {
            pthread_mutex_unlock(&self->mutex);
            break;
        }
        Entry *head = &self->ring[self->head];
        PyObject *target = head->target, *sub_id = head->sub_id, *event = head->event;
        if (head->plain && Py_IS_TYPE(target, &DeliveryType) &&
            ((Delivery *)target)->L != NULL) {
            pthread_mutex_unlock(&self->mutex);
            Py_ssize_t taken = 0;
            rc = drain_c_run(self, s, (Delivery *)target, max - delivered, &taken);
            delivered += taken;
            continue;
        }
        /* anything else: the target itself (a C Delivery takes its general path) */
        self->head = (self->head + 1) & (self->capacity - 1);
        self->size--;
        pthread_mutex_unlock(&self->mutex);
        PyObject *fargs[2] = {sub_id, event};
        PyObject *r = PyObject_Vectorcall(target, fargs, 2, NULL);
        if (r == NULL)
            rc = report_target_error(self, target);
        Py_XDECREF(r);
        Py_DECREF(target);
        Py_DECREF(sub_id);
        Py_DECREF(event);
        queue_finished(self, 1);
        delivered++;
    }
    self->scratch_busy = was_busy;
    scratch_free(&own);
    if (measured)
        self->drain_depth--;
    if (cpu_start >= 0) {
        long long cpu_end = clock_ns(CLOCK_THREAD_CPUTIME_ID);
        /* the start goes first: a reader in between undercounts, never twice */
        atomic_store(&self->drain_start_cpu, -1);
        if (cpu_end > cpu_start)
            atomic_fetch_add(&self->drain_cpu_ns, cpu_end - cpu_start);
    }
    if (rc < 0)
        return NULL;
    return PyLong_FromSsize_t(delivered);
}

static PyObject *
queue_get_sleeping(EventQueue *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(self->sleeping);
}

static int
queue_set_sleeping(EventQueue *self, PyObject *value, void *closure)
{
    (void)closure;
    int truth = value == NULL ? 0 : PyObject_IsTrue(value);
    if (truth < 0)
        return -1;
    self->sleeping = truth;
    return 0;
}

static PyObject *
queue_push_method(EventQueue *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "push(target, sub_id, event)");
        return NULL;
    }
    if (queue_push(self, args[0], args[1], args[2]) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *queue_handler(EventQueue *self, PyObject *const *args, Py_ssize_t nargs);

/* pace(): called by the bus after each top-level emit, on the emitting
 * thread, with the GIL held (Bus.set_pace). Why: an event-engine handler
 * that calls into Python (shared store, logger, host API) needs the GIL on
 * the event thread, and a host thread busy in Python between emits hands
 * it over only every switch interval (5 ms), once per call: the queue
 * backs up and each event waits milliseconds (the GIL convoy). So when
 * the oldest entry not yet delivered was queued more than `max_lag` ago,
 * the emitting thread waits here with the GIL released until
 * everything queued before it has been delivered. While it waits the event
 * thread has the GIL at once; a thread that keeps up (or runs Lua without
 * the GIL) never makes an emit wait.
 *
 * The wait also ends when the event thread finishes nothing for
 * PACE_GIVE_UP x `max_lag` although the GIL is free (a slow handler, or one blocked on something
 * the emitter holds): then it is not the GIL that holds it up, and emits do
 * not wait again until it finishes something (`gave_up_at`). Never waits on
 * the event thread itself, or with pacing off (`max_lag` 0). Order and
 * delivery are unchanged: only when emit returns. */
/* How many times `max_lag` a waiting emit gives the event thread to finish
 * something, GIL free, before it stops waiting: a loaded machine may not
 * run the woken event thread at once, and waiting up to this long is still
 * no worse than the switch interval an emit would otherwise cost it. */
#define PACE_GIVE_UP 20

/* A delivery is cheap when it costs the event thread at most this share of
 * `max_lag` in CPU time (lag / PACE_CHEAP_DIV): several then fit in the lag. */
#define PACE_CHEAP_DIV 4
/* The estimate of pace_costly covers at least this many deliveries. */
#define PACE_SAMPLE 16

/* The event thread's CPU time inside drains so far (any thread, no GIL
 * needed); -1: unmeasurable. The drain running now is included once it has
 * run `young` ns of wall time (before that it cannot close an estimate's
 * window alone, and reading another thread's CPU clock is a syscall that
 * may take that CPU's run-queue lock: the common short drain never pays it).
 * If a drain ends while this reads, the running one is left out (counted at
 * the next read). */
static long long
drain_cpu_ns(EventQueue *q, const PaceCost *c, long long young)
{
    if (!c->clock_ok)
        return -1;
    long long total = atomic_load(&q->drain_cpu_ns);
    long long start = atomic_load(&q->drain_start_cpu);
    if (start < 0 || monotonic_ns() - atomic_load(&q->drain_start_wall) < young)
        return total;
    long long now = clock_ns(c->clock);
    if (now < 0)
        return -1;
    if (atomic_load(&q->drain_cpu_ns) != total || now < start)
        return total;
    return total + (now - start);
}

/* The event thread's wall time inside host calls during drains so far (any
 * thread, no GIL needed), the running call included: a monotonic clock read,
 * no syscall. If a call ends while this reads, it is left out (counted at
 * the next read), as in drain_cpu_ns. */
static long long
host_wait_ns(EventQueue *q)
{
    long long total = atomic_load(&q->host_ns);
    long long start = atomic_load(&q->host_start);
    if (start < 0)
        return total;
    long long now = monotonic_ns();
    if (atomic_load(&q->host_ns) != total || now < start)
        return total;
    return total + (now - start);
}

/* What the deliveries cost the event thread so far, in ns: its CPU inside
 * drains plus its wall time inside host calls while an emit waited for it
 * (c->host_ns, plus `waiting`: the running wait's part; a host call's own
 * CPU counts twice: host calls of cheap handlers take microseconds); -1:
 * unmeasurable. Only during waits: then the emitter has let the GIL go, so
 * the call's wall time is its own (blocked in I/O, a sleep, a lock). At any
 * other time it may be the convoy itself: a call that lets the GIL go for an
 * instant (a file write, a contended lock) waits there for a host thread
 * busy in Python, and counting that made cheap deliveries costly, declined
 * every late emit and left the event thread stuck in the call. */
static long long
drain_cost_ns(EventQueue *q, const PaceCost *c, long long young, long long waiting)
{
    long long cpu = drain_cpu_ns(q, c, young);
    return cpu < 0 ? -1 : cpu + c->host_ns + (waiting > 0 ? waiting : 0);
}

/* Whether the deliveries cost the event thread more than `cheap` ns each
 * (drain_cost_ns: CPU, plus wall time inside host calls), `fin` deliveries
 * having finished so far. Why CPU time: a delivery held up by the GIL (the
 * convoy) or by a machine too loaded to run the event thread spends wall
 * time but no CPU; one that is slow in itself spends CPU. Why host calls'
 * wall time too: a handler blocked in a host call (I/O, a sleep, a lock)
 * spends no CPU but is slow in itself, and waiting for it would hold the
 * host to its rate; only the part spent while an emit waits counts (with
 * the GIL let go: see drain_cost_ns), so the convoy's waits for the GIL are
 * not counted. The estimate is the event thread's cost over the deliveries
 * finished in a window that closes after PACE_SAMPLE deliveries or
 * PACE_SAMPLE x `cheap` of CPU, whichever comes first: an average, so one
 * late delivery (a collection, a page fault) does not stop pacing, and a
 * handler still running closes its window by its CPU alone (counted as one
 * delivery). Unmeasurable: cheap (the wait's no-progress give-up still
 * applies). */
static int
pace_costly(PaceCost *c, EventQueue *q, long long fin, long long cheap, long long waiting)
{
    long long cpu = drain_cost_ns(q, c, PACE_SAMPLE * cheap, waiting);
    if (cpu < 0)
        return 0;
    long long n = fin - c->fin_mark, used = cpu - c->cpu_mark;
    if (n >= PACE_SAMPLE || used >= PACE_SAMPLE * cheap) {
        c->cost_ns = used / (n > 1 ? n : 1);
        c->cpu_mark = cpu;
        c->fin_mark = fin;
    }
    return c->cost_ns > cheap;
}

static PyObject *
queue_pace(EventQueue *self, PyObject *unused)
{
    (void)unused;
    long long lag = self->lag_ns;
    if (lag <= 0)
        Py_RETURN_NONE;
    long long pushed = atomic_load(&self->pushed);
    long long fin = atomic_load(&self->finished);
    if (fin >= pushed || fin == self->gave_up_at)
        Py_RETURN_NONE;
    if (self->owner != 0 && PyThread_get_thread_ident() == self->owner)
        Py_RETURN_NONE;
    long long now = monotonic_ns();
    /* the oldest entry not yet delivered (entries end in queue order); one
     * older than the ring, or queued before pacing was on, counts as late */
    long long queued_at = pushed - fin > PACE_RING ? 0 : self->pushed_ns[fin & (PACE_RING - 1)];
    if (now - queued_at < lag)
        Py_RETURN_NONE;
    long long cheap = lag / PACE_CHEAP_DIV;
    if (pace_costly(&self->cost, self, fin, cheap, 0)) {
        self->declined++; /* waiting would hold the host to the handlers' rate */
        Py_RETURN_NONE;
    }
    int gave_up = 0;
    long long patience = lag * PACE_GIVE_UP;
    /* without the GIL the wait works on its own copy of the estimate (another
     * emitting thread may pace meanwhile), stored back once it has the GIL */
    PaceCost mine = self->cost;
    long long host0;
    Py_BEGIN_ALLOW_THREADS
    host0 = host_wait_ns(self); /* the event thread's host calls from here on count */
    pthread_mutex_lock(&self->mutex);
    atomic_fetch_add(&self->waiting, 1);
    long long last = atomic_load(&self->finished), slice_end = now + patience;
    while (last < pushed) {
        /* wake now and then to see whether the deliveries turned costly: a
         * handler still running closes the estimate's window only once it
         * used PACE_SAMPLE x `cheap` of CPU, so not more often than that */
        long long t0 = monotonic_ns() + PACE_SAMPLE * cheap;
        long long wake = t0 < slice_end ? t0 : slice_end;
        struct timespec until = {(time_t)(wake / 1000000000LL), (long)(wake % 1000000000LL)};
        pthread_cond_timedwait(&self->progress_cond, &self->mutex, &until);
        long long f = atomic_load(&self->finished), t = monotonic_ns();
        if (pace_costly(&mine, self, f, cheap, host_wait_ns(self) - host0)) {
            gave_up = 2;
            break;
        }
        if (f != last) {
            last = f;
            slice_end = t + patience;
        } else if (t >= slice_end) {
            gave_up = 1;
            break;
        }
    }
    atomic_fetch_sub(&self->waiting, 1);
    pthread_mutex_unlock(&self->mutex);
    long long seen = host_wait_ns(self) - host0;
    if (seen > 0)
        mine.host_ns += seen;
    Py_END_ALLOW_THREADS
    self->cost = mine;
    long long end = monotonic_ns();
    self->waits++;
    self->waited_ns += end - now;
    if (gave_up == 2) {
        self->gave_up++; /* the estimate keeps the next emits from waiting */
    } else if (gave_up) {
        self->gave_up++;
        self->gave_up_at = atomic_load(&self->finished);
    }
    Py_RETURN_NONE;
}

static PyObject *
queue_get_max_lag(EventQueue *self, void *closure)
{
    (void)closure;
    return PyFloat_FromDouble((double)self->lag_ns / 1e9);
}

static int
queue_set_max_lag(EventQueue *self, PyObject *value, void *closure)
{
    (void)closure;
    double seconds = value == NULL ? -1.0 : PyFloat_AsDouble(value);
    if (seconds == -1.0 && PyErr_Occurred())
        return -1;
    if (!(seconds >= 0.0 && seconds <= 3600.0)) {
        PyErr_SetString(PyExc_ValueError, "max_lag must be between 0 and 3600 seconds");
        return -1;
    }
    self->lag_ns = (long long)(seconds * 1e9);
    return 0;
}

static PyObject *
queue_get_max_size(EventQueue *self, void *closure)
{
    (void)closure;
    return PyLong_FromSsize_t(self->max_size);
}

static int
queue_set_max_size(EventQueue *self, PyObject *value, void *closure)
{
    (void)closure;
    Py_ssize_t n = value == NULL ? -1 : PyLong_AsSsize_t(value);
    if (n == -1 && PyErr_Occurred())
        return -1;
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "max_size must be >= 0 (0: no bound)");
        return -1;
    }
    self->max_size = n;
    return 0;
}

/* (pushes dropped at the bound, most entries ever queued at once) */
static PyObject *
queue_get_bound_counts(EventQueue *self, void *closure)
{
    (void)closure;
    pthread_mutex_lock(&self->mutex);
    Py_ssize_t peak = self->peak;
    pthread_mutex_unlock(&self->mutex);
    return Py_BuildValue("(Ln)", self->dropped, peak);
}

static PyObject *
queue_get_owner(EventQueue *self, void *closure)
{
    (void)closure;
    return PyLong_FromUnsignedLong(self->owner);
}

static int
queue_set_owner(EventQueue *self, PyObject *value, void *closure)
{
    (void)closure;
    unsigned long ident = value == NULL ? 0 : PyLong_AsUnsignedLong(value);
    if (ident == (unsigned long)-1 && PyErr_Occurred())
        return -1;
    self->owner = ident;
    /* its CPU clock (pace_costly): on POSIX threads the ident is the pthread_t */
    PaceCost *c = &self->cost;
    c->clock_ok = ident != 0 && pthread_getcpuclockid((pthread_t)ident, &c->clock) == 0;
    c->host_ns = 0;
    c->cpu_mark = drain_cost_ns(self, c, 0, 0);
    if (c->cpu_mark < 0)
        c->cpu_mark = 0;
    c->fin_mark = atomic_load(&self->finished);
    c->cost_ns = 0;
    return 0;
}

/* (waits, seconds waited, waits that gave up, entries queued and not yet
 * delivered, late emits declined, cost per delivery, seconds the event
 * thread spent in host calls during drains): read with the GIL held. */
static PyObject *
queue_pace_counts(EventQueue *self, PyObject *unused)
{
    (void)unused;
    long long outstanding = atomic_load(&self->pushed) - atomic_load(&self->finished);
    return Py_BuildValue("(LdLLLdd)", self->waits, (double)self->waited_ns / 1e9, self->gave_up,
                         outstanding, self->declined, (double)self->cost.cost_ns / 1e9,
                         (double)host_wait_ns(self) / 1e9);
}

/* host_enter() / host_leave(): around every call a script makes into Python
 * from the event engine (moonbus.lua.boundary.detached), GIL held. On the
 * event thread inside a drain, the outermost call's wall time is added to
 * the deliveries' cost (pace_costly): one monotonic clock read each. On any
 * other thread, or outside drains (a script loading), they do nothing. */
static PyObject *
queue_host_enter(EventQueue *self, PyObject *unused)
{
    (void)unused;
    if (self->drain_depth > 0 && PyThread_get_thread_ident() == self->owner &&
        self->host_depth++ == 0)
        atomic_store(&self->host_start, monotonic_ns());
    Py_RETURN_NONE;
}

static PyObject *
queue_host_leave(EventQueue *self, PyObject *unused)
{
    (void)unused;
    if (self->host_depth > 0 && PyThread_get_thread_ident() == self->owner &&
        --self->host_depth == 0) {
        long long start = atomic_load(&self->host_start), end = monotonic_ns();
        /* the start goes first: a reader in between undercounts, never twice */
        atomic_store(&self->host_start, -1);
        if (start >= 0 && end > start)
            atomic_fetch_add(&self->host_ns, end - start);
    }
    Py_RETURN_NONE;
}


/* head_seq(): the seq of the oldest queued event (item 2 of the Event
 * tuple), or None when the queue is empty. Every event before it has been
 * delivered to all its deferred handlers (the queue is in seq order), which
 * is what lets the bus forget those events' cascade links. */
static PyObject *
queue_head_seq(EventQueue *self, PyObject *unused)
{
    (void)unused;
    PyObject *seq = NULL;
    pthread_mutex_lock(&self->mutex);
    if (self->size > 0) {
        PyObject *event = self->ring[self->head].event;
        if (PyTuple_Check(event) && PyTuple_GET_SIZE(event) > 2)
            seq = Py_NewRef(PyTuple_GET_ITEM(event, 2));
    }
    pthread_mutex_unlock(&self->mutex);
    return seq != NULL ? seq : Py_NewRef(Py_None);
}

static PyMethodDef queue_methods[] = {
    {"head_seq", (PyCFunction)queue_head_seq, METH_NOARGS,
     "head_seq(): the seq of the oldest queued event, or None when empty."},
    {"push", (PyCFunction)(void (*)(void))queue_push_method, METH_FASTCALL,
     "push(target, sub_id, event): queue one delivery."},
    {"handler", (PyCFunction)(void (*)(void))queue_handler, METH_FASTCALL,
     "handler(target, sub_id): the bus handler that queues each event for it."},
    {"drain", (PyCFunction)queue_drain, METH_O,
     "drain(max): deliver up to max queued entries in order; returns how many."},
    {"pace", (PyCFunction)queue_pace, METH_NOARGS,
     "pace(): after an emit, wait (GIL released) while the event thread is held up."},
    {"pace_counts", (PyCFunction)queue_pace_counts, METH_NOARGS,
     "pace_counts(): (waits, seconds waited, waits given up, entries not yet delivered, "
     "late emits not paced, event-thread cost in seconds per delivery, "
     "seconds in host calls)."},
    {"host_enter", (PyCFunction)queue_host_enter, METH_NOARGS,
     "host_enter(): a script's call into Python begins (event thread: timed as delivery cost)."},
    {"host_leave", (PyCFunction)queue_host_leave, METH_NOARGS,
     "host_leave(): that call returned or raised."},
    {NULL, NULL, 0, NULL},
};

static PyObject *
queue_get_stretched(EventQueue *self, void *closure)
{
    (void)closure;
    return PyLong_FromLongLong(atomic_load(&self->stretched));
}

static PyObject *
queue_get_paused(EventQueue *self, void *closure)
{
    (void)closure;
    return PyLong_FromLongLong(atomic_load(&self->paused));
}

static PyGetSetDef queue_getset[] = {
    {"stretched", (getter)queue_get_stretched, NULL,
     "entries an engine call took from the queue without the GIL, ever", NULL},
    {"paused", (getter)queue_get_paused, NULL,
     "times a stretch paused for a dense stream to queue more, ever", NULL},
    {"max_lag", (getter)queue_get_max_lag, (setter)queue_set_max_lag,
     "seconds the event thread may finish nothing before an emit waits (0: never)", NULL},
    {"max_size", (getter)queue_get_max_size, (setter)queue_set_max_size,
     "entries the queue holds at most; a push beyond is dropped and counted (0: no bound)",
     NULL},
    {"bound_counts", (getter)queue_get_bound_counts, NULL,
     "(pushes dropped at max_size, most entries ever queued at once)", NULL},
    {"owner", (getter)queue_get_owner, (setter)queue_set_owner,
     "the event thread's ident: pace() never waits on it", NULL},
    {"sleeping", (getter)queue_get_sleeping, (setter)queue_set_sleeping,
     "set by the event thread before it waits; the next push calls notify()", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods queue_as_sequence = {.sq_length = (lenfunc)queue_length};

static PyTypeObject EventQueueType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "moonbus.lua._fastcall.EventQueue",
    .tp_basicsize = sizeof(EventQueue),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Deferred delivery's queue (see the module source).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)queue_init,
    .tp_dealloc = (destructor)queue_dealloc,
    .tp_traverse = (traverseproc)queue_traverse,
    .tp_clear = (inquiry)queue_clear,
    .tp_methods = queue_methods,
    .tp_getset = queue_getset,
    .tp_as_sequence = &queue_as_sequence,
};

/* What the bus calls for one subscription: enqueuer(event). */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    EventQueue *queue;
    PyObject *target, *sub_id;
} Enqueuer;

static PyObject *
enqueuer_vectorcall(Enqueuer *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "enqueuer(event) takes 1 argument");
        return NULL;
    }
    if (queue_push(self->queue, self->target, self->sub_id, args[0]) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static int
enqueuer_traverse(Enqueuer *self, visitproc visit, void *arg)
{
    Py_VISIT(self->queue);
    Py_VISIT(self->target);
    Py_VISIT(self->sub_id);
    return 0;
}

static int
enqueuer_clear(Enqueuer *self)
{
    Py_CLEAR(self->queue);
    Py_CLEAR(self->target);
    Py_CLEAR(self->sub_id);
    return 0;
}

static void
enqueuer_dealloc(Enqueuer *self)
{
    PyObject_GC_UnTrack(self);
    enqueuer_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject EnqueuerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "moonbus.lua._fastcall.Enqueuer",
    .tp_basicsize = sizeof(Enqueuer),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "The bus handler of one deferred subscription.",
    .tp_dealloc = (destructor)enqueuer_dealloc,
    .tp_traverse = (traverseproc)enqueuer_traverse,
    .tp_clear = (inquiry)enqueuer_clear,
    .tp_vectorcall_offset = offsetof(Enqueuer, vectorcall),
    .tp_call = PyVectorcall_Call,
};

static PyObject *
queue_handler(EventQueue *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "handler(target, sub_id)");
        return NULL;
    }
    Enqueuer *e = PyObject_GC_New(Enqueuer, &EnqueuerType);
    if (e == NULL)
        return NULL;
    e->vectorcall = (vectorcallfunc)enqueuer_vectorcall;
    e->queue = (EventQueue *)Py_NewRef((PyObject *)self);
    e->target = Py_NewRef(args[0]);
    e->sub_id = Py_NewRef(args[1]);
    PyObject_GC_Track(e);
    return (PyObject *)e;
}

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
    PyObject *path = NULL;
    PyObject *lupa = import_lupa(&path);
    if (lupa == NULL)
        return NULL;
    Py_DECREF(lupa);
    int loaded = load_deliver_api(PyUnicode_AsUTF8(path)); /* import_lupa read it */
    Py_DECREF(path);
    if (loaded < 0)
        return NULL;
    PyObject *fastemit = PyImport_ImportModule("moonbus.bus._fastemit");
    if (fastemit == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_ImportError))
            return NULL;
        PyErr_Clear();
    } else {
        /* a static type, alive for the process like the module holding it */
        frozen_type = (PyTypeObject *)PyObject_GetAttrString(fastemit, "FrozenData");
        Py_DECREF(fastemit);
        if (frozen_type == NULL)
            return NULL;
    }
    s_idle = PyUnicode_InternFromString("idle");
    s_wake = PyUnicode_InternFromString("wake");
    s_unknown = PyUnicode_InternFromString("unknown error");
    s_handler_timeout = PyUnicode_InternFromString("handler_timeout");
    num_zero = PyLong_FromLong(0);
    num_one = PyLong_FromLong(1);
    if (!s_idle || !s_wake || !s_unknown || !s_handler_timeout || !num_zero || !num_one)
        return NULL;
    if (PyType_Ready(&DeliveryType) < 0 || PyType_Ready(&WatchSlotType) < 0 ||
        PyType_Ready(&EventQueueType) < 0 || PyType_Ready(&EnqueuerType) < 0 ||
        PyType_Ready(&HandlerBudgetType) < 0 || PyType_Ready(&DeliveryCountsType) < 0 ||
        PyType_Ready(&CallStateType) < 0 || PyType_Ready(&EngineLockType) < 0 ||
        PyType_Ready(&BoundDeliveryType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&fastcall_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Delivery", (PyObject *)&DeliveryType) < 0 ||
        PyModule_AddObjectRef(m, "WatchSlot", (PyObject *)&WatchSlotType) < 0 ||
        PyModule_AddObjectRef(m, "EventQueue", (PyObject *)&EventQueueType) < 0 ||
        PyModule_AddObjectRef(m, "HandlerBudget", (PyObject *)&HandlerBudgetType) < 0 ||
        PyModule_AddObjectRef(m, "DeliveryCounts", (PyObject *)&DeliveryCountsType) < 0 ||
        PyModule_AddObjectRef(m, "CallState", (PyObject *)&CallStateType) < 0 ||
        PyModule_AddObjectRef(m, "EngineLock", (PyObject *)&EngineLockType) < 0 ||
        PyModule_AddIntConstant(m, "LUA_REGISTRYINDEX", LUA_REGISTRYINDEX) < 0 ||
        PyModule_AddStringConstant(m, "LUA_MODULE", LUPA_MODULE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
