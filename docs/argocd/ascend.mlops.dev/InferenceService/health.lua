-- Argo CD health check for ascend.mlops.dev/InferenceService (long-running).
-- Healthy when Ready=True; Degraded when the operator gave up (Stalled=True)
-- or the pods fail in a way that waiting will not fix (crash loop, model that
-- cannot load, image that cannot be pulled, invalid spec, failed reference);
-- Progressing otherwise (rolling out, scaling, waiting for a conversion, or for
-- an Ascend 310 node).
local hs = {}

local FAILED_REASONS = {
  CrashLoopBackOff = true,
  ModelLoadFailed = true,
  ImagePullFailed = true,
  InvalidSpec = true,
  ReferenceFailed = true,
}

local function condition(conditionType)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == conditionType then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  if c == nil then
    return fallback
  end
  if c.message ~= nil and c.message ~= "" then
    return c.reason .. ": " .. c.message
  end
  return c.reason or fallback
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled, "Stalled")
  return hs
end

local ready = condition("Ready")
if ready ~= nil and ready.status == "True" then
  local reconciling = condition("Reconciling")
  if reconciling ~= nil and reconciling.status == "True" then
    -- Serving, but a rollout or a scale-up is under way.
    hs.status = "Progressing"
    hs.message = describe(reconciling, "Reconciling")
    return hs
  end
  hs.status = "Healthy"
  if obj.status.url ~= nil then
    hs.message = "Serving at " .. obj.status.url
  else
    hs.message = describe(ready, "Ready")
  end
  return hs
end

for _, c in ipairs(obj.status.conditions or {}) do
  if c.status == "False" and c.reason ~= nil and FAILED_REASONS[c.reason] then
    hs.status = "Degraded"
    hs.message = describe(c, c.reason)
    return hs
  end
end

hs.status = "Progressing"
local reconciling = condition("Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.message = describe(reconciling, "Reconciling")
else
  hs.message = describe(ready, obj.status.phase or "Waiting for the model server")
end
return hs
