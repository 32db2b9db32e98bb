-- Argo CD health check for woved.dev/Slot (slot-operator).
--
-- Install: argocd-cm key "resource.customizations.health.woved.dev_Slot" (see the
-- chart README), or upstream as resource_customizations/woved.dev/Slot/health.lua.
--
-- A verdict belongs to a generation (kstatus semantics): a condition only speaks
-- for the current spec when its observedGeneration equals metadata.generation.
--   Healthy      Ready=True for the current generation (a periodic re-probe or a
--                failed probe attempt does not change that)
--   Degraded     Stalled=True for the current generation (NeedsInit, NeedsReauth,
--                ImageBroken: a human has to act)
--   Suspended    spec.suspend=true and no current verdict (no probe will come)
--   Progressing  everything else: no verdict yet, probe queued or running, or the
--                verdict is for an older generation and the new spec awaits its probe
local hs = {}

local function find_condition(conditions, condition_type)
  if conditions == nil then
    return nil
  end
  for _, condition in ipairs(conditions) do
    if condition.type == condition_type then
      return condition
    end
  end
  return nil
end

-- Condition's observedGeneration, else the status's; nil when neither is set.
local function observed_generation(condition)
  if condition.observedGeneration ~= nil then
    return condition.observedGeneration
  end
  if obj.status ~= nil then
    return obj.status.observedGeneration
  end
  return nil
end

local function is_current(condition)
  local generation = obj.metadata ~= nil and obj.metadata.generation or nil
  local observed = observed_generation(condition)
  return generation == nil or observed == nil or observed == generation
end

local function is_true_now(condition)
  return condition ~= nil and condition.status == "True" and is_current(condition)
end

local function describe(condition, fallback)
  if condition == nil then
    return fallback
  end
  local reason = condition.reason or ""
  local message = condition.message or ""
  if reason ~= "" and message ~= "" then
    return reason .. ": " .. message
  end
  if message ~= "" then
    return message
  end
  if reason ~= "" then
    return reason
  end
  return fallback
end

local conditions = nil
if obj.status ~= nil then
  conditions = obj.status.conditions
end
local ready = find_condition(conditions, "Ready")
local stalled = find_condition(conditions, "Stalled")
local reconciling = find_condition(conditions, "Reconciling")

if is_true_now(stalled) then
  hs.status = "Degraded"
  hs.message = describe(stalled, "Stalled")
  return hs
end

if is_true_now(ready) then
  hs.status = "Healthy"
  hs.message = describe(ready, "Ready")
  return hs
end

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "Probing is suspended (spec.suspend)"
  return hs
end

hs.status = "Progressing"
if reconciling ~= nil and reconciling.status == "True" then
  hs.message = describe(reconciling, "Probing")
elseif ready ~= nil and not is_current(ready) then
  hs.message = "Waiting for a probe of generation " .. tostring(obj.metadata.generation)
elseif ready ~= nil then
  hs.message = describe(ready, "Waiting for a verdict")
else
  hs.message = "Waiting for the first probe"
end
return hs
