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
-- Threads: one Lua state, used by one thread at a time.

local safe_create, host_owned, SLEEP, error_text, co_resume, co_status, debug_traceback,
  fmt, pack, unpack, type, tostring = ...

-- Lifecycle coroutines (main engine) stay inside Lua: lupa turns a
-- not-yet-started coroutine handed to Python into a function, so the host
-- only ever holds task numbers, plus each task's thread pointer. The host
-- tracks a task's thread itself while it steps it (no enter/leave callbacks
-- on this hot path), so a task stays in `tasks` — alive, its pointer valid —
-- until the host drops it, after the call that finished it has ended.
local tasks = {}
local task_count = 0

local function new_task(fn, finished)
  if finished then
    tasks[finished] = nil
  end
  task_count = task_count + 1
  local co = safe_create(fn)
  host_owned[co] = true
  tasks[task_count] = co
  return task_count, fmt("%p", co)
end

local function drop_task(id)
  tasks[id] = nil
end

-- Resume task `id`: returns "sleep", ms | "done", results... | "error", traceback.
local function step(id, ...)
  local co = tasks[id]
  if co == nil then
    return "error", "unknown or finished task " .. tostring(id)
  end
  local r = pack(co_resume(co, ...))
  if not r[1] then
    return "error", debug_traceback(co, error_text(r[2]))
  end
  if co_status(co) == "suspended" then
    if r[2] == SLEEP and type(r[3]) == "number" then
      return "sleep", r[3]
    end
    -- Only sleep() may suspend a lifecycle task: a bare coroutine.yield here
    -- would leave it half-run (and its values are not a delay).
    return "error", debug_traceback(co, "coroutine.yield() outside a coroutine: on_start, poll, "
      .. "on_stop and deferred handlers wait with sleep(ms), not coroutine.yield")
  end
  return "done", unpack(r, 2, r.n)
end

-- start_task: look up lifecycle function `name` of `target` (the script's
-- table, then called with it as self, or its environment; an __index runs
-- under this call's limits) and start it in task `id`, the spare: one Lua
-- call per poll instead of three (look up, new_task, step), each a GIL
-- hand-off. The spare is made ahead (take_spare), so the host knows its
-- thread pointer before the call (an abort must arm it). Returns "none"
-- (the spare stays) or the next spare (id, pointer) and what step returns.
-- task_body's tail call leaves a "(...tail calls...)" traceback line, which
-- the host drops with its other plumbing.
local function task_body(fn, ...) return fn(...) end
local spare = nil  -- id of a made, never resumed task_body task, or nil

local function take_spare()
  if spare == nil then
    task_count = task_count + 1
    tasks[task_count] = safe_create(task_body)
    host_owned[tasks[task_count]] = true
    spare = task_count
  end
  return spare, fmt("%p", tasks[spare])
end

local function start_task(id, finished, target, name, with_self, ...)
  if finished then
    tasks[finished] = nil
    if finished == spare then spare = nil end
  end
  local fn = target[name]
  if type(fn) ~= "function" then return "none" end
  if id ~= spare or tasks[id] == nil then return "error", "task " .. tostring(id) .. " is not the spare" end
  spare = nil
  local next_id, next_ptr = take_spare()
  if with_self then return next_id, next_ptr, step(id, fn, target, ...) end
  return next_id, next_ptr, step(id, fn, ...)
end

return {
  new_task = new_task,
  drop_task = drop_task,
  step = step,
  take_spare = take_spare,
  start_task = start_task,
}
