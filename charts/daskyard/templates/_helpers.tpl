{{/*
Ports: fixed, because the operator, the job config and the NetworkPolicies
agree on them. 8786 is hard-coded by the operator in DASK_SCHEDULER_ADDRESS.
*/}}
{{- define "daskyard.port.comm" -}}8786{{- end }}
{{- define "daskyard.port.http" -}}8787{{- end }}
{{- define "daskyard.port.tracker" -}}8788{{- end }}
{{/*
XGBoost's trackers take the first free port of 8788-8803 (the job's
xgboost.tracker_ports, 16 by default): a tracker's port stays busy about 60 s
after its training (TIME_WAIT), and for good when the training lost a worker
(its tracker never exits, dmlc/xgboost#7959), so the next training or retried
attempt needs the next one.
*/}}
{{- define "daskyard.port.trackerEnd" -}}8803{{- end }}

{{/*
Chart name, truncated to 63 characters (a DNS label).
*/}}
{{- define "daskyard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name, truncated to 63 characters. A release name that
already contains the chart name is used as is (release "daskyard" -> "daskyard").
*/}}
{{- define "daskyard.fullname" -}}
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
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "daskyard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: name, instance and component only, never versions.
Usage: include "daskyard.selectorLabels" (dict "ctx" $ "component" "job")
*/}}
{{- define "daskyard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "daskyard.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{/*
Stable labels: selector labels plus labels that never change between
upgrades. The operator copies DaskCluster and DaskWorkerGroup labels onto the
pods and Deployments it creates (into their immutable selectors, too), so
those objects get these and not the version labels.
*/}}
{{- define "daskyard.stableLabels" -}}
{{ include "daskyard.selectorLabels" . }}
app.kubernetes.io/part-of: daskyard
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
All labels of an object: stable labels plus chart and app version.
Usage: include "daskyard.labels" (dict "ctx" $ "component" "job")
*/}}
{{- define "daskyard.labels" -}}
helm.sh/chart: {{ include "daskyard.chart" .ctx }}
{{ include "daskyard.stableLabels" . }}
{{- with .ctx.Chart.AppVersion }}
app.kubernetes.io/version: {{ . | quote }}
{{- end }}
{{- end }}

{{/*
The runtime image, tag defaulting to the chart's appVersion.
*/}}
{{- define "daskyard.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Name of the training jobs' ServiceAccount.
*/}}
{{- define "daskyard.jobServiceAccountName" -}}
{{- printf "%s-job" (include "daskyard.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Recursive merge of two maps: keys of the second win, maps are merged key by
key, everything else (lists, false, 0, "") replaces. Sprig's mergeOverwrite
would ignore false and 0 ("autoscaler.minimum: 0" must win).
Usage: include "daskyard.merge" (list $base $override) | fromYaml
*/}}
{{- define "daskyard.merge" -}}
{{- $base := deepCopy (index . 0) }}
{{- range $key, $value := (index . 1) }}
{{- $current := get $base $key }}
{{- if and (kindIs "map" $value) (kindIs "map" $current) }}
{{- $_ := set $base $key (include "daskyard.merge" (list $current $value) | fromYaml) }}
{{- else }}
{{- $_ := set $base $key $value }}
{{- end }}
{{- end }}
{{- toYaml $base }}
{{- end }}

{{/*
Every cluster of `clusters`, merged over `clusterDefaults`, with its
DaskCluster name (`fullName`) and each worker group merged over its worker.
Usage: (include "daskyard.clusters" $ | fromYaml).clusters
*/}}
{{- define "daskyard.clusters" -}}
{{- $out := list }}
{{- $seen := dict }}
{{- range $entry := .Values.clusters }}
{{- $cluster := include "daskyard.merge" (list $.Values.clusterDefaults $entry) | fromYaml }}
{{- $full := printf "%s-%s" (include "daskyard.fullname" $) $cluster.name }}
{{- if gt (len $full) 53 }}
{{- fail (printf "DaskCluster name %q is %d characters; the operator allows 53 (it appends -scheduler): shorten the release name, fullnameOverride or clusters[].name" $full (len $full)) }}
{{- end }}
{{- if hasKey $seen $cluster.name }}
{{- fail (printf "clusters: the name %q is used twice" $cluster.name) }}
{{- end }}
{{- $_ := set $seen $cluster.name true }}
{{- $_ := set $cluster "fullName" $full }}
{{- $groups := list }}
{{- range $group := $cluster.workerGroups }}
{{- $merged := include "daskyard.merge" (list $cluster.worker (omit $group "name")) | fromYaml }}
{{- $_ := set $merged "name" $group.name }}
{{- $_ := set $merged "fullName" (printf "%s-%s" $full $group.name) }}
{{- if gt (len $merged.fullName) 63 }}
{{- fail (printf "DaskWorkerGroup name %q is longer than 63 characters (a label value): shorten workerGroups[].name" $merged.fullName) }}
{{- end }}
{{- $groups = append $groups $merged }}
{{- end }}
{{- $_ := set $cluster "workerGroups" $groups }}
{{- $out = append $out $cluster }}
{{- end }}
{{- toYaml (dict "clusters" $out) }}
{{- end }}

{{/*
A quantity as a string. Numbers arrive as float64 (values pass through
fromYaml): whole ones print without an exponent (17179869184, not 1.7e+10).
*/}}
{{- define "daskyard.quantity" -}}
{{- if and (kindIs "float64" .) (eq (floor .) .) }}
{{- printf "%d" (int64 .) }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/*
CPU quantity -> whole threads: "2" -> 2, "2500m" -> 2, "500m" -> 1, 1.5 -> 1.
*/}}
{{- define "daskyard.threads" -}}
{{- $cpu := include "daskyard.quantity" . }}
{{- $cores := 0.0 }}
{{- if hasSuffix "m" $cpu }}
{{- $cores = divf (float64 (trimSuffix "m" $cpu)) 1000 }}
{{- else }}
{{- $cores = float64 $cpu }}
{{- end }}
{{- max 1 (int64 (floor $cores)) }}
{{- end }}

{{/*
Memory quantity -> bytes: "4Gi" -> 4294967296, "4G" -> 4000000000, "512Mi",
"1.5Gi", plain bytes. Binary suffixes are tried before decimal ones.
*/}}
{{- define "daskyard.bytes" -}}
{{- $quantity := include "daskyard.quantity" . }}
{{- $factors := list (list "Ki" 1024.0) (list "Mi" 1048576.0) (list "Gi" 1073741824.0) (list "Ti" 1099511627776.0) (list "Pi" 1125899906842624.0) (list "k" 1000.0) (list "M" 1000000.0) (list "G" 1000000000.0) (list "T" 1000000000000.0) (list "P" 1000000000000000.0) }}
{{- $bytes := -1.0 }}
{{- range $pair := $factors }}
{{- if and (lt $bytes 0.0) (hasSuffix (index $pair 0) $quantity) }}
{{- $bytes = mulf (float64 (trimSuffix (index $pair 0) $quantity)) (index $pair 1) }}
{{- end }}
{{- end }}
{{- if lt $bytes 0.0 }}
{{- if not (regexMatch "^[0-9]+(\\.[0-9]+)?$" $quantity) }}
{{- fail (printf "memory limit %q: use a Kubernetes quantity like 4Gi, 512Mi or 4G" $quantity) }}
{{- end }}
{{- $bytes = float64 $quantity }}
{{- end }}
{{- printf "%d" (int64 (floor $bytes)) }}
{{- end }}

{{/*
ResourceRequirements with every quantity as a string: the operator's CRDs
type quantities as strings (`nvidia.com/gpu: 1` would be rejected).
*/}}
{{- define "daskyard.resources" -}}
{{- range $section := list "requests" "limits" }}
{{- with get $ $section }}
{{ $section }}:
  {{- range $name, $quantity := . }}
  {{ $name }}: {{ include "daskyard.quantity" $quantity | quote }}
  {{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Volumes every daskyard pod mounts under its read-only root filesystem.
*/}}
{{- define "daskyard.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ . }}
{{- end }}

{{/*
envFrom for object-storage credentials.
*/}}
{{- define "daskyard.objectStorageEnvFrom" -}}
{{- with .Values.objectStorage.secretName }}
envFrom:
  - secretRef:
      name: {{ . }}
      optional: true
{{- end }}
{{- end }}

{{/*
The scheme of the Dask comm port: tls when `tls.enabled`, else tcp.
*/}}
{{- define "daskyard.scheme" -}}
{{- if .Values.tls.enabled }}tls{{ else }}tcp{{ end }}
{{- end }}

{{/*
A cluster's scheduler address as clients in the cluster dial it.
Usage: include "daskyard.schedulerAddress" (dict "ctx" $ "cluster" $cluster.fullName)
*/}}
{{- define "daskyard.schedulerAddress" -}}
{{- printf "%s://%s-scheduler.%s.svc.cluster.local:%s" (include "daskyard.scheme" .ctx) .cluster .ctx.Release.Namespace (include "daskyard.port.comm" .ctx) }}
{{- end }}

{{/*
The TLS Secret's name; rendering fails when TLS is on without one.
*/}}
{{- define "daskyard.tls.secretName" -}}
{{- if not .Values.tls.secretName }}
{{- fail (printf "tls.enabled is true but tls.secretName is empty: set tls.secretName to an existing Secret in namespace %q holding ca.crt, tls.crt and tls.key (a cert-manager Certificate creates one; see the chart README, section TLS), or set tls.enabled=false" .Release.Namespace) }}
{{- end }}
{{- .Values.tls.secretName }}
{{- end }}

{{/*
The TLS Secret as a volume. Only the three PEM files are projected, so a
Secret without one of them keeps the pod from starting (an event names the
missing key) instead of starting a process that cannot handshake.
Mode 0440 (288): the kubelet gives the files the pod's fsGroup (10001 in
podSecurityContext), which is how the non-root user reads them.
*/}}
{{- define "daskyard.tls.volume" -}}
- name: tls
  secret:
    secretName: {{ include "daskyard.tls.secretName" . }}
    defaultMode: 288
    items:
      - key: ca.crt
        path: ca.crt
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- end }}

{{/*
The TLS Secret's mount in a container.
*/}}
{{- define "daskyard.tls.volumeMount" -}}
- name: tls
  mountPath: {{ .Values.tls.mountPath }}
  readOnly: true
{{- end }}

{{/*
dask config (distributed.comm.require-encryption, distributed.comm.tls.*) as
environment variables: every comm is TLS with the mounted files. `roles` are
the distributed.comm.tls sections to fill: a scheduler connects as
"scheduler", workers and nannies as "worker", clients as "client".
Usage: include "daskyard.tls.env" (dict "ctx" $ "roles" (list "client"))
*/}}
{{- define "daskyard.tls.env" -}}
{{- $dir := .ctx.Values.tls.mountPath -}}
- name: DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION
  value: "true"
- name: DASK_DISTRIBUTED__COMM__TLS__CA_FILE
  value: {{ printf "%s/ca.crt" $dir }}
{{- range $role := .roles }}
- name: {{ printf "DASK_DISTRIBUTED__COMM__TLS__%s__CERT" (upper $role) }}
  value: {{ printf "%s/tls.crt" $dir }}
- name: {{ printf "DASK_DISTRIBUTED__COMM__TLS__%s__KEY" (upper $role) }}
  value: {{ printf "%s/tls.key" $dir }}
{{- end }}
{{- end }}

{{/*
A worker pod spec.
Usage: include "daskyard.workerPodSpec" (dict "ctx" $ "worker" $w "cluster" $cluster.fullName)
The operator adds DASK_WORKER_NAME and DASK_SCHEDULER_ADDRESS to the
container, each only if the container does not set it already, and its
address is always tcp://<cluster>-scheduler.<namespace>.svc.cluster.local:8786
(dask_kubernetes/operator/controller/controller.py,
build_worker_deployment_spec). `dask worker` reads the scheduler address from
DASK_SCHEDULER_ADDRESS, so with TLS the container sets it to the tls://
address itself and the operator leaves it alone.
Worker and scheduler containers get the scheduler, worker and client
certificate settings (one certificate): a task's worker_client and a
`kubectl exec ... daskyard doctor` connect as clients.
*/}}
{{- define "daskyard.workerPodSpec" -}}
{{- $ctx := .ctx }}
{{- $w := .worker }}
{{- $tls := $ctx.Values.tls.enabled }}
{{- $limits := required "worker resources.limits (cpu and memory) are required: they set --nthreads and --memory-limit" $w.resources.limits }}
{{- $gpus := get $limits "nvidia.com/gpu" }}
automountServiceAccountToken: false
{{- with $ctx.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $ctx.Values.podSecurityContext | nindent 2 }}
{{- with $w.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $w.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $w.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $w.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
containers:
  - name: worker
    image: {{ include "daskyard.image" $ctx }}
    imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
    args:
      - dask
      - worker
      - --name
      - $(DASK_WORKER_NAME)
      - --nthreads
      - {{ include "daskyard.threads" (required "worker resources.limits.cpu is required" $limits.cpu) | quote }}
      - --memory-limit
      - {{ include "daskyard.bytes" (required "worker resources.limits.memory is required" $limits.memory) | quote }}
      - --local-directory
      - /scratch
      - --dashboard-address
      - {{ printf ":%s" (include "daskyard.port.http" $ctx) | quote }}
      {{- with $gpus }}
      - --resources
      - {{ printf "GPU=%v" . | quote }}
      {{- end }}
      {{- if $tls }}
      - --protocol
      - tls
      {{- end }}
      {{- with $w.extraArgs }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    {{- if or $tls $w.extraEnv $w.tuneForTraining }}
    env:
      {{- if $tls }}
      - name: DASK_SCHEDULER_ADDRESS
        value: {{ include "daskyard.schedulerAddress" (dict "ctx" $ctx "cluster" (required "workerPodSpec needs the cluster name" .cluster)) }}
      {{- include "daskyard.tls.env" (dict "ctx" $ctx "roles" (list "scheduler" "worker" "client")) | nindent 6 }}
      {{- end }}
      {{- if $w.tuneForTraining }}
      {{- include "daskyard.trainingEnv" $limits.memory | nindent 6 }}
      {{- end }}
      {{- with $w.extraEnv }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    {{- end }}
    {{- with include "daskyard.objectStorageEnvFrom" $ctx | trim }}
    {{- . | nindent 4 }}
    {{- end }}
    ports:
      - name: http-dashboard
        containerPort: {{ include "daskyard.port.http" $ctx }}
        protocol: TCP
    livenessProbe:
      httpGet:
        path: /health
        port: http-dashboard
      initialDelaySeconds: 15
      periodSeconds: 20
      timeoutSeconds: 5
      failureThreshold: 6
    readinessProbe:
      httpGet:
        path: /health
        port: http-dashboard
      initialDelaySeconds: 5
      periodSeconds: 10
      timeoutSeconds: 5
    resources:
      {{- include "daskyard.resources" $w.resources | nindent 6 }}
    securityContext:
      {{- toYaml $ctx.Values.containerSecurityContext | nindent 6 }}
    volumeMounts:
      - name: tmp
        mountPath: /tmp
      - name: scratch
        mountPath: /scratch
      {{- if $tls }}
      {{- include "daskyard.tls.volumeMount" $ctx | nindent 6 }}
      {{- end }}
volumes:
  {{- include "daskyard.tmpVolume" $w.tmpSizeLimit | nindent 2 }}
  - name: scratch
    emptyDir:
      sizeLimit: {{ $w.scratchSizeLimit }}
  {{- if $tls }}
  {{- include "daskyard.tls.volume" $ctx | nindent 2 }}
  {{- end }}
{{- end }}

{{/*
What daskyard.cluster gives embedded workers (QUIET_CLUSTER_CONFIG and
worker_malloc_environ), as a worker's environment: the malloc variables go
through the nanny's pre-spawn settings (merged with distributed's own, which
set OMP_NUM_THREADS=1), because glibc reads them when the process starts.
Usage: include "daskyard.trainingEnv" <memory limit quantity>
*/}}
{{- define "daskyard.trainingEnv" -}}
{{- $bytes := int64 (include "daskyard.bytes" .) }}
{{- $trim := min 67108864 (max 1048576 (div $bytes 128)) }}
{{- $mmap := min 33554432 (div $trim 2) }}
- name: DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED
  value: "False"
- name: DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL
  value: "1s"
- name: DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON
  value: {{ printf "{\"MALLOC_TRIM_THRESHOLD_\": %d, \"MALLOC_MMAP_THRESHOLD_\": %d}" $trim $mmap | quote }}
{{- end }}

{{/*
Worker pod metadata (labels and annotations).
Usage: include "daskyard.workerMetadata" (dict "worker" $w)
*/}}
{{- define "daskyard.workerMetadata" -}}
labels:
  app.kubernetes.io/component: worker
  {{- with .worker.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with .worker.podAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
