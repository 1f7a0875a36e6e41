/*
 * moonbus.lua._arena: each script state's small Lua objects in chunks of its
 * own, carved from one reservation backed by huge pages.
 *
 * Why (issue 16): a tick that reaches 10,000 handler scripts touches every
 * state's objects once, all of them out of cache. Through lupa's allocator
 * (glibc's malloc) each state's tables, closures and strings lie scattered
 * in 4 KiB pages among every other state's, so a delivery pays a TLB miss,
 * a page walk and a cache miss per object it reads. Here a state's blocks
 * come from its own 4 KiB chunks (its objects sit together, a delivery
 * touches a few pages), the chunks come from a reservation that asks the
 * kernel for 2 MiB pages (madvise MADV_HUGEPAGE: one TLB entry covers 512
 * chunks), and a block is taken from and given back to a per-state free
 * list with no lock and no header (Lua passes every block's size back).
 * Measured (10,000 handler scripts, interleaved runs): a tick 10-20 %
 * shorter, and ~70 MiB less RSS than glibc's malloc.
 *
 *   ArenaSource(reserve_bytes, state_bytes)   one per SandboxFactory
 *     .install(lua_State address) -> bool     the state's allocator from now on
 *     .statistics() -> dict                   the counters (docs/limits.md)
 *   ALLOC_API (capsule)                       for _fastconvert.c: lupa's
 *                                             MemoryStatus behind an arena
 *
 * What a block is. Lua calls the allocator with (ptr, osize, nsize) and,
 * for a block it allocated, always passes its true size as osize. A new
 * block of at most SMALL_MAX bytes is taken from the state's arena: its free
 * list for that size class (16-byte classes), else the smallest larger free
 * block, split, else the end of its current chunk, else a new chunk from
 * the source (while the state holds fewer than `state_bytes` of chunks and
 * the reservation lasts). Splitting matters for memory: loading a script
 * frees about a quarter of what it allocated, in every size, and without
 * it those holes (~25 KiB a state) served only their own size; glibc lets
 * the next state fill them, an arena only its own state can. Anything else (a larger
 * block, a block the arena cannot serve, and every block made before the
 * arena was installed) goes to lupa's own allocator, unchanged: which of the
 * two owns a block is told by its address (inside the reservation or not).
 * A freed arena block goes on its class's free list and is never handed to
 * another state; the chunks go back to the source when the state closes
 * (the free of the block that holds the lua_State, Lua's very last call).
 *
 * Memory limits stay lupa's: the arena keeps the same account lupa's
 * allocator keeps (its MemoryStatus: used, and the limit lupa's
 * set_max_memory writes), with the same rule (a block that grows refuses
 * when limit <= used + growth), so LuaRuntime.get_memory_used and every
 * memory cap read the same numbers whichever allocator served a block. A
 * state made without a limit (luaL_newstate) has no account to keep.
 *
 * Threads: a state's allocator runs on whichever thread runs the state, one
 * at a time (moonbus never lets two threads touch a Lua state), so an Arena
 * has no lock. The Source is shared by all the states of a factory, and has
 * no lock either: its bump offset and its stack of spare chunks are atomics
 * (compare-and-swap, once per 4 KiB), so that a fork while another thread
 * takes or gives chunks leaves the child a source it can use (a mutex held
 * by a thread that the child does not have stays locked there for ever). The Source lives while its Python object or any
 * arena holds it (an atomic count), so a factory closed before its states
 * are collected leaves them working.
 *
 * Not kept: a chunk given back is reused by the next state, never returned
 * to the kernel (RSS does not shrink when scripts unload; the counters show
 * it). A fork copies the reservation with the rest of the heap.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "_luaapi.h"

#define GRAIN 16
/* Blocks of up to 2 KiB: a script's global table (about 40 names: a node
 * array of 64 x 24 bytes) is read by every delivery, and at 1 KiB it stayed
 * in lupa's 4 KiB pages (10,000 handler scripts: a tick ~6 % longer). */
#ifndef CLASSES
#define CLASSES 128
#endif
#define SMALL_MAX (GRAIN * CLASSES) /* 2048 bytes */
#ifndef CHUNK_SIZE
#define CHUNK_SIZE (4 * 1024)
#endif
#define WORDS (CLASSES / 64)
#define HUGE_PAGE (2 * 1024 * 1024)

/* lupa.lua54's MemoryStatus (lupa 2.8's _lupa.pyx; the pinned lupa<2.9 keeps
 * it): what its _lua_alloc_restricted keeps and its set_max_memory sets. */
typedef struct {
    size_t used;
    size_t base_usage;
    size_t limit;
} LupaMemory;

typedef struct Source {
    _Atomic long refs;               /* the Python object (1) + one per arena */
    char *base;                      /* HUGE_PAGE-aligned, `size` bytes */
    size_t size;
    _Atomic size_t bump;             /* offset of the next fresh chunk */
    _Atomic uint64_t spare;          /* chunks given back: SPARE_HEAD */
    size_t state_chunks;             /* how many chunks one state may hold */
    void *mapping;                   /* what mmap returned (base is aligned up) */
    size_t mapping_size;
    _Atomic long long chunks_used;   /* held by a live state */
    _Atomic long long chunks_spare;  /* given back, waiting for reuse */
    _Atomic long long arenas;        /* states with an arena now */
    _Atomic long long installed;     /* states ever given one */
    _Atomic long long passed_on;     /* small blocks lupa's allocator made instead */
} Source;

typedef struct Arena {
    lua_Alloc inner;     /* lupa's allocator and its ud, for every other block */
    void *inner_ud;
    LupaMemory *account; /* inner_ud when the state has a limit, else NULL */
    Source *source;
    const char *main;    /* the lua_State: the block holding it is freed last */
    char *top, *end;     /* the unused end of the current chunk */
    void *chunks;        /* this state's chunks, linked by their first word */
    size_t nchunks;
    void *free[CLASSES]; /* freed blocks by size class, linked by their first word */
    uint64_t nonempty[WORDS]; /* bit c: free[c] is not empty */
    size_t free_bytes;   /* on the free lists */
    size_t empty_chunks; /* chunks whose every block is on the free lists */
} Arena;

/* A chunk's first grain: its link, then the bytes of it on the free lists. */
#define CHUNK_OF(p) ((char *)((uintptr_t)(p) & ~(uintptr_t)(CHUNK_SIZE - 1)))
#define CHUNK_FREE(chunk) (((size_t *)(chunk))[1])
#define CHUNK_ROOM (CHUNK_SIZE - GRAIN)

/* A reclaim pass runs once a state has this much in wholly free chunks, and
 * at least an eighth of its free bytes (see reclaim). */
#define RECLAIM_STEP (64 * 1024)

static inline size_t
class_of(size_t size)
{
    return (size - 1) / GRAIN; /* 1..16 -> 0, 17..32 -> 1, ... */
}

static inline int
in_source(const Source *s, const void *p)
{
    return (uintptr_t)p - (uintptr_t)s->base < s->size;
}

static void
source_release(Source *s)
{
    if (atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    munmap(s->mapping, s->mapping_size);
    free(s);
}

/* The spare stack's head (Source.spare): the top chunk's number + 1 (its
 * offset from base over CHUNK_SIZE; 0: the stack is empty) in the low
 * SPARE_BITS bits, and a count of changes above them, so that a pop's
 * compare-and-swap fails when the head it read was popped and pushed back
 * meanwhile with another chunk under it (ABA). Chunks are linked by their
 * first word, a pointer. */
#define SPARE_BITS 35 /* chunk numbers + 1 up to 2**34 (64 TiB of 4 KiB): 29 bits of count */
#define SPARE_MASK ((UINT64_C(1) << SPARE_BITS) - 1)
#define SPARE_NEXT_TAG(head) (((head) & ~SPARE_MASK) + (UINT64_C(1) << SPARE_BITS))
_Static_assert((UINT64_C(1) << 46) / CHUNK_SIZE < SPARE_MASK,
               "a chunk number of the largest reservation must fit in SPARE_BITS");

static inline char *
spare_chunk(const Source *s, uint64_t head)
{
    uint64_t number = head & SPARE_MASK;
    return number == 0 ? NULL : s->base + (size_t)(number - 1) * CHUNK_SIZE;
}

/* A chunk for a state: a spare one, else a fresh one; NULL when the
 * reservation is used up. Lock-free (see Threads above). */
static char *
source_take(Source *s)
{
    uint64_t head = atomic_load(&s->spare);
    char *chunk;
    while ((chunk = spare_chunk(s, head)) != NULL) {
        /* the link may be rewritten meanwhile by the state that popped the
         * chunk (it is always mapped: the reservation): then the head
         * changed too, and the swap fails */
        char *next = __atomic_load_n((char **)chunk, __ATOMIC_RELAXED);
        uint64_t number = next == NULL ? 0 : (uint64_t)((next - s->base) / CHUNK_SIZE) + 1;
        if (atomic_compare_exchange_weak(&s->spare, &head, SPARE_NEXT_TAG(head) | number)) {
            atomic_fetch_sub(&s->chunks_spare, 1);
            atomic_fetch_add(&s->chunks_used, 1);
            return chunk;
        }
    }
    size_t bump = atomic_load(&s->bump);
    do {
        if (bump + CHUNK_SIZE > s->size)
            return NULL;
    } while (!atomic_compare_exchange_weak(&s->bump, &bump, bump + CHUNK_SIZE));
    atomic_fetch_add(&s->chunks_used, 1);
    return s->base + bump;
}

/* Gives back a list of `n` chunks linked by their first word (lock-free). */
static void
source_give(Source *s, void *first, size_t n)
{
    if (first == NULL)
        return;
    void *last = first;
    while (*(void **)last != NULL)
        last = *(void **)last;
    uint64_t number = (uint64_t)(((char *)first - s->base) / CHUNK_SIZE) + 1;
    /* counted first: a taker may pop these before the swap below returns */
    atomic_fetch_sub(&s->chunks_used, (long long)n);
    atomic_fetch_add(&s->chunks_spare, (long long)n);
    uint64_t head = atomic_load(&s->spare);
    do {
        __atomic_store_n((char **)last, spare_chunk(s, head), __ATOMIC_RELAXED);
    } while (!atomic_compare_exchange_weak(&s->spare, &head, SPARE_NEXT_TAG(head) | number));
}

/* lupa's rule for a block growing from `osize` to `nsize` bytes. */
static inline int
admits(const Arena *a, size_t osize, size_t nsize)
{
    const LupaMemory *m = a->account;
    return m == NULL || m->limit == 0 || nsize <= osize || m->limit > m->used + nsize - osize;
}

static inline void
account(Arena *a, size_t osize, size_t nsize)
{
    if (a->account != NULL)
        a->account->used += nsize - osize; /* wraps back for a shrink, as lupa's */
}

static inline void
push_free(Arena *a, void *p, size_t c)
{
    *(void **)p = a->free[c];
    a->free[c] = p;
    a->nonempty[c / 64] |= 1ULL << (c % 64);
    a->free_bytes += (c + 1) * GRAIN;
    char *chunk = CHUNK_OF(p);
    if ((CHUNK_FREE(chunk) += (c + 1) * GRAIN) == CHUNK_ROOM)
        a->empty_chunks++;
}

static inline void *
pop_free(Arena *a, size_t c)
{
    void *p = a->free[c];
    a->free[c] = *(void **)p;
    if (a->free[c] == NULL)
        a->nonempty[c / 64] &= ~(1ULL << (c % 64));
    a->free_bytes -= (c + 1) * GRAIN;
    char *chunk = CHUNK_OF(p);
    if (CHUNK_FREE(chunk) == CHUNK_ROOM)
        a->empty_chunks--;
    CHUNK_FREE(chunk) -= (c + 1) * GRAIN;
    return p;
}

/* A block of class `c` from the arena, or NULL (no room in its share):
 * its free list; else the smallest larger free block, split (the rest goes
 * on its own list); else the current chunk's end; else a new chunk (the old
 * chunk's rest goes on a free list). */
static void *
take(Arena *a, size_t c)
{
    if (a->free[c] != NULL)
        return pop_free(a, c);
    size_t size = (c + 1) * GRAIN;
    size_t big = CLASSES;
    for (size_t w = (c + 1) / 64, from = (c + 1) % 64; w < WORDS && c + 1 < CLASSES; w++, from = 0) {
        uint64_t larger = a->nonempty[w] & (~0ULL << from);
        if (larger != 0) {
            big = w * 64 + (size_t)__builtin_ctzll(larger);
            break;
        }
    }
    if (big < CLASSES) {
        char *p = pop_free(a, big);
        push_free(a, p + size, big - c - 1); /* the rest: (big - c) grains */
        return p;
    }
    if ((size_t)(a->end - a->top) < size) {
        if (a->nchunks >= a->source->state_chunks)
            return NULL;
        char *chunk = source_take(a->source);
        if (chunk == NULL)
            return NULL;
        if (a->end > a->top)
            push_free(a, a->top, class_of((size_t)(a->end - a->top)));
        *(void **)chunk = a->chunks;
        CHUNK_FREE(chunk) = 0;
        a->chunks = chunk;
        a->nchunks++;
        a->top = chunk + GRAIN; /* the first grain holds the chunk link */
        a->end = chunk + CHUNK_SIZE;
    }
    char *p = a->top;
    a->top += size;
    return p;
}

/*
 * Gives back to the source every chunk of the state, but the current one,
 * whose blocks are all on the free lists. Why: a state's free lists keep
 * what it once held (blocks are never merged), so without this a script
 * that built 1 MiB of small tables once would pin 1 MiB for its life (the
 * review of the arena: 300 such states, +307 MiB RSS, +32 MiB with lupa's
 * allocator, whose free memory any state reuses). Each chunk's first grain
 * counts its bytes on the free lists (every byte of a chunk but its first
 * grain is live or on a list: the rest of an abandoned chunk is put on a
 * list), so a wholly free chunk is known as it happens (empty_chunks). A
 * pass walks every free block to drop those of wholly free chunks, so it
 * runs once the wholly free chunks hold RECLAIM_STEP and an eighth of the
 * free bytes: what it walks is paid for by what it gives back (a step fixed
 * on free_bytes alone let a state with 16 MiB of fragmented holes walk them
 * all for every 64 KiB it churned: 130 times slower than lupa's allocator).
 */
static void
reclaim(Arena *a)
{
    char *current = a->end == NULL ? NULL : a->end - CHUNK_SIZE;
    size_t keep = current != NULL && CHUNK_FREE(current) == CHUNK_ROOM;
    if (a->empty_chunks <= keep)
        return;
    for (size_t c = 0; c < CLASSES; c++) {
        void **link = &a->free[c];
        while (*link != NULL) {
            void *p = *link;
            char *chunk = CHUNK_OF(p);
            if (CHUNK_FREE(chunk) == CHUNK_ROOM && chunk != current) {
                *link = *(void **)p;
                a->free_bytes -= (c + 1) * GRAIN;
            } else {
                link = (void **)p;
            }
        }
        if (a->free[c] == NULL)
            a->nonempty[c / 64] &= ~(1ULL << (c % 64));
    }
    void *back = NULL;
    size_t empty = 0;
    void **link = &a->chunks;
    while (*link != NULL) {
        char *chunk = *link;
        if (CHUNK_FREE(chunk) == CHUNK_ROOM && chunk != current) {
            *link = *(void **)chunk;
            *(void **)chunk = back;
            back = chunk;
            empty++;
        } else {
            link = (void **)chunk;
        }
    }
    a->nchunks -= empty;
    a->empty_chunks = keep;
    source_give(a->source, back, empty);
}

static inline void
give(Arena *a, void *p, size_t osize)
{
    push_free(a, p, class_of(osize));
    size_t empty = a->empty_chunks * CHUNK_SIZE;
    if (empty >= RECLAIM_STEP && empty >= a->free_bytes / 8)
        reclaim(a);
}

/* The state is gone (its last block was freed): chunks back to the source. */
static void
arena_close(Arena *a)
{
    Source *s = a->source;
    source_give(s, a->chunks, a->nchunks);
    atomic_fetch_sub(&s->arenas, 1);
    free(a);
    source_release(s);
}

/* The state's lua_Alloc (see the top of the file). */
static void *
arena_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    Arena *a = (Arena *)ud;
    if (ptr == NULL || !in_source(a->source, ptr)) {
        if (ptr == NULL && nsize > 0 && nsize <= SMALL_MAX) {
            if (!admits(a, 0, nsize))
                return NULL;
            void *p = take(a, class_of(nsize));
            if (p != NULL) {
                account(a, 0, nsize);
                return p;
            }
            atomic_fetch_add(&a->source->passed_on, 1);
        }
        /* lupa's block (or lupa's allocator makes it) */
        int closing = nsize == 0 && ptr != NULL && (const char *)ptr <= a->main &&
                      a->main < (const char *)ptr + osize;
        void *r = a->inner(a->inner_ud, ptr, osize, nsize);
        if (closing)
            arena_close(a);
        return r;
    }
    /* an arena block of `osize` bytes */
    if (nsize == 0) {
        give(a, ptr, osize);
        account(a, osize, 0);
        return NULL;
    }
    if (nsize == osize)
        return ptr;
    if (!admits(a, osize, nsize))
        return NULL;
    if (nsize <= SMALL_MAX && class_of(nsize) == class_of(osize)) {
        account(a, osize, nsize); /* fits where it is */
        return ptr;
    }
    void *q = nsize <= SMALL_MAX ? take(a, class_of(nsize)) : NULL;
    if (q != NULL) {
        account(a, osize, nsize);
    } else if (nsize < osize) {
        /* a shrink that found no smaller block keeps its block: freed later
         * under its new size, it goes to a smaller class than it has (a few
         * bytes lost, never overlapping) */
        account(a, osize, nsize);
        return ptr;
    } else {
        /* to lupa's allocator, accounted as one growth (lupa's rule for a
         * realloc, not for a new block of nsize beside the old one) */
        if (a->account != NULL)
            a->account->used -= osize;
        q = a->inner(a->inner_ud, NULL, 0, nsize);
        if (q == NULL) {
            if (a->account != NULL)
                a->account->used += osize;
            return NULL;
        }
    }
    memcpy(q, ptr, osize < nsize ? osize : nsize);
    give(a, ptr, osize);
    return q;
}

/* ------------------------------------------------------------ C API */
/* For _fastconvert.c's free-memory check: lupa's MemoryStatus of a state
 * whose allocator is (f, ud), through an arena when there is one. */
static void *
memory_status(lua_Alloc f, void *ud)
{
    return f == arena_alloc ? (void *)((Arena *)ud)->account : ud;
}

typedef struct {
    void *(*memory_status)(lua_Alloc f, void *ud);
} MbArenaApi;

static MbArenaApi arena_api = {memory_status};

/* ------------------------------------------------------------ ArenaSource */
typedef struct {
    PyObject_HEAD
    Source *source;
} ArenaSource;

static void
as_dealloc(ArenaSource *self)
{
    if (self->source != NULL)
        source_release(self->source);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
as_init(ArenaSource *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"reserve_bytes", "state_bytes", NULL};
    unsigned long long reserve = 0, state = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "KK:ArenaSource", kwlist, &reserve, &state))
        return -1;
    if (self->source != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "ArenaSource is already initialised");
        return -1;
    }
    if (reserve < HUGE_PAGE || reserve > (1ULL << 46) || state < CHUNK_SIZE) {
        PyErr_Format(PyExc_ValueError,
                     "ArenaSource: reserve_bytes must be 2 MiB..64 TiB and state_bytes "
                     "at least %d (got %llu, %llu)", CHUNK_SIZE, reserve, state);
        return -1;
    }
    size_t size = (size_t)reserve / HUGE_PAGE * HUGE_PAGE;
    size_t mapping_size = size + HUGE_PAGE;
    void *mapping = mmap(NULL, mapping_size, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mapping == MAP_FAILED) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    char *base = (char *)(((uintptr_t)mapping + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
#ifdef MADV_HUGEPAGE
    (void)madvise(base, size, MADV_HUGEPAGE); /* a hint: without THP, plain pages */
#endif
    Source *s = calloc(1, sizeof *s);
    if (s == NULL) {
        munmap(mapping, mapping_size);
        PyErr_NoMemory();
        return -1;
    }
    atomic_init(&s->refs, 1);
    atomic_init(&s->bump, 0);
    atomic_init(&s->spare, 0);
    s->base = base;
    s->size = size;
    s->mapping = mapping;
    s->mapping_size = mapping_size;
    s->state_chunks = (size_t)state / CHUNK_SIZE;
    self->source = s;
    return 0;
}

/* install(state): the arena becomes the allocator of the lua_State at
 * address `state` (which must be lupa.lua54's, made with lupa's allocator,
 * and used by no other thread now). False when it already has an arena. */
static PyObject *
as_install(ArenaSource *self, PyObject *arg)
{
    Source *s = self->source;
    if (s == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "ArenaSource is not initialised");
        return NULL;
    }
    void *address = PyLong_AsVoidPtr(arg);
    if (address == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "install: a lua_State address, not 0");
        return NULL;
    }
    lua_State *L = (lua_State *)address;
    void *ud = NULL;
    lua_Alloc f = lua.getallocf(L, &ud);
    if (f == arena_alloc)
        Py_RETURN_FALSE;
    Arena *a = calloc(1, sizeof *a);
    if (a == NULL)
        return PyErr_NoMemory();
    a->inner = f;
    a->inner_ud = ud;
    a->account = (LupaMemory *)ud; /* NULL for luaL_newstate's (no limit) */
    a->source = s;
    a->main = (const char *)L;
    atomic_fetch_add(&s->refs, 1);
    atomic_fetch_add(&s->arenas, 1);
    atomic_fetch_add(&s->installed, 1);
    lua.setallocf(L, arena_alloc, a);
    Py_RETURN_TRUE;
}

static PyObject *
as_statistics(ArenaSource *self, PyObject *unused)
{
    Source *s = self->source;
    if (s == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "ArenaSource is not initialised");
        return NULL;
    }
    return Py_BuildValue(
        "{s:K,s:K,s:L,s:L,s:L,s:L,s:L}",
        "reserved_bytes", (unsigned long long)s->size,
        "state_bytes", (unsigned long long)(s->state_chunks * CHUNK_SIZE),
        "chunks_used", atomic_load(&s->chunks_used),
        "chunks_spare", atomic_load(&s->chunks_spare),
        "states", atomic_load(&s->arenas),
        "states_installed", atomic_load(&s->installed),
        "blocks_passed_on", atomic_load(&s->passed_on));
}

static PyMethodDef as_methods[] = {
    {"install", (PyCFunction)as_install, METH_O,
     "install(state): the arena allocates this lua_State's small blocks from now on"},
    {"statistics", (PyCFunction)as_statistics, METH_NOARGS,
     "statistics() -> dict of the source's counters"},
    {NULL},
};

static PyTypeObject ArenaSourceType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "moonbus.lua._arena.ArenaSource",
    .tp_basicsize = sizeof(ArenaSource),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "ArenaSource(reserve_bytes, state_bytes): chunks for Lua states' small blocks",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)as_init,
    .tp_dealloc = (destructor)as_dealloc,
    .tp_methods = as_methods,
};

static struct PyModuleDef arena_module = {
    PyModuleDef_HEAD_INIT, "moonbus.lua._arena",
    "Per-state chunks of huge pages for Lua states' small blocks (see _arena.c)", -1, NULL,
};

PyMODINIT_FUNC
PyInit__arena(void)
{
    PyObject *lupa = import_lupa(NULL);
    if (lupa == NULL)
        return NULL;
    Py_DECREF(lupa);
    if (PyType_Ready(&ArenaSourceType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&arena_module);
    if (m == NULL)
        return NULL;
    PyObject *capsule = PyCapsule_New(&arena_api, "moonbus.lua._arena.ALLOC_API", NULL);
    if (capsule == NULL || PyModule_AddObjectRef(m, "ALLOC_API", capsule) < 0 ||
        PyModule_AddObjectRef(m, "ArenaSource", (PyObject *)&ArenaSourceType) < 0 ||
        PyModule_AddStringConstant(m, "LUA_MODULE", LUPA_MODULE) < 0 ||
        PyModule_AddIntConstant(m, "CHUNK_SIZE", CHUNK_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "SMALL_MAX", SMALL_MAX) < 0) {
        Py_XDECREF(capsule);
        Py_DECREF(m);
        return NULL;
    }
    Py_DECREF(capsule);
    return m;
}
