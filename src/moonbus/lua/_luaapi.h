/* The Lua 5.4 C API as moonbus's C fast paths reach it: lupa.lua54's own
 * copy of Lua, found in lupa's already-loaded extension module (dlopen
 * RTLD_NOLOAD + dlsym), never a second Lua linked in. Shared by
 * _fastcall.c and _fastconvert.c so that both resolve the same functions
 * the same way; each includes it once (the table and the loader are static
 * to that extension) and calls load_api() when it is imported.
 *
 * Threads: `lua` is filled once at import, under the GIL, and only read
 * afterwards (a constant table, like a linker's). */
#ifndef MOONBUS_LUAAPI_H
#define MOONBUS_LUAAPI_H

#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>

typedef struct lua_State lua_State;
typedef long long lua_Integer;
typedef double lua_Number;
typedef intptr_t lua_KContext;
typedef int (*lua_CFunction)(lua_State *L);
typedef int (*lua_KFunction)(lua_State *L, int status, lua_KContext ctx);

#define LUA_OK 0
#define LUA_ERRMEM 4
#define LUA_REGISTRYINDEX (-1000000 - 1000) /* Lua 5.4: -LUAI_MAXSTACK - 1000 */

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
} LuaApi;

static LuaApi lua;

/* Fill `lua` from lupa's module at `path`; -1 with ImportError set when the
 * module is not loaded or lacks a function. */
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
#undef SYM
    /* lupa's module stays loaded for the life of the process (CPython never
     * unloads extension modules); this drops only our extra handle. */
    dlclose(lib);
    return 0;
}

#endif /* MOONBUS_LUAAPI_H */
