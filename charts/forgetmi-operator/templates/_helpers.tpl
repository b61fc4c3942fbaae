{{/* Chart name, truncated to 63 characters. */}}
{{- define "forgetmi-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name, truncated to 63 characters (DNS label limit). */}}
{{- define "forgetmi-operator.fullname" -}}
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

{{/* Chart name and version for the helm.sh/chart label. */}}
{{- define "forgetmi-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels. */}}
{{- define "forgetmi-operator.labels" -}}
helm.sh/chart: {{ include "forgetmi-operator.chart" . }}
{{ include "forgetmi-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: forgetmi
{{- end }}

{{/* Selector labels. */}}
{{- define "forgetmi-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "forgetmi-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Name of the operator's ServiceAccount. */}}
{{- define "forgetmi-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "forgetmi-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Operator image reference. */}}
{{- define "forgetmi-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Name of the metrics Service (also the Prometheus `job` label through the ServiceMonitor). */}}
{{- define "forgetmi-operator.metricsServiceName" -}}
{{- printf "%s-metrics" (include "forgetmi-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
RBAC rules on namespaced resources the operator works with; used by the ClusterRole (all
namespaces) or by one Role per watched namespace. Only the verbs the operator uses.
*/}}
{{- define "forgetmi-operator.namespacedRules" -}}
# UnlearnRequests: Kopf lists and watches them and merge/JSON-patches its annotations (PATCH, never
# PUT); get reads one by name (Kube.get_request) and allows nothing list does not.
- apiGroups: ["unlearning.forgetmi.io"]
  resources: ["unlearnrequests"]
  verbs: ["get", "list", "watch", "patch"]
# Their status: Kopf and the operator only PATCH it (merge patch); nothing reads or PUTs /status.
- apiGroups: ["unlearning.forgetmi.io"]
  resources: ["unlearnrequests/status"]
  verbs: ["patch"]
# The Job and ConfigMap name their request as owner with blockOwnerDeletion: clusters that enforce
# owner-reference permissions (OwnerReferencesPermissionEnforcement, on by default in OpenShift)
# require update on the owner's finalizers to create them. No finalizer is ever set.
- apiGroups: ["unlearning.forgetmi.io"]
  resources: ["unlearnrequests/finalizers"]
  verbs: ["update"]
# Trainer Jobs (one per request, owned by it; created or read by name, watched for their status,
# deleted with a deleted request).
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["create", "get", "list", "watch", "delete"]
# The trainer's config ConfigMap: created, or read by name when it already exists (owned by the
# request, so garbage-collected with it; never updated, listed or deleted by the operator).
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["create", "get"]
# Trainer Pods are only read: Kopf lists and watches them, the operator lists a Job's Pods (image
# pull / unschedulable failures, termination message).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# Kopf POSTs a new Event for each message about a request (it never patches Events).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# Secrets: read the one named in spec.forget.subjectsSecretRef by name; create each request's own
# immutable copy of its accepted forget list (what its Jobs mount and its receipt attests), read it
# back, and delete it when the request ends. Never listed, watched, updated or patched.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "delete"]
{{- if .Values.trainJob.enabled }}
# Kubeflow Trainer v2 TrainJobs (a request needing several processes or nodes; one per request,
# owned by it; created or read by name, watched for their status, deleted with a deleted request).
# Whether the cluster serves them is read from API discovery (GET /apis/trainer.kubeflow.org/v1alpha1),
# which every authenticated user may read (the built-in system:discovery role): no rule needed.
- apiGroups: ["trainer.kubeflow.org"]
  resources: ["trainjobs"]
  verbs: ["create", "get", "list", "watch", "delete"]
{{- end }}
{{- if .Values.servingTargets.enabled }}
# Serving targets named in spec.rollout.target: read and patch the model URI.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "patch"]
- apiGroups: ["serving.kserve.io"]
  resources: ["inferenceservices"]
  verbs: ["get", "patch"]
{{- end }}
{{- if and .Values.peering.enabled .Values.watchNamespaces }}
# Kopf peering between operator instances in this namespace.
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}

{{/* Operator arguments after `python -m forgetmi_operator`. */}}
{{- define "forgetmi-operator.args" -}}
- --liveness=http://0.0.0.0:{{ .Values.health.port }}/healthz
{{- if .Values.peering.enabled }}
- --peering={{ .Values.peering.name }}
{{- else }}
- --standalone
{{- end }}
{{- if .Values.watchNamespaces }}
{{- range .Values.watchNamespaces }}
- --namespace={{ . }}
{{- end }}
{{- else }}
- --all-namespaces
{{- end }}
{{- end }}

{{/*
`tenants` as the operator's FORGETMI_NAMESPACE_POLICIES: JSON, namespace -> {credentials_secret,
allowed_uri_prefixes} (snake_case, the fields of its NamespacePolicy).
*/}}
{{- define "forgetmi-operator.namespacePolicies" -}}
{{- $policies := dict }}
{{- range $namespace, $tenant := .Values.tenants }}
{{- $_ := set $policies $namespace (dict "credentials_secret" (get $tenant "credentialsSecret" | default "")
      "allowed_uri_prefixes" (get $tenant "allowedUriPrefixes" | default list)) }}
{{- end }}
{{- toJson $policies }}
{{- end }}
