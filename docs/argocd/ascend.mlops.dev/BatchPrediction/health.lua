-- Argo CD health check for ascend.mlops.dev/BatchPrediction (a bounded job over N shard pods).
-- Healthy once Succeeded=True; Degraded when the job failed for good
-- (Succeeded=False, Stalled=True, or an invalid spec); Progressing otherwise,
-- including while the operator has not yet observed the latest generation.
local hs = {}

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

local succeeded = condition("Succeeded")
if succeeded ~= nil and succeeded.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(succeeded, "Batch prediction succeeded")
  return hs
end

local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled, "Stalled")
  return hs
end

-- Reconciling=True wins over Succeeded=False: the operator is still at work
-- (a retry after a pod failure, a new attempt within backoffLimit).
local reconciling = condition("Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = describe(reconciling, "Reconciling")
elseif succeeded ~= nil and succeeded.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(succeeded, "Failed")
  return hs
else
  local valid = condition("Valid")
  if valid ~= nil and valid.status == "False" then
    hs.status = "Degraded"
    hs.message = describe(valid, "Invalid spec")
    return hs
  end
  hs.status = "Progressing"
  hs.message = describe(succeeded, obj.status.phase or "Waiting for the shard pods to start")
end
local progress = obj.status.progress
if progress ~= nil and progress.done ~= nil and progress.total ~= nil then
  hs.message = hs.message .. " (" .. progress.done .. "/" .. progress.total .. " inputs)"
end
return hs
