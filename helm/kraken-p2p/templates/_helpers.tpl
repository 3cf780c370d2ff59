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

{{- define "kraken.buildindex.fullname" -}}
{{- printf "%s-buildindex" (include "kraken.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kraken.proxy.fullname" -}}
{{- printf "%s-proxy" (include "kraken.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kraken.nginx.fullname" -}}
{{- printf "%s-nginx" (include "kraken.fullname" .) | trunc 63 | trimSuffix "-" -}}
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

{{/* The build-index Service; the proxy and agents resolve tags through it. */}}
{{- define "kraken.buildindex.addr" -}}
{{- printf "%s.%s.svc.%s:%d" (include "kraken.buildindex.fullname" .) .Release.Namespace .Values.clusterDomain (int .Values.buildindex.port) -}}
{{- end -}}

{{/* The proxy Service (docker push and pull). */}}
{{- define "kraken.proxy.addr" -}}
{{- printf "%s.%s.svc.%s:%d" (include "kraken.proxy.fullname" .) .Release.Namespace .Values.clusterDomain (int .Values.proxy.port) -}}
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

{{/*
The generated config's `extends:`: base.yaml, then the component's Secret-mounted config
file when <component>.secretConfig.secretName is set (maps merge key by key, lists replace).
Call with (dict "root" $ "component" "origin").
*/}}
{{- define "kraken.extends" -}}
{{- $values := index .root.Values .component -}}
{{- $secret := $values.secretConfig | default dict -}}
{{- if $secret.secretName -}}
["base.yaml", {{ printf "/etc/kraken-secret/%s" ($secret.key | default "config.yaml") | quote }}]
{{- else -}}
base.yaml
{{- end -}}
{{- end -}}

{{/* The container's extra environment (<component>.extraEnv), e.g. AWS_* from a Secret. */}}
{{- define "kraken.extraEnv" -}}
{{- $values := index .root.Values .component -}}
{{- with $values.extraEnv -}}
{{ toYaml . }}
{{- end -}}
{{- end -}}

{{/* Mount of the Secret-mounted config file, when there is one (a volumeMounts item). */}}
{{- define "kraken.secretConfig.mount" -}}
{{- $values := index .root.Values .component -}}
{{- $secret := $values.secretConfig | default dict -}}
{{- if $secret.secretName -}}
- name: secret-config
  mountPath: /etc/kraken-secret
  readOnly: true
{{- end -}}
{{- end -}}

{{/* The Secret volume for it (a volumes item). */}}
{{- define "kraken.secretConfig.volume" -}}
{{- $values := index .root.Values .component -}}
{{- $secret := $values.secretConfig | default dict -}}
{{- if $secret.secretName -}}
- name: secret-config
  secret:
    secretName: {{ $secret.secretName | quote }}
    items:
      - key: {{ $secret.key | default "config.yaml" | quote }}
        path: {{ $secret.key | default "config.yaml" | quote }}
{{- end -}}
{{- end -}}

{{/*
One component's nginx.conf: files/nginx.conf with its placeholders replaced (the integration
test tests/integration/test_nginx.py does the same replacement). nginx listens on the
component's Service port; the component itself is on 127.0.0.1:<upstream port> in the pod.
Call with (dict "root" $ "listen" 7602 "upstream" 17602).
*/}}
{{- define "kraken.nginx.conf" -}}
{{- $conf := .root.Files.Get "files/nginx.conf" -}}
{{- $conf = $conf | replace "@LISTEN@" (printf "%d" (int .listen)) -}}
{{- $conf = $conf | replace "@UPSTREAM@" (printf "127.0.0.1:%d" (int .upstream)) -}}
{{- $conf = $conf | replace "@ERROR_LOG@" "stderr" | replace "@ACCESS_LOG@" "/dev/stdout" -}}
{{- required "files/nginx.conf is missing from the chart" $conf -}}
{{- end -}}

{{/*
The nginx sidecar container. Call with (dict "root" $ "component" "tracker" "port" 7602).
nginx runs with its prefix in an emptyDir (pid, temp directories), so the ConfigMap stays
read-only and the image's user does not matter.
*/}}
{{- define "kraken.nginx.container" -}}
{{- $nginx := .root.Values.nginx -}}
- name: nginx
  image: "{{ $nginx.image.repository }}:{{ $nginx.image.tag }}"
  imagePullPolicy: {{ $nginx.image.pullPolicy }}
  command:
    - nginx
    - -p
    - /var/lib/kraken-nginx/
    - -e
    - stderr
    - -c
    - /etc/nginx/kraken/{{ .component }}.conf
  ports:
    - name: http
      containerPort: {{ int .port }}
      protocol: TCP
  livenessProbe:
    tcpSocket:
      port: http
    initialDelaySeconds: 5
    periodSeconds: 10
  {{- with $nginx.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  resources:
    {{- toYaml $nginx.resources | nindent 4 }}
  volumeMounts:
    - name: nginx-config
      mountPath: /etc/nginx/kraken
      readOnly: true
    - name: nginx-run
      mountPath: /var/lib/kraken-nginx
{{- end -}}

{{/* The sidecar's volumes (volumes items). */}}
{{- define "kraken.nginx.volumes" -}}
- name: nginx-config
  configMap:
    name: {{ include "kraken.nginx.fullname" . }}
- name: nginx-run
  emptyDir: {}
{{- end -}}
