/* The Lua 5.4 C API as moonbus's C fast paths reach it: lupa.lua54's own
 * copy of Lua, found in lupa's already-loaded extension module (dlopen
 * RTLD_NOLOAD + dlsym), never a second Lua linked in. Shared by
 * _fastcall.c and _fastconvert.c so that both resolve the same functions
 * the same way; each includes it once (the table and the loader are static
 * to that extension) and calls load_api() when it is imported.
 *
 * Constants. lua.h's values are of two kinds. Those fixed by the Lua 5.4
 * ABI (status codes, type tags, LUA_MULTRET, the registry's predefined
 * slots) are the same for every build of 5.4, so they are written here and
 * the loader checks that lupa's Lua is 5.4 (lua_version() == 504, asked of
 * the real library). LUA_REGISTRYINDEX is not: lua.h defines it as
 * -LUAI_MAXSTACK - 1000, and LUAI_MAXSTACK is a luaconf.h setting of
 * whoever built lupa (lupa ships no headers to read it from). So it is
 * probed at import, in a private state made for the purpose (never one of
 * lupa's): lua_absindex() returns a pseudo-index unchanged and turns any
 * other negative index into a stack position, so the registry index is the
 * largest negative index that lua_absindex() leaves alone (a binary search
 * over int). The result is then checked by what the registry must hold
 * (the main thread at LUA_RIDX_MAINTHREAD, the globals table at
 * LUA_RIDX_GLOBALS); if any check fails the import fails with an
 * ImportError that says which, and moonbus.native keeps the Python path.
 *
 * Threads: `lua` and `lua_registry_index` are filled once at import, under
 * the GIL, and only read afterwards (constants, like a linker's). */
#ifndef MOONBUS_LUAAPI_H
#define MOONBUS_LUAAPI_H

#include <dlfcn.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>

typedef struct lua_State lua_State;
typedef long long lua_Integer;
typedef double lua_Number;
typedef intptr_t lua_KContext;
typedef int (*lua_CFunction)(lua_State *L);
typedef int (*lua_KFunction)(lua_State *L, int status, lua_KContext ctx);
typedef void *(*lua_Alloc)(void *ud, void *ptr, size_t osize, size_t nsize);

#define LUA_VERSION_NUM 504 /* checked against lupa's Lua by probe_constants */
#define LUA_OK 0
#define LUA_ERRMEM 4
#define LUA_TNIL 0
#define LUA_TBOOLEAN 1
#define LUA_TNUMBER 3
#define LUA_TSTRING 4
#define LUA_TTABLE 5
#define LUA_TFUNCTION 6
#define LUA_TUSERDATA 7
#define LUA_TTHREAD 8
#define LUA_MULTRET (-1)
#define LUA_RIDX_MAINTHREAD 1
#define LUA_RIDX_GLOBALS 2

/* lupa's Lua's LUA_REGISTRYINDEX, probed when the extension is imported */
static int lua_registry_index;
#define LUA_REGISTRYINDEX (lua_registry_index)

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
    int (*checkstack)(lua_State *, int);
    void (*pushvalue)(lua_State *, int);
    void (*rawseti)(lua_State *, int, lua_Integer);
    int (*error)(lua_State *);
    void (*copy)(lua_State *, int, int);
    int (*isinteger)(lua_State *, int);
    int (*rawget)(lua_State *, int);
    lua_Number (*tonumberx)(lua_State *, int, int *);
    void (*rotate)(lua_State *, int, int);
    lua_Alloc (*getallocf)(lua_State *, void **);
    void (*setallocf)(lua_State *, lua_Alloc, void *);
    /* used once, by probe_constants */
    int (*absindex)(lua_State *, int);
    lua_Number (*version)(lua_State *);
    lua_State *(*newstate)(void);
    void (*close)(lua_State *);
    int (*pushthread)(lua_State *);
    int (*rawequal)(lua_State *, int, int);
    const char *(*getupvalue)(lua_State *, int, int);
    lua_CFunction (*tocfunction)(lua_State *, int);
    const void *(*topointer)(lua_State *, int);
    void *(*newuserdatauv)(lua_State *, size_t, int);
} LuaApi;

static LuaApi lua;

/* The largest negative index lua_absindex leaves unchanged: the registry's
 * pseudo-index (see above); 0 when there is none. */
static int
search_registry_index(lua_State *L)
{
    int lo = -INT_MAX; /* assumed a pseudo-index, checked first */
    int hi = -1;       /* never one: it is the stack top */
    if (lua.absindex(L, lo) != lo || lua.absindex(L, hi) == hi)
        return 0;
    while (hi - lo > 1) {
        int mid = lo + (hi - lo) / 2;
        if (lua.absindex(L, mid) == mid)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* Probes LUA_REGISTRYINDEX and checks the version (see above): 0, or -1
 * with ImportError set saying which check failed. */
static int
probe_constants(void)
{
    lua_State *L = lua.newstate();
    if (L == NULL) {
        PyErr_SetString(PyExc_ImportError, "could not make a Lua state to probe lupa's Lua");
        return -1;
    }
    const char *failed = NULL;
    int version = (int)lua.version(L);
    int index = search_registry_index(L);
    if (version != LUA_VERSION_NUM) {
        failed = "lua_version() is not 504: moonbus's C paths need Lua 5.4";
    } else if (index == 0 || !lua.checkstack(L, 4)) {
        failed = "no pseudo-index found with lua_absindex()";
    } else {
        lua.pushvalue(L, index);
        int registry = lua.type(L, -1);
        int main = lua.rawgeti(L, index, LUA_RIDX_MAINTHREAD);
        lua.pushthread(L);
        int same = lua.rawequal(L, -1, -2);
        int globals = lua.rawgeti(L, index, LUA_RIDX_GLOBALS);
        if (registry != LUA_TTABLE || main != LUA_TTHREAD || !same || globals != LUA_TTABLE)
            failed = "the probed index does not hold Lua's registry";
    }
    lua.close(L);
    if (failed != NULL) {
        PyErr_Format(PyExc_ImportError, "probing lupa's Lua constants failed: %s "
                     "(LUA_REGISTRYINDEX candidate %d, lua_version %d)", failed, index, version);
        return -1;
    }
    lua_registry_index = index;
    return 0;
}

/* Fill `lua` from lupa's module at `path` and probe the constants; -1 with
 * ImportError set when the module is not loaded, lacks a function, or the
 * probe fails. */
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
    SYM(checkstack, "lua_checkstack");
    SYM(pushvalue, "lua_pushvalue");
    SYM(rawseti, "lua_rawseti");
    SYM(error, "lua_error");
    SYM(copy, "lua_copy");
    SYM(isinteger, "lua_isinteger");
    SYM(rawget, "lua_rawget");
    SYM(tonumberx, "lua_tonumberx");
    SYM(rotate, "lua_rotate");
    SYM(getallocf, "lua_getallocf");
    SYM(setallocf, "lua_setallocf");
    SYM(absindex, "lua_absindex");
    SYM(version, "lua_version");
    SYM(newstate, "luaL_newstate");
    SYM(close, "lua_close");
    SYM(pushthread, "lua_pushthread");
    SYM(rawequal, "lua_rawequal");
    SYM(getupvalue, "lua_getupvalue");
    SYM(tocfunction, "lua_tocfunction");
    SYM(topointer, "lua_topointer");
    SYM(newuserdatauv, "lua_newuserdatauv");
#undef SYM
    /* lupa's module stays loaded for the life of the process (CPython never
     * unloads extension modules); this drops only our extra handle. */
    dlclose(lib);
    return probe_constants();
}

/* The lupa module every C fast path is built against (its LUA_MODULE). */
#define LUPA_MODULE "lupa.lua54"

/* What each C fast path's init does first: import LUPA_MODULE and fill `lua`
 * from its extension (load_api). Returns a new reference to the module (for
 * what else the caller reads from it), or NULL with an exception set.
 * `path`: when not NULL, gets the module's file (a new reference). */
static PyObject *
import_lupa(PyObject **path)
{
    PyObject *lupa = PyImport_ImportModule(LUPA_MODULE);
    if (lupa == NULL)
        return NULL;
    PyObject *file = PyObject_GetAttrString(lupa, "__file__");
    const char *cpath = file == NULL ? NULL : PyUnicode_AsUTF8(file);
    if (cpath == NULL || load_api(cpath) < 0) {
        Py_XDECREF(file);
        Py_DECREF(lupa);
        return NULL;
    }
    if (path != NULL)
        *path = file;
    else
        Py_DECREF(file);
    return lupa;
}

#endif /* MOONBUS_LUAAPI_H */
