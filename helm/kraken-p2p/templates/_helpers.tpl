{{/*
Chart name, truncated to 63 characters (a DNS label).
*/}}
{{- define "kraken.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Fully qualified release name. Component names append "-tracker", "-origin", ... so keep
it short: origin pod names (<fullname>-origin-<i>) must stay within 63 characters.
*/}}
{{- define "kraken.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "kraken.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Component names. */}}
{{- define "kraken.redis.fullname" -}}
{{- printf "%s-redis" (include "kraken.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kraken.tracker.fullname" -}}
{{- printf "%s-tracker" (include "kraken.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The origin StatefulSet and its headless Service share this name. */}}
{{- define "kraken.origin.fullname" -}}
{{- printf "%s-origin" (include "kraken.fullname" .) | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{- define "kraken.agent.fullname" -}}
{{- printf "%s-agent" (include "kraken.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Common labels. Call with (dict "root" $ "component" "tracker").
*/}}
{{- define "kraken.labels" -}}
helm.sh/chart: {{ include "kraken.chart" .root }}
{{ include "kraken.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: kraken-p2p
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Selector labels. Call with (dict "root" $ "component" "tracker").
*/}}
{{- define "kraken.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kraken.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The kraken-p2p image. */}}
{{- define "kraken.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) -}}
{{- end -}}

{{/*
Wiring: the addresses components are given. All are host:port strings.
*/}}

{{/* Redis, in-chart or external. */}}
{{- define "kraken.redis.addr" -}}
{{- if .Values.redis.enabled -}}
{{- printf "%s.%s.svc.%s:%d" (include "kraken.redis.fullname" .) .Release.Namespace .Values.clusterDomain (int .Values.redis.port) -}}
{{- else -}}
{{- required "redis.external.addr (host:port) is required when redis.enabled is false" .Values.redis.external.addr -}}
{{- end -}}
{{- end -}}

{{/* The tracker Service; agents and origins announce to it. */}}
{{- define "kraken.tracker.addr" -}}
{{- printf "%s.%s.svc.%s:%d" (include "kraken.tracker.fullname" .) .Release.Namespace .Values.clusterDomain (int .Values.tracker.port) -}}
{{- end -}}

{{/*
Ring member name of one origin: its stable DNS name through the headless Service.
Call with (dict "root" $ "ordinal" 0). An origin's `advertise` is exactly this string.
*/}}
{{- define "kraken.origin.member" -}}
{{- $sts := include "kraken.origin.fullname" .root -}}
{{- printf "%s-%d.%s.%s.svc.%s:%d" $sts (int .ordinal) $sts .root.Release.Namespace .root.Values.clusterDomain (int .root.Values.origin.port) -}}
{{- end -}}

{{/* Every ring member, as YAML list items (one per line, no leading newline). */}}
{{- define "kraken.origin.members" -}}
{{- include "kraken.origin.membersRaw" . | trim -}}
{{- end -}}

{{- define "kraken.origin.membersRaw" -}}
{{- $root := . -}}
{{- range $i := until (int .Values.origin.replicaCount) }}
- {{ include "kraken.origin.member" (dict "root" $root "ordinal" $i) | quote }}
{{- end -}}
{{- end -}}

{{/*
Refuses more than one gunicorn worker for agents and origins: the worker owns the host's
libtorrent session. Call with (dict "component" "agent" "config" .Values.agent.config).
*/}}
{{- define "kraken.oneWorker" -}}
{{- $workers := 1 -}}
{{- with .config -}}
{{- with .server -}}
{{- with .gunicorn -}}
{{- with .workers -}}
{{- $workers = . -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if gt (int $workers) 1 -}}
{{- fail (printf "%s.config.server.gunicorn.workers must be 1: the one worker owns the host's libtorrent session" .component) -}}
{{- end -}}
{{- end -}}
