{{/*
The workers' Indexed Job spec, shared by the one-off Job and the CronJob's jobTemplate.
Each pod gets JOB_COMPLETION_INDEX from Kubernetes: its worker name is index-<i>.
*/}}
{{- define "imclust.workers.jobSpec" -}}
{{- $w := .Values.workers }}
{{- $gpus := int $w.gpus -}}
completionMode: Indexed
completions: {{ $w.replicas | int }}
parallelism: {{ $w.replicas | int }}
{{- if not (kindIs "invalid" $w.backoffLimitPerIndex) }}
backoffLimitPerIndex: {{ $w.backoffLimitPerIndex | int }}
{{- end }}
{{- if not (kindIs "invalid" $w.backoffLimit) }}
backoffLimit: {{ $w.backoffLimit | int }}
{{- end }}
{{- with $w.podFailurePolicy }}
podFailurePolicy:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if not (kindIs "invalid" .Values.activeDeadlineSeconds) }}
activeDeadlineSeconds: {{ .Values.activeDeadlineSeconds | int64 }}
{{- end }}
{{- if not (kindIs "invalid" .Values.ttlSecondsAfterFinished) }}
ttlSecondsAfterFinished: {{ .Values.ttlSecondsAfterFinished | int }}
{{- end }}
template:
  metadata:
    labels:
      {{- include "imclust.labels" . | nindent 6 }}
      app.kubernetes.io/component: worker
      {{- with .Values.podLabels }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    {{- with (include "imclust.podAnnotations" .) }}
    annotations:
      {{- . | nindent 6 }}
    {{- end }}
  spec:
    restartPolicy: Never
    serviceAccountName: {{ include "imclust.serviceAccountName" . }}
    automountServiceAccountToken: {{ .Values.serviceAccount.automount }}
    enableServiceLinks: false
    {{- with .Values.imagePullSecrets }}
    imagePullSecrets:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- with $w.priorityClassName }}
    priorityClassName: {{ . }}
    {{- end }}
    {{- with .Values.podSecurityContext }}
    securityContext:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- with ($w.nodeSelector | default .Values.nodeSelector) }}
    nodeSelector:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- with ($w.tolerations | default .Values.tolerations) }}
    tolerations:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- with ($w.affinity | default .Values.affinity) }}
    affinity:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    containers:
      - name: worker
        image: {{ include "imclust.workerImage" . }}
        imagePullPolicy: {{ .Values.image.pullPolicy }}
        # args only: the image's entrypoint is tini -> imclust (a command would drop tini,
        # which forwards SIGTERM).
        args:
          - --log-format
          - {{ .Values.logFormat }}
          - worker
          - --coordinator
          - {{ printf "http://%s:%d" (include "imclust.coordinatorName" .) (.Values.service.grpcPort | int) | quote }}
          - --reconnect-seconds
          - {{ $w.reconnectSeconds | int | quote }}
          {{- if .Values.metrics.enabled }}
          - --metrics-listen
          - {{ printf "0.0.0.0:%d" (.Values.metrics.port | int) | quote }}
          {{- end }}
          {{- range $w.extraArgs }}
          - {{ . | quote }}
          {{- end }}
        env:
          {{- include "imclust.commonEnv" . | trim | nindent 10 }}
          {{- with $w.extraEnv }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        {{- with (include "imclust.envFrom" . | trim) }}
        {{- . | nindent 8 }}
        {{- end }}
        {{- if .Values.metrics.enabled }}
        ports:
          - name: metrics
            containerPort: {{ .Values.metrics.port | int }}
            protocol: TCP
        {{- end }}
        terminationMessagePolicy: FallbackToLogsOnError
        {{- with .Values.securityContext }}
        securityContext:
          {{- toYaml . | nindent 10 }}
        {{- end }}
        {{- $res := deepCopy ($w.resources | default dict) }}
        {{- if gt $gpus 0 }}
        {{- $limits := get $res "limits" | default dict }}
        {{- $_ := set $limits "nvidia.com/gpu" $gpus }}
        {{- $_ := set $res "limits" $limits }}
        {{- end }}
        {{- with $res }}
        resources:
          {{- toYaml . | nindent 10 }}
        {{- end }}
        volumeMounts:
          - name: tmp
            mountPath: /tmp
          {{- with .Values.volumeMounts }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
    volumes:
      {{- include "imclust.tmpVolume" . | trim | nindent 6 }}
      {{- with .Values.volumes }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
{{- end }}
