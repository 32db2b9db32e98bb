-- Argo CD health check for woved.dev/Slot (slot-operator).
--
-- Install: argocd-cm key "resource.customizations.health.woved.dev_Slot" (see the
-- chart README), or upstream as resource_customizations/woved.dev/Slot/health.lua.
--
-- The rule of docs/design.md ("How GitOps tools read a Slot"), read from the same fields
-- as Flux's kstatus, so that both tools stop, wait or pass a rollout on the same Slots:
--   Progressing  the operator has not yet seen the current spec (status.observedGeneration
--                is not metadata.generation)
--   Degraded     Stalled=True for the current generation: its verdict needs a human
--                (NeedsInit, NeedsReauth, ImageBroken) or its spec is invalid
--   Suspended    Reconciling=True, reason Suspended: the current generation has no verdict
--                and gets none while spec.suspend is true
--   Progressing  Reconciling=True: the current generation has no verdict yet (queued, probing,
--                or waiting to retry a probe that gave none)
--   Healthy      Ready=True for the current generation (a re-probe, or a failed re-probe, of a
--                generation that has its verdict does not change that)
--   Progressing  anything else
-- Only the base and table libraries are used: Argo CD opens no others for a customization.
local hs = {}

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
local status = obj.status or {}

local function find_condition(condition_type)
  if status.conditions == nil then
    return nil
  end
  for _, condition in ipairs(status.conditions) do
    if condition.type == condition_type then
      return condition
    end
  end
  return nil
end

-- True when the condition speaks for the current spec: its own observedGeneration, else the status's.
local function is_current(condition)
  local observed = condition.observedGeneration
  if observed == nil then
    observed = status.observedGeneration
  end
  return generation == nil or observed == generation
end

local function is_true_now(condition)
  return condition ~= nil and condition.status == "True" and is_current(condition)
end

local function describe(condition)
  local reason = condition.reason or ""
  local message = condition.message or ""
  if reason ~= "" and message ~= "" then
    return reason .. ": " .. message
  end
  if message ~= "" then
    return message
  end
  return reason
end

-- The health `state`, told by `condition`'s reason and message.
local function answer(state, condition)
  hs.status = state
  hs.message = describe(condition)
  return hs
end

local ready = find_condition("Ready")
local stalled = find_condition("Stalled")
local reconciling = find_condition("Reconciling")

if generation ~= nil and status.observedGeneration ~= generation then
  hs.status = "Progressing"
  if status.conditions == nil then
    hs.message = "Waiting for the first probe"
  else
    hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  end
  return hs
end

if is_true_now(stalled) then
  return answer("Degraded", stalled)
end

if reconciling ~= nil and reconciling.status == "True" then
  if reconciling.reason == "Suspended" then
    return answer("Suspended", reconciling)
  end
  return answer("Progressing", reconciling)
end

if is_true_now(ready) then
  return answer("Healthy", ready)
end

hs.status = "Progressing"
hs.message = "Waiting for a verdict on generation " .. tostring(generation)
return hs
