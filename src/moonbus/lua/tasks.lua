-- moonbus sandbox: the main engine's lifecycle tasks (on_start, poll,
-- on_stop, deferred handlers) as coroutines the host steps.
--
-- Loaded by the host with a state's first task (prelude.lua's load_tasks,
-- after the globals are gone: everything it uses is passed in). It gets the
-- prelude's own pieces it needs: coroutines are made by its
-- safe_create (the deadline hook), marked in its host_owned table (scripts
-- cannot resume or close them), and sleep() yields its SLEEP marker. Returns
-- new_task, drop_task, step, take_spare and start_task to the host
-- (moonbus.lua.engine). A file of its own, loaded on demand, keeps
-- the prelude under the module size limit and handler-only states smaller.
--
-- Threads: one Lua state, used by one thread at a time (the thread holding
-- the engine's lock: for a script's main engine, the scheduler worker or
-- stepping thread running its slice).

local safe_create, host_owned, SLEEP, error_text, co_resume, co_status, debug_traceback,
  fmt, co_yield, type, tostring = ...

-- Lifecycle coroutines (main engine) stay inside Lua: lupa turns a
-- not-yet-started coroutine handed to Python into a function, so the host
-- only ever holds task numbers, plus each task's thread pointer. The host
-- tracks a task's thread itself while it steps it (no enter/leave callbacks
-- on this hot path), so a task stays in `tasks` — alive, its pointer valid —
-- until the host drops it, after the call that finished it has ended.
local tasks = {}
local task_count = 0
local spare = nil  -- id of a task_body task waiting for its next function, or nil

-- Forget task `id` (finished, or never to be resumed again); the spare too.
local function release(id)
  tasks[id] = nil
  if id == spare then spare = nil end
end

local function new_task(fn, finished)
  if finished then
    release(finished)
  end
  task_count = task_count + 1
  local co = safe_create(fn)
  host_owned[co] = true
  tasks[task_count] = co
  return task_count, fmt("%p", co)
end

local function drop_task(id)
  release(id)
end

-- How a resume of `co` ended: "sleep", ms | "done", result | "error", traceback.
-- (A function of the resume's values rather than a table of them: no
-- garbage per step.) "done" passes on the task's first result only, all the
-- host reads (a poll's delay, on_start's false): each `...` passed on copies
-- every value, so a task returning 510,000 of them overflowed the host
-- thread's stack ("?:-1: stack overflow", no script line), which a
-- table.pack of them did not.
local DONE = {}  -- yielded by task_body when its function returned: never seen by scripts
local function settled(co, ok, first, ...)
  if not ok then
    return "error", debug_traceback(co, error_text(first))
  end
  if first == DONE then
    return "done", (...)
  end
  if co_status(co) == "suspended" then
    local ms = ...
    if first == SLEEP and type(ms) == "number" then
      return "sleep", ms
    end
    -- Only sleep() may suspend a lifecycle task: a bare coroutine.yield here
    -- would leave it half-run (and its values are not a delay).
    return "error", debug_traceback(co, "coroutine.yield() outside a coroutine: on_start, poll, "
      .. "on_stop and deferred handlers wait with sleep(ms), not coroutine.yield")
  end
  return "done", first
end

-- Resume task `id`: returns "sleep", ms | "done", result | "error", traceback.
local function step(id, ...)
  local co = tasks[id]
  if co == nil then
    return "error", "unknown or finished task " .. tostring(id)
  end
  return settled(co, co_resume(co, ...))
end

-- start_task: look up lifecycle function `name` of `target` (the script's
-- table, then called with it as self, or its environment; an __index runs
-- under this call's limits) and start it in task `id`, the spare: one Lua
-- call per poll instead of three (look up, new_task, step), each a GIL
-- hand-off. The spare is made ahead (take_spare), so the host knows its
-- thread pointer before the call (an abort must arm it).
--
-- The spare's coroutine runs task_body, which does not end when its
-- function returns: it yields DONE with the results and waits to be resumed
-- with the next function. So a poll that returns leaves its coroutine as
-- the spare again, and the next poll runs in the same thread: no coroutine,
-- hook, pointer string or garbage is made per poll (10,000 scripts polling
-- once a second made and collected 10,000 coroutines a second). A task that
-- sleeps keeps its coroutine (a new spare is made); one that fails, or that
-- yields other than by sleep, is dead or stuck half-run and is never reused.
-- task_body's tail calls leave "(...tail calls...)" traceback lines, which
-- the host drops with its other plumbing.
-- Only the function's first result goes on (see settled): the others
-- are not copied through the yield.
-- Neither the function nor its result stays in the coroutine while it waits
-- (a poll that unset itself, poll = nil, kept its closure, and all its
-- upvalues hold, alive for good): every slot of a suspended coroutine's
-- stack is kept, so the function goes through `handoff` and is called from
-- a temporary slot (as is its result, which the yield hands on).
local handoff = nil  -- set and taken before the function runs: never kept
local function take()
  local fn = handoff
  handoff = nil
  return fn
end
local function task_body(fn, ...)
  handoff = fn
  fn = nil
  return task_body(co_yield(DONE, (take()(...))))
end

-- The spare (id, thread pointer), made when there is none; `finished`: a
-- task the host is done with, released first (it may be the spare itself:
-- a call that was aborted after its poll had returned).
local function take_spare(finished)
  if finished then
    release(finished)
  end
  if spare == nil then
    task_count = task_count + 1
    tasks[task_count] = safe_create(task_body)
    host_owned[tasks[task_count]] = true
    spare = task_count
  end
  return spare, fmt("%p", tasks[spare])
end

-- After start_task's step of task `id`: "done" leaves it the spare (its
-- pointer is the one the host has: nil instead of a new string); otherwise
-- a new spare is made for the next start.
local function next_spare(id, status, ...)
  if status == "done" then
    spare = id
    return id, nil, status, ...
  end
  local next_id, next_ptr = take_spare()
  return next_id, next_ptr, status, ...
end

-- Returns "none" (the spare stays) or the next spare (id, pointer or nil
-- when it is `id` again) and what step returns.
local function start_task(id, finished, target, name, with_self, ...)
  if finished then
    release(finished)
  end
  local fn = target[name]
  if type(fn) ~= "function" then return "none" end
  if id ~= spare or tasks[id] == nil then return "error", "task " .. tostring(id) .. " is not the spare" end
  spare = nil
  if with_self then return next_spare(id, step(id, fn, target, ...)) end
  return next_spare(id, step(id, fn, ...))
end

return {
  new_task = new_task,
  drop_task = drop_task,
  step = step,
  take_spare = take_spare,
  start_task = start_task,
}
