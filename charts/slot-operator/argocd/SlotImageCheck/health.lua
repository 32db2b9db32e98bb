-- Argo CD health check for woved.dev/SlotImageCheck (slot-operator).
--
-- Install: argocd-cm key "resource.customizations.health.woved.dev_SlotImageCheck" (see the
-- chart README), or upstream as resource_customizations/woved.dev/SlotImageCheck/health.lua.
--
-- The rule of docs/design.md §2.5, read from the same fields as Flux's kstatus, so that a rollout
-- waiting on a check of the new tag stops, waits or passes in both tools alike:
--   Progressing  the operator has not yet seen the check (status.observedGeneration is not
--                metadata.generation)
--   Degraded     Stalled=True: the check finished and a selected Slot would need a human
--                (NeedsInit, NeedsReauth, ImageBroken), or no answer will come (NoSlotsSelected,
--                NoVerdict)
--   Healthy      Ready=True: the check finished and every selected Slot would be Ready
--   Progressing  anything else: its probes are queued or running
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
local function is_true_now(condition)
  if condition == nil or condition.status ~= "True" then
    return false
  end
  local observed = condition.observedGeneration
  if observed == nil then
    observed = status.observedGeneration
  end
  return generation == nil or observed == generation
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

if generation ~= nil and status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to start the check"
  return hs
end

local stalled = find_condition("Stalled")
if is_true_now(stalled) then
  return answer("Degraded", stalled)
end

local ready = find_condition("Ready")
if is_true_now(ready) then
  return answer("Healthy", ready)
end

local reconciling = find_condition("Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  return answer("Progressing", reconciling)
end
hs.status = "Progressing"
hs.message = "Waiting for the check to finish"
return hs
