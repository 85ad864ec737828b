{{/* Names ---------------------------------------------------------------- */}}

{{- define "ascend-mlops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ascend-mlops.fullname" -}}
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

{{- define "ascend-mlops.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ascend-mlops.labels" -}}
helm.sh/chart: {{ include "ascend-mlops.chart" . }}
{{ include "ascend-mlops.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ascend-mlops
{{- end }}

{{- define "ascend-mlops.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ascend-mlops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "ascend-mlops.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ascend-mlops.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Images: [imageRegistry/]repository:tag, tag defaulting to appVersion. -- */}}
{{- define "ascend-mlops.image" -}}
{{- $ctx := index . 0 }}
{{- $image := index . 1 }}
{{- $ref := printf "%s:%s" $image.repository (default $ctx.Chart.AppVersion $image.tag | toString) }}
{{- if $ctx.Values.imageRegistry }}
{{- printf "%s/%s" (trimSuffix "/" $ctx.Values.imageRegistry) $ref }}
{{- else }}
{{- $ref }}
{{- end }}
{{- end }}

{{/* "k1=v1,k2=v2" for ASCEND_MLOPS_ACCELERATOR_NODE_SELECTOR. */}}
{{- define "ascend-mlops.nodeSelectorString" -}}
{{- $pairs := list }}
{{- range $key, $value := .Values.accelerator.nodeSelector }}
{{- $pairs = append $pairs (printf "%s=%s" $key (toString $value)) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/* Namespaces the NetworkPolicy is rendered in. */}}
{{- define "ascend-mlops.networkPolicyNamespaces" -}}
{{- $namespaces := .Values.networkPolicy.namespaces | default .Values.watchNamespaces | default (list .Release.Namespace) }}
{{- toJson $namespaces }}
{{- end }}

{{/*
RBAC rules: exactly what the operator's code calls. tests/chart/test_rbac.py
derives that list from operator/ascend_mlops and fails on any difference;
`python -m tests.chart.rbac_scan` prints it in this format. Namespaced rules
go in the ClusterRole (all namespaces) or in one Role per watched namespace;
cluster-scoped rules always go in the ClusterRole.
*/}}
{{- define "ascend-mlops.rbac.namespacedRules" -}}
# Kopf posts Events (kopf.event and per-object log messages); the operator lists
# the Warning Events of one pod (a field selector on its name) when that pod has
# not started within podStartTimeoutSeconds, for the kubelet's reason.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "list"]
# Training workers and converter pods: created, watched, cleaned up.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "delete"]
# A running TrainingJob's progress: the tail of its chief worker's log.
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
# Object storage: the one Secret a resource names (spec.storage.secretName or storage.secretName),
# read by name to check its key names before pods are created; and an InferenceService's token
# Secret (spec.auth.secretName), whose metadata only is read to say when it is missing. Never
# listed or watched.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
# Headless Services of multi-worker training; the InferenceService's Service (replaced when it drifts).
# Listed and watched (only those labelled as ours) so that reconciles read them from memory.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "update", "delete"]
# Model servers (replaced when they drift from the spec).
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "update", "delete"]
# InferenceService routes on the configured Gateway (ASCEND_MLOPS_GATEWAY) with the canary's weights
# and spec.exposure's host.
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "create", "update"]
# InferenceService spec.exposure type Ingress (deleted when the exposure goes).
- apiGroups: ["networking.k8s.io"]
  resources: ["ingresses"]
  verbs: ["get", "create", "update", "delete"]
# InferenceService spec.autoscaling: a HorizontalPodAutoscaler, or a KEDA ScaledObject where KEDA is
# installed (deleted when autoscaling goes). Discovering KEDA needs no rule.
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "create", "update", "delete"]
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["get", "create", "update", "delete"]
# The four kinds: watched and read; delete for ttlSecondsAfterFinished.
- apiGroups: ["ascend.mlops.dev"]
  resources: ["batchpredictions", "inferenceservices", "modelconversions", "trainingjobs"]
  verbs: ["get", "list", "watch", "delete"]
- apiGroups: ["ascend.mlops.dev"]
  resources: ["batchpredictions/status", "inferenceservices/status", "modelconversions/status", "trainingjobs/status"]
  verbs: ["patch"]
{{- end }}

{{- define "ascend-mlops.rbac.clusterRules" -}}
# Kopf discovers the CRDs at runtime (settings.scanning).
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
# spec.autoscaling: the nodes' allocatable Ascend devices, to say when maxReplicas cannot all run.
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["list"]
{{- if .Values.watchNamespaces }}
# Kopf lists namespaces to match its namespace list (not when cluster-wide).
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}
{{- end }}
