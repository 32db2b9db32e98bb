{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "slot-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release name + chart name unless the release name already contains it. */}}
{{- define "slot-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Name of cluster-scoped objects (ClusterRoles, ClusterRoleBindings): qualified by
the release namespace so that several installs (e.g. one per team namespace in
namespaced mode) do not collide.
*/}}
{{- define "slot-operator.clusterName" -}}
{{- printf "%s-%s" (include "slot-operator.fullname" .) .Release.Namespace | trunc 253 | trimSuffix "-" }}
{{- end }}

{{- define "slot-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "slot-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "slot-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "slot-operator.labels" -}}
helm.sh/chart: {{ include "slot-operator.chart" . }}
{{ include "slot-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: slot-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "slot-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "slot-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create=false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Name of the leader-election Lease (in the release namespace). */}}
{{- define "slot-operator.leaseName" -}}
{{- default (include "slot-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "slot-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Cross-field checks the JSON schema cannot express. Included by the Deployment. */}}
{{- define "slot-operator.validate" -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicas > 1 needs leaderElection.enabled=true: without a Lease every replica would probe and write status" }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (eq (int .Values.metrics.port) 0) }}
{{- fail "serviceMonitor.enabled needs metrics (metrics.port > 0)" }}
{{- end }}
{{- if and .Values.prometheusRule.enabled (eq (int .Values.metrics.port) 0) }}
{{- fail "prometheusRule.enabled needs metrics (metrics.port > 0)" }}
{{- end }}
{{- if eq (int .Values.metrics.port) (int .Values.health.port) }}
{{- fail "metrics.port and health.port must differ" }}
{{- end }}
{{- if and .Values.rbac.create (not .Values.watchNamespaces) (not (include "slot-operator.admissionPolicy" .)) (not .Values.admissionPolicy.allowUnboundedClusterWide) }}
{{- $why := "the API server does not serve admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy (Kubernetes 1.30 and later do by default)" }}
{{- if not .Values.admissionPolicy.enabled }}
{{- $why = "admissionPolicy.enabled is false" }}
{{- end }}
{{- fail (printf "watchNamespaces is empty, so the operator's ServiceAccount would create and delete Jobs in every namespace, and %s: no admission policy would bound what a stolen token does with those rights. Set watchNamespaces, or render the policy, or accept unbounded cluster-wide rights with admissionPolicy.allowUnboundedClusterWide=true" $why) }}
{{- end }}
{{- end }}

{{/*
"true" when the API server serves ValidatingAdmissionPolicy. Capabilities read from a cluster
(helm install/upgrade, helm template --validate, or --api-versions with kinds) name every served
kind, v1/Namespace included; helm's offline defaults name no kind at all, and then the chart's
kubeVersion (>= 1.31, which serves admissionregistration.k8s.io/v1 by default) stands for the server.
*/}}
{{- define "slot-operator.admissionPolicyServed" -}}
{{- if or (.Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy") (not (.Capabilities.APIVersions.Has "v1/Namespace")) }}true{{ end }}
{{- end }}

{{/*
CEL for admission-policy.yaml: the list of M(c) for every container and init container c for which
F(c) holds. Args: (list F M). The two lists are filtered apart: the API server's type checker sees
Container and init Container as different types and refuses their concatenation.
*/}}
{{- define "slot-operator.eachContainer" -}}
{{- $filter := index . 0 }}{{ $map := index . 1 -}}
(variables.pod.containers.filter(c, {{ $filter }}).map(c, {{ $map }}) + (has(variables.pod.initContainers) ? variables.pod.initContainers.filter(c, {{ $filter }}).map(c, {{ $map }}) : []))
{{- end }}

{{/* "true" when the chart renders its ValidatingAdmissionPolicy (admission-policy.yaml). */}}
{{- define "slot-operator.admissionPolicy" -}}
{{- if and .Values.admissionPolicy.enabled (include "slot-operator.admissionPolicyServed" .) }}true{{ end }}
{{- end }}

{{/*
Rules the operator needs in every namespace it watches. Used by the ClusterRole
(all namespaces) or by one Role per watched namespace. Each rule is the minimum
for one thing the operator does; nothing on Secrets, no writes to claims.
*/}}
{{- define "slot-operator.namespacedRules" -}}
# Slots: read through a watch (list/watch) and, after a conflicting status write, a
# fresh get. No create/update/patch/delete: Slots belong to their users.
- apiGroups: [woved.dev]
  resources: [slots]
  verbs: [get, list, watch]
# Slot status: verdicts and conditions (merge patches conditional on resourceVersion).
- apiGroups: [woved.dev]
  resources: [slots/status]
  verbs: [patch]
# SlotImageChecks: read through a watch (get after a conflicting status write) and deleted
# ttlAfterFinished after they finish. No create/update/patch: their spec is the user's, and immutable.
- apiGroups: [woved.dev]
  resources: [slotimagechecks]
  verbs: [get, list, watch, delete]
# SlotImageCheck status: each Slot's would-be phase, the summary and conditions.
- apiGroups: [woved.dev]
  resources: [slotimagechecks/status]
  verbs: [patch]
# Probe Jobs (a Slot's, and a SlotImageCheck's): created per probe (deterministic names), watched to
# read the outcome, read afresh when one already existed or outlived its deadline, deleted when superseded.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [create, get, list, watch, delete]
# Read-only, through watches: probe pods (exit codes, image pull errors, unschedulable),
# pods that mount a claim (ReadWriteOnce placement, ReadWriteOncePod in use) and the
# claims themselves. The operator never writes to, deletes or re-owns a claim.
- apiGroups: [""]
  resources: [pods, persistentvolumeclaims]
  verbs: [list, watch]
# Events on Slots (phase transitions, probe failures); a repeat bumps the count of the
# same Event (get, after a restart, to learn its count). list: the Job controller's
# FailedCreate Event says why an ownership migration's pod was not admitted (Pod Security).
- apiGroups: [""]
  resources: [events]
  verbs: [create, get, list, patch]
{{- end }}

{{/*
PromQL label matchers selecting this release's series: by default the job Prometheus
gives the chart's ServiceMonitor targets (the metrics Service's name).
*/}}
{{- define "slot-operator.metricsSelector" -}}
{{- .Values.prometheusRule.selector | default (printf "job=%q" (printf "%s-metrics" (include "slot-operator.fullname" .))) }}
{{- end }}

{{/*
An alert's `for` and labels: severity, prometheusRule.alertLabels, and the alert's own
extra labels if any. Args: (list $ "AlertName") or (list $ "AlertName" (dict ...)).
*/}}
{{- define "slot-operator.alertMeta" -}}
{{- $root := index . 0 }}
{{- $alert := index $root.Values.prometheusRule.alerts (index . 1) }}
{{- $own := dict "severity" $alert.severity }}
{{- if gt (len .) 2 }}
{{- $own = merge $own (index . 2) }}
{{- end -}}
for: {{ $alert.for | quote }}
labels:
  {{- merge $own (deepCopy $root.Values.prometheusRule.alertLabels) | toYaml | nindent 2 }}
{{- end }}

{{- define "slot-operator.runbookUrl" -}}
{{- $root := index . 0 }}
{{- printf "%s#%s" $root.Values.prometheusRule.runbookUrlBase (lower (index . 1)) }}
{{- end }}
