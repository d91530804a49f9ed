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

{{/* The Secret the chart creates for values given inline (tokens, passwords, admin token). */}}
{{- define "ryze-bridge.chartSecretName" -}}
{{- printf "%s-tokens" (include "ryze-bridge.fullname" .) }}
{{- end }}

{{/* The Secret holding the tenant tokens: instance tokens and the discovery account token. */}}
{{- define "ryze-bridge.secretName" -}}
{{- default (include "ryze-bridge.chartSecretName" .) .Values.existingSecret }}
{{- end }}

{{/* The Secret holding the sink password ("" when there is none). */}}
{{- define "ryze-bridge.sinkSecretName" -}}
{{- $c := .Values.sinkCredentials -}}
{{- if $c.existingSecret }}{{ $c.existingSecret }}{{ else if $c.password }}{{ include "ryze-bridge.chartSecretName" . }}{{ end -}}
{{- end }}

{{/* "true" when the chart makes the admin token itself (neither value nor existingSecret). */}}
{{- define "ryze-bridge.adminTokenGenerated" -}}
{{- $a := .Values.adminToken -}}
{{- if not (or $a.value $a.existingSecret) }}
{{- if not $a.generate }}
{{- fail "adminToken: give value or existingSecret, or set generate: true (the admin port listens on the pod's IP and is never left without a token)" }}
{{- end }}true
{{- end -}}
{{- end }}

{{- define "ryze-bridge.generatedAdminSecretName" -}}
{{- printf "%s-admin" (include "ryze-bridge.fullname" .) }}
{{- end }}

{{/* The generated admin token, base64: the cluster's (lookup) when the Secret exists, else
random; drawn once per render and kept in .Values (shared by the templates), so the Secret
and the pods' checksum/admin-token annotation agree. */}}
{{- define "ryze-bridge.generatedAdminToken" -}}
{{- if not (hasKey .Values "_generatedAdminToken") }}
{{- $key := .Values.adminToken.key }}
{{- $token := randAlphaNum 48 | b64enc }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "ryze-bridge.generatedAdminSecretName" .) }}
{{- if and $existing $existing.data (hasKey $existing.data $key) }}
{{- $token = index $existing.data $key }}
{{- end }}
{{- $_ := set .Values "_generatedAdminToken" $token }}
{{- end }}
{{- .Values._generatedAdminToken }}
{{- end }}

{{/* The Secret holding the admin API's bearer token (always one: given or generated). */}}
{{- define "ryze-bridge.adminSecretName" -}}
{{- $a := .Values.adminToken -}}
{{- if $a.existingSecret }}{{ $a.existingSecret }}{{ else if $a.value }}{{ include "ryze-bridge.chartSecretName" . }}{{ else if include "ryze-bridge.adminTokenGenerated" . }}{{ include "ryze-bridge.generatedAdminSecretName" . }}{{ end -}}
{{- end }}

{{/* "true" when the admin port serves HTTPS (config.admin.tls_cert_file is set). */}}
{{- define "ryze-bridge.adminTLS" -}}
{{- $admin := default dict .Values.config.admin -}}
{{- if $admin.tls_cert_file }}true{{ end -}}
{{- end }}

{{/* File names under the token directory that are not instance tokens. */}}
{{- define "ryze-bridge.reservedTokenFiles" -}}account-token sink-password admin-token{{- end }}

{{/* The projected Secret sources mounted at the token directory. The tenant Secret is
projected whole (each key a file of its name), so adding an instance changes the ConfigMap
only, never the pod template: configReload live adds it without a rollout, and a key not yet
in the Secret cannot keep the pod from starting. Only instances with a tokenKey (and the
discovery account token) are mapped, the instances' items optional; the sink password and the
admin token come from their own Secrets under fixed file names. Empty when nothing is mounted. */}}
{{- define "ryze-bridge.tokenSources" -}}
{{- $sources := list -}}
{{- $tenants := include "ryze-bridge.secretName" . -}}
{{- if or .Values.instances .Values.discovery.enabled }}
{{- $sources = append $sources (dict "secret" (dict "name" $tenants)) -}}
{{- end }}
{{- if .Values.existingSecret }}
{{- $items := list -}}
{{- range $name, $instance := .Values.instances }}
{{- if and $instance.tokenKey (ne $instance.tokenKey $name) }}
{{- $items = append $items (dict "key" $instance.tokenKey "path" $name) -}}
{{- end }}
{{- end }}
{{- if $items }}
{{- $sources = append $sources (dict "secret" (dict "name" $tenants "items" $items "optional" true)) -}}
{{- end }}
{{- end }}
{{- if and .Values.discovery.enabled (ne .Values.discovery.accountTokenKey "account-token") }}
{{- $sources = append $sources (dict "secret" (dict "name" $tenants "items" (list (dict "key" .Values.discovery.accountTokenKey "path" "account-token")))) -}}
{{- end }}
{{- with include "ryze-bridge.sinkSecretName" . }}
{{- $sources = append $sources (dict "secret" (dict "name" . "items" (list (dict "key" $.Values.sinkCredentials.key "path" "sink-password")))) -}}
{{- end }}
{{- with include "ryze-bridge.adminSecretName" . }}
{{- $sources = append $sources (dict "secret" (dict "name" . "items" (list (dict "key" $.Values.adminToken.key "path" "admin-token")))) -}}
{{- end }}
{{- if $sources }}{{ toYaml $sources }}{{ end -}}
{{- end }}

{{/* A probe from values: an httpGet probe gets scheme HTTPS when the admin port serves TLS
(unless the values name a scheme). */}}
{{- define "ryze-bridge.probe" -}}
{{- $probe := deepCopy .probe -}}
{{- if and $probe.httpGet (include "ryze-bridge.adminTLS" .root) (not $probe.httpGet.scheme) }}
{{- $_ := set $probe.httpGet "scheme" "HTTPS" -}}
{{- end }}
{{- toYaml $probe }}
{{- end }}

{{- define "ryze-bridge.tokenDir" -}}/var/run/secrets/ryze-bridge{{- end }}

{{/* The bridge's config file: .Values.config plus instances, spool dir, admin, shutdown. */}}
{{- define "ryze-bridge.config" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- $instances := dict -}}
{{- range $name, $instance := .Values.instances }}
{{- $entry := omit $instance "token" "tokenKey" -}}
{{- $_ := set $entry "token_file" (printf "%s/%s" (include "ryze-bridge.tokenDir" $) $name) -}}
{{- $_ := set $instances $name $entry -}}
{{- end }}
{{- $_ := set $cfg "instances" $instances -}}
{{- if .Values.discovery.enabled }}
{{- $d := .Values.discovery -}}
{{- $_ := set $cfg "discovery" (dict "token_file" (printf "%s/account-token" (include "ryze-bridge.tokenDir" $)) "include" $d.include "exclude" $d.exclude "refresh_seconds" $d.refreshSeconds "events" $d.events "media_base64" $d.mediaBase64 "manage_config" $d.manageConfig) -}}
{{- end }}
{{- if include "ryze-bridge.sinkSecretName" . }}
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
{{- /* no host: the pod's IP comes from the downward API (RYZE_BRIDGE__ADMIN__HOST) */}}
{{- $admin = omit $admin "host" -}}
{{- if include "ryze-bridge.adminSecretName" . }}
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
