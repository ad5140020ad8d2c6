{{/* Chart name. */}}
{{- define "imclust.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name prefix of every object. Kept to 40 characters so that "<fullname>-coordinator" fits
a CronJob name (52) and the Job names the CronJob controller derives from it (63).
*/}}
{{- define "imclust.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The coordinator's Job / CronJob and Service name. */}}
{{- define "imclust.coordinatorName" -}}
{{- printf "%s-coordinator" (include "imclust.fullname" .) }}
{{- end }}

{{/* The workers' Job / CronJob name. */}}
{{- define "imclust.workersName" -}}
{{- printf "%s-workers" (include "imclust.fullname" .) }}
{{- end }}

{{- define "imclust.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "imclust.labels" -}}
helm.sh/chart: {{ include "imclust.chart" . }}
{{ include "imclust.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | toString | replace "+" "_" | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: imclust
{{- end }}

{{/* Selector labels (add app.kubernetes.io/component for one component). */}}
{{- define "imclust.selectorLabels" -}}
app.kubernetes.io/name: {{ include "imclust.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount of both pods. */}}
{{- define "imclust.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "imclust.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The ConfigMap holding the job spec, and its key. */}}
{{- define "imclust.configMapName" -}}
{{- if .Values.job.existingConfigMap }}
{{- .Values.job.existingConfigMap }}
{{- else }}
{{- printf "%s-config" (include "imclust.fullname" .) }}
{{- end }}
{{- end }}

{{- define "imclust.configMapKey" -}}
{{- if .Values.job.existingConfigMap }}
{{- .Values.job.existingConfigMapKey }}
{{- else }}
{{- "job.toml" }}
{{- end }}
{{- end }}

{{/* The Secret holding the bearer token ("" when there is none). */}}
{{- define "imclust.tokenSecretName" -}}
{{- if .Values.auth.existingSecret }}
{{- .Values.auth.existingSecret }}
{{- else if .Values.auth.create }}
{{- printf "%s-token" (include "imclust.fullname" .) }}
{{- end }}
{{- end }}

{{/* Images. */}}
{{- define "imclust.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}

{{- define "imclust.workerImage" -}}
{{- $w := .Values.workers.image }}
{{- $repo := $w.repository | default .Values.image.repository }}
{{- $tag := $w.tag | default "" | toString }}
{{- if not $tag }}
{{- $tag = .Values.image.tag | default .Chart.AppVersion | toString }}
{{- if gt (int .Values.workers.gpus) 0 }}
{{- $tag = printf "%s-cuda" $tag }}
{{- end }}
{{- end }}
{{- printf "%s:%s" $repo $tag }}
{{- end }}

{{/* A TOML float: 1 -> 1.0, 0.5 -> 0.5. */}}
{{- define "imclust.tomlFloat" -}}
{{- $f := float64 . }}
{{- if eq $f (floor $f) }}{{ printf "%.1f" $f }}{{ else }}{{ $f }}{{ end }}
{{- end }}

{{/*
The job spec rendered from the structured values (job.config and job.existingConfigMap empty).
Strings go through toJson: a JSON string is a valid TOML basic string.
*/}}
{{- define "imclust.jobToml" -}}
# imclust job spec rendered by the Helm chart {{ include "imclust.chart" . }} (docs/job-config.md).
# job.id is not set here: the coordinator takes it from IMCLUST__JOB__ID, the name of its
# Kubernetes Job, so a restarted pod resumes the same job and every scheduled run is a new one.

[dataset]
url = {{ .Values.dataset.url | toJson }}
{{- with .Values.dataset.split }}
split = {{ . | toJson }}
{{- end }}
{{- range .Values.models }}

[[models]]
bundle = {{ .bundle | toJson }}
{{- with .name }}
name = {{ . | toJson }}
{{- end }}
weight = {{ include "imclust.tomlFloat" (.weight | default 1.0) }}
batch_size = {{ .batchSize | default 32 | int }}
{{- end }}

[init]
method = {{ .Values.init.method | toJson }}

[kmeans]
{{- if not (kindIs "invalid" .Values.kmeans.k) }}
k = {{ .Values.kmeans.k | int }}
{{- end }}
metric = {{ .Values.kmeans.metric | toJson }}
max_iter = {{ .Values.kmeans.maxIter | int }}

[output]
url = {{ .Values.output.url | toJson }}
{{- with .Values.cache.url }}

[cache]
url = {{ . | toJson }}
{{- end }}

[cluster]
listen = {{ printf "0.0.0.0:%d" (.Values.service.grpcPort | int) | toJson }}
metrics_listen = {{ ternary (printf "0.0.0.0:%d" (.Values.metrics.port | int)) "" .Values.metrics.enabled | toJson }}

[auth]
require_token = {{ ternary "true" "false" (ne (include "imclust.tokenSecretName" .) "") }}

[runtime]
device = {{ ternary "cuda" "cpu" (gt (int .Values.workers.gpus) 0) | toJson }}
threads = {{ .Values.workers.threads | int }}
{{- if or .Values.storage.endpoint .Values.storage.region }}

[storage]
{{- with .Values.storage.endpoint }}
endpoint = {{ . | toJson }}
{{- end }}
{{- with .Values.storage.region }}
region = {{ . | toJson }}
{{- end }}
{{- end }}
{{- end }}

{{/* Pod annotations of a component (Prometheus scrape annotations when metrics are on). */}}
{{- define "imclust.podAnnotations" -}}
{{- $a := dict }}
{{- if .Values.metrics.enabled }}
{{- $_ := set $a "prometheus.io/scrape" "true" }}
{{- $_ := set $a "prometheus.io/port" (.Values.metrics.port | toString) }}
{{- $_ := set $a "prometheus.io/path" "/metrics" }}
{{- end }}
{{- $a = merge (deepCopy .Values.podAnnotations) $a }}
{{- with $a }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{/*
Environment shared by both containers: the token, the log level.
*/}}
{{- define "imclust.commonEnv" -}}
{{- $secret := include "imclust.tokenSecretName" . }}
{{- if $secret }}
- name: IMCLUST_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ .Values.auth.existingSecretKey }}
{{- end }}
- name: HOME
  value: /tmp
- name: TMPDIR
  value: /tmp
{{- with .Values.rustLog }}
- name: RUST_LOG
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{/* envFrom of both containers: the object-store credentials. */}}
{{- define "imclust.envFrom" -}}
{{- with .Values.storage.existingSecret }}
envFrom:
  - secretRef:
      name: {{ . }}
{{- end }}
{{- end }}

{{/* Volumes of both pods. */}}
{{- define "imclust.tmpVolume" -}}
- name: tmp
  emptyDir:
    {{- if .Values.tmpSizeLimit }}
    sizeLimit: {{ .Values.tmpSizeLimit }}
    {{- else }} {}
    {{- end }}
{{- end }}
