-- The batch loop of a runner worker: N tiny jobs in one Lua call (see batch.py).
local run_job, call, tracking, select, type, unpack, pack, utf8_len, SHORT = ...
local values, done = {}, 0
local start
local function after(i, n, jobs, k, ok, ...)
  if ok and select("#", ...) <= 1 then
    local v = ...
    local kind = type(v)
    if kind == "number" or kind == "boolean" or kind == "nil"
        or (kind == "string" and #v <= SHORT and utf8_len(v)) then
      values[i] = v
      done = i
      if i == n or tracking() then
        return true, unpack(values, 1, i)
      end
      return start(i + 1, n, jobs, k)
    end
  end
  return false, pack(ok, ...), unpack(values, 1, i - 1)
end
start = function(i, n, jobs, k)
  local nargs = jobs[k + 1]
  return after(i, n, jobs, k + 2 + nargs,
    call(run_job, jobs[k], nil, unpack(jobs, k + 2, k + 1 + nargs)))
end
local function run(n, jobs)
  done = 0
  return start(1, n, jobs, 1)
end
local function progress()
  return done, unpack(values, 1, done)
end
return run, progress
