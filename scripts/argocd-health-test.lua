-- Run Argo CD health checks (health.lua) against their sample resources.
--   lua5.1 scripts/argocd-health-test.lua cases.lua
-- cases.lua comes from scripts/argocd-health-cases.py. Each script runs in an
-- environment like Argo CD's (gopher-lua, Lua 5.1): the global `obj` holds the
-- resource, only the base, string, table and math libraries exist, and the
-- script returns {status=..., message=...}.

local function deepcopy(value)
  if type(value) ~= "table" then
    return value
  end
  local copy = {}
  for k, v in pairs(value) do
    copy[k] = deepcopy(v)
  end
  return copy
end

local function sandbox(resource)
  return {
    obj = deepcopy(resource),
    assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs,
    pcall = pcall, select = select, tonumber = tonumber, tostring = tostring,
    type = type, unpack = unpack,
    string = string, table = table, math = math,
  }
end

local casesFile = arg[1]
if casesFile == nil then
  io.stderr:write("usage: lua5.1 argocd-health-test.lua CASES.lua\n")
  os.exit(2)
end
local cases = assert(dofile(casesFile))

local passed, failed = 0, 0
local compiled = {}
for _, case in ipairs(cases) do
  local chunk = compiled[case.script]
  if chunk == nil then
    local loaded, err = loadfile(case.script)
    if loaded == nil then
      io.stderr:write("cannot load " .. case.script .. ": " .. err .. "\n")
      os.exit(1)
    end
    chunk = loaded
    compiled[case.script] = chunk
  end
  setfenv(chunk, sandbox(case.input))
  local ok, result = pcall(chunk)
  local problem = nil
  if not ok then
    problem = "error: " .. tostring(result)
  elseif type(result) ~= "table" then
    problem = "returned " .. type(result) .. ", not a table"
  elseif result.status ~= case.expected.status then
    problem = "status " .. tostring(result.status) .. ", want " .. case.expected.status
  elseif case.expected.message ~= nil and result.message ~= case.expected.message then
    problem = "message " .. string.format("%q", tostring(result.message)) ..
      ", want " .. string.format("%q", case.expected.message)
  end
  if problem == nil then
    passed = passed + 1
    print("ok    " .. case.name .. " -> " .. result.status)
  else
    failed = failed + 1
    print("FAIL  " .. case.name .. ": " .. problem)
  end
end
print(passed .. " passed, " .. failed .. " failed")
if failed > 0 or passed == 0 then
  os.exit(1)
end
