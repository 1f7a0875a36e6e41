-- The worker's trampoline (moonbus.runner.worker): runs a job in a fresh
-- environment built in the same Lua call, or in a given (persistent) one;
-- the second function also sets the job's read-only shared view.
local build_env = ...
return function(job, env, ...)
  if env == nil then
    env = build_env()
  end
  return job(env, ...)
end, function(job, env, shared, ...)
  if env == nil then
    env = build_env()
  end
  env.shared = shared
  return job(env, ...)
end
