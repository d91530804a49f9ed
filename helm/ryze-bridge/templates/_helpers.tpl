{{/* Chart name, truncated to 63 chars. */}}
{{- define "ryze-bridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name. */}}
{{- define "ryze-bridge.fullname" -}}
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

{{- define "ryze-bridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: name and instance only (they never change). */}}
{{- define "ryze-bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ryze-bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ryze-bridge.labels" -}}
helm.sh/chart: {{ include "ryze-bridge.chart" . }}
{{ include "ryze-bridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "ryze-bridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ryze-bridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the instance tokens (one key per instance). */}}
{{- define "ryze-bridge.secretName" -}}
{{- default (printf "%s-tokens" (include "ryze-bridge.fullname" .)) .Values.existingSecret }}
{{- end }}

{{- define "ryze-bridge.tokenDir" -}}/var/run/secrets/ryze-bridge{{- end }}

{{/* The bridge's config file: .Values.config plus instances, spool dir, admin, shutdown. */}}
{{- define "ryze-bridge.config" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- $instances := dict -}}
{{- range $name, $instance := .Values.instances }}
{{- $entry := omit $instance "token" -}}
{{- $_ := set $entry "token_file" (printf "%s/%s" (include "ryze-bridge.tokenDir" $) $name) -}}
{{- $_ := set $instances $name $entry -}}
{{- end }}
{{- $_ := set $cfg "instances" $instances -}}
{{- if .Values.discovery.enabled }}
{{- $d := .Values.discovery -}}
{{- $_ := set $cfg "discovery" (dict "token_file" (printf "%s/%s" (include "ryze-bridge.tokenDir" $) $d.accountTokenKey) "include" $d.include "exclude" $d.exclude "refresh_seconds" $d.refreshSeconds "events" $d.events "media_base64" $d.mediaBase64 "manage_config" $d.manageConfig) -}}
{{- end }}
{{- if or .Values.sinkCredentials.password .Values.sinkCredentials.fromExistingSecret }}
{{- $sink := deepCopy (default dict $cfg.sink) -}}
{{- $kind := default "kafka" $sink.kind -}}
{{- $section := deepCopy (default dict (get $sink $kind)) -}}
{{- $file := printf "%s/sink-password" (include "ryze-bridge.tokenDir" $) -}}
{{- if eq $kind "kafka" }}{{- $_ := set $section "sasl_password_file" $file -}}{{- else }}{{- $_ := set $section "password_file" $file -}}{{- end }}
{{- $_ := set $sink $kind $section -}}
{{- $_ := set $cfg "sink" $sink -}}
{{- end }}
{{- $reload := deepCopy (default dict $cfg.reload) -}}
{{- $_ := set $reload "watch" (eq .Values.configReload "live") -}}
{{- $_ := set $cfg "reload" $reload -}}
{{- $spool := deepCopy (default dict $cfg.spool) -}}
{{- $_ := set $spool "dir" "/var/lib/ryze-bridge/spool" -}}
{{- $_ := set $cfg "spool" $spool -}}
{{- $admin := deepCopy (default dict $cfg.admin) -}}
{{- $_ := set $admin "host" "0.0.0.0" -}}
{{- if or .Values.adminToken.value .Values.adminToken.fromExistingSecret }}
{{- $_ := set $admin "token_file" (printf "%s/admin-token" (include "ryze-bridge.tokenDir" $)) -}}
{{- end }}
{{- $_ := set $admin "port" .Values.service.port -}}
{{- $_ := set $cfg "admin" $admin -}}
{{- $_ := set $cfg "shutdown_timeout" .Values.shutdownTimeout -}}
{{- if eq (include "ryze-bridge.clusterMode" .) "static" }}
{{- $cluster := deepCopy $cfg.cluster -}}
{{- if not (hasKey $cluster "count") }}{{- $_ := set $cluster "count" (int .Values.replicaCount) -}}{{- end }}
{{- $_ := set $cfg "cluster" $cluster -}}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/* The cluster mode the config asks for ("none" when unset). */}}
{{- define "ryze-bridge.clusterMode" -}}
{{- $cluster := default dict .Values.config.cluster -}}
{{- default "none" $cluster.mode -}}
{{- end }}
