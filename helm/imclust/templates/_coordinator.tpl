{{/*
The coordinator's Job spec, shared by the one-off Job and the CronJob's jobTemplate.
*/}}
{{- define "imclust.coordinator.jobSpec" -}}
{{- $c := .Values.coordinator -}}
completions: 1
parallelism: 1
backoffLimit: {{ $c.backoffLimit | int }}
{{- with $c.podFailurePolicy }}
podFailurePolicy:
  {{- toYaml . | nindent 2 }}
{{- end }}
# Never two coordinators of one job at once: a replacement starts once the old pod is gone.
podReplacementPolicy: Failed
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
      app.kubernetes.io/component: coordinator
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
    # No SERVICE_HOST-style variables: they would clutter the IMCLUST_* environment.
    enableServiceLinks: false
    {{- with .Values.imagePullSecrets }}
    imagePullSecrets:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- with $c.priorityClassName }}
    priorityClassName: {{ . }}
    {{- end }}
    {{- with .Values.podSecurityContext }}
    securityContext:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- with ($c.nodeSelector | default .Values.nodeSelector) }}
    nodeSelector:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- with ($c.tolerations | default .Values.tolerations) }}
    tolerations:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- with ($c.affinity | default .Values.affinity) }}
    affinity:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    containers:
      - name: coordinator
        image: {{ include "imclust.image" . }}
        imagePullPolicy: {{ .Values.image.pullPolicy }}
        # args only: the image's entrypoint is tini -> imclust (a command would drop tini,
        # which forwards SIGTERM).
        args:
          - --log-format
          - {{ .Values.logFormat }}
          - coordinator
          - --config
          - /etc/imclust/{{ include "imclust.configMapKey" . }}
          - --listen
          - {{ printf "0.0.0.0:%d" (.Values.service.grpcPort | int) | quote }}
          # Keep telling workers the job is over until all of them have heard it (late
          # starters, or a retried coordinator that finds the job committed).
          - --expect-workers
          - {{ .Values.workers.replicas | int | quote }}
          {{- if .Values.metrics.enabled }}
          - --metrics-listen
          - {{ printf "0.0.0.0:%d" (.Values.metrics.port | int) | quote }}
          {{- end }}
          {{- range .Values.job.set }}
          - --set
          - {{ . | quote }}
          {{- end }}
          {{- range $c.extraArgs }}
          - {{ . | quote }}
          {{- end }}
        env:
          # The job id is the Kubernetes Job's name: the same for a restarted pod (which then
          # resumes from <output.url>/<job id>/checkpoints/), new for every scheduled run.
          - name: IMCLUST__JOB__ID
            valueFrom:
              fieldRef:
                fieldPath: metadata.labels['batch.kubernetes.io/job-name']
          {{- include "imclust.commonEnv" . | trim | nindent 10 }}
          {{- with $c.extraEnv }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        {{- with (include "imclust.envFrom" . | trim) }}
        {{- . | nindent 8 }}
        {{- end }}
        ports:
          - name: grpc
            containerPort: {{ .Values.service.grpcPort | int }}
            protocol: TCP
          {{- if .Values.metrics.enabled }}
          - name: metrics
            containerPort: {{ .Values.metrics.port | int }}
            protocol: TCP
          {{- end }}
        # Ready once the gRPC port is open (after the dataset and bundles are loaded): only
        # then does the Service send workers to it.
        readinessProbe:
          tcpSocket:
            port: grpc
          periodSeconds: 5
          failureThreshold: 2
        # The last log lines become the termination message: `kubectl describe` shows why
        # the job failed.
        terminationMessagePolicy: FallbackToLogsOnError
        {{- with .Values.securityContext }}
        securityContext:
          {{- toYaml . | nindent 10 }}
        {{- end }}
        {{- with $c.resources }}
        resources:
          {{- toYaml . | nindent 10 }}
        {{- end }}
        volumeMounts:
          - name: config
            mountPath: /etc/imclust
            readOnly: true
          - name: tmp
            mountPath: /tmp
          {{- with .Values.volumeMounts }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
    volumes:
      - name: config
        configMap:
          name: {{ include "imclust.configMapName" . }}
      {{- include "imclust.tmpVolume" . | trim | nindent 6 }}
      {{- with .Values.volumes }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
{{- end }}
