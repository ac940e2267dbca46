{{/* Names, labels, addresses, and the TOML writer every part's ConfigMap uses. */}}

{{- define "shoal.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "shoal.fullname" -}}
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

{{/*
A part's object name. 52 characters at most: a StatefulSet's pods add "-<ordinal>" and its
revision label a hash, and both must stay within 63.
Call with (list $ "origin").
*/}}
{{- define "shoal.component" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" (include "shoal.fullname" $root) (index . 1) | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{- define "shoal.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Call with (list $ "origin"). */}}
{{- define "shoal.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "shoal.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* Call with (list $ "origin"). */}}
{{- define "shoal.labels" -}}
{{- $root := index . 0 -}}
helm.sh/chart: {{ include "shoal.chart" $root }}
{{ include "shoal.selectorLabels" . }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: shoal
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
{{- with $root.Values.commonLabels }}
{{ toYaml . }}
{{- end -}}
{{- end -}}

{{- define "shoal.image" -}}
{{- $img := .Values.image -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{- define "shoal.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "shoal.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The arguments every binary takes: its config file and how to log. Call with (list $ "origin"). */}}
{{- define "shoal.args" -}}
{{- $root := index . 0 -}}
- --config
- /etc/shoal/{{ index . 1 }}.toml
- --log
- {{ $root.Values.log.level | quote }}
- --log-format
- {{ $root.Values.log.format | quote }}
{{- end -}}

{{/* The headless Service that gives each origin pod its DNS name; same name as the StatefulSet. */}}
{{- define "shoal.origin.serviceName" -}}
{{- include "shoal.component" (list . "origin") -}}
{{- end -}}

{{/* The DNS suffix of every origin pod: <service>.<namespace>.svc.<domain>. */}}
{{- define "shoal.origin.domain" -}}
{{- printf "%s.%s.svc.%s" (include "shoal.origin.serviceName" .) .Release.Namespace .Values.clusterDomain -}}
{{- end -}}

{{/*
Every origin's base URL, as a JSON list: the per-pod DNS names of the StatefulSet. Origins,
trackers, proxies and agents all get this same list, because blobs are placed on origins by
hashing these exact strings.
*/}}
{{- define "shoal.origin.members" -}}
{{- $members := list -}}
{{- $sts := include "shoal.component" (list . "origin") -}}
{{- $domain := include "shoal.origin.domain" . -}}
{{- range $i := until (int .Values.origin.replicas) -}}
{{- $members = append $members (printf "%s://%s-%d.%s:%d" (include "shoal.scheme" $) $sts $i $domain (int $.Values.origin.port)) -}}
{{- end -}}
{{- toJson $members -}}
{{- end -}}

{{- define "shoal.tracker.url" -}}
{{- printf "%s://%s.%s.svc.%s:%d" (include "shoal.scheme" .) (include "shoal.component" (list . "tracker")) .Release.Namespace .Values.clusterDomain (int .Values.tracker.port) -}}
{{- end -}}

{{/* Whether agents announce the node's IP, and so whether the tracker must trust it. */}}
{{- define "shoal.agent.advertises" -}}
{{- if and .Values.agent.enabled .Values.agent.advertiseNodeIP -}}true{{- end -}}
{{- end -}}

{{/*
TOML writing. Helm's toToml writes every number from values as a float ("3.0"), which the
parts' integer keys refuse, so the chart writes TOML itself: whole numbers as integers,
strings as JSON strings (valid TOML basic strings), tables as [sections]. A null value
leaves its key out, as Helm's own merging does.
*/}}
{{- define "shoal.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . -}}{{ . }}{{- else -}}{{ toJson . }}{{- end -}}
{{- end -}}

{{- define "shoal.toml.value" -}}
{{- $v := . -}}
{{- if kindIs "string" $v -}}{{ toJson $v }}
{{- else if kindIs "bool" $v -}}{{ $v }}
{{- else if kindIs "float64" $v -}}{{ if eq $v (floor $v) }}{{ int64 $v }}{{ else }}{{ $v }}{{ end }}
{{- else if or (kindIs "int" $v) (kindIs "int64" $v) -}}{{ $v }}
{{- else if kindIs "slice" $v -}}[{{ range $i, $e := $v }}{{ if $i }}, {{ end }}{{ include "shoal.toml.value" $e }}{{ end }}]
{{- else if kindIs "map" $v -}}{ {{- range $i, $k := keys $v | sortAlpha }}{{ if $i }}, {{ end }}{{ include "shoal.toml.key" $k }} = {{ include "shoal.toml.value" (index $v $k) }}{{ end -}} }
{{- else -}}{{ fail (printf "a config value of kind %s cannot be written as TOML" (kindOf $v)) }}
{{- end -}}
{{- end -}}

{{/* Call with (dict "table" $map "prefix" "") */}}
{{- define "shoal.toml.table" -}}
{{- $t := .table -}}
{{- $prefix := .prefix -}}
{{- range $k := keys $t | sortAlpha -}}
{{- $v := index $t $k -}}
{{- if and (not (kindIs "map" $v)) (not (kindIs "invalid" $v)) }}
{{ include "shoal.toml.key" $k }} = {{ include "shoal.toml.value" $v }}
{{- end -}}
{{- end -}}
{{- range $k := keys $t | sortAlpha -}}
{{- $v := index $t $k -}}
{{- if kindIs "map" $v -}}
{{- $name := ternary (include "shoal.toml.key" $k) (printf "%s.%s" $prefix (include "shoal.toml.key" $k)) (eq $prefix "") }}

[{{ $name }}]
{{- include "shoal.toml.table" (dict "table" $v "prefix" $name) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Call with (list $ "origin" $config): the ConfigMap holding <part>.toml. */}}
{{- define "shoal.configMap" -}}
{{- $root := index . 0 -}}
{{- $part := index . 1 -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "shoal.component" (list $root $part) }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "shoal.labels" (list $root $part) | nindent 4 }}
data:
  {{ $part }}.toml: |
    # shoal-{{ $part }} configuration rendered by the chart from values; see
    # deploy/config/{{ $part }}.toml for every key. Environment variables set in the pod
    # (SHOAL_{{ upper $part }}_…) override it.
    {{- include "shoal.toml.table" (dict "table" (index . 2) "prefix" "") | trim | nindent 4 }}
{{- end -}}

{{/* Pod-spec fields that every part shares. Call with (list $ $partValues). */}}
{{- define "shoal.podCommon" -}}
{{- $root := index . 0 -}}
{{- $v := index . 1 -}}
serviceAccountName: {{ include "shoal.serviceAccountName" $root }}
automountServiceAccountToken: false
{{- /*
Kubernetes would otherwise put SHOAL_TRACKER_SERVICE_HOST, SHOAL_PROXY_PORT and the like
into every pod for the chart's Services; the parts read SHOAL_<PART>_* variables as config
keys and would refuse to start on these unknown ones.
*/}}
enableServiceLinks: false
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
terminationGracePeriodSeconds: {{ int $v.terminationGracePeriodSeconds }}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
Liveness on /health, readiness on /ready. Call with (list "http"), (list "http" "127.0.0.1")
or, for a port that serves HTTPS, (list "http" "" "HTTPS") (the kubelet does not verify it).
*/}}
{{- define "shoal.probes" -}}
{{- $port := index . 0 -}}
{{- $host := "" -}}
{{- $scheme := "" -}}
{{- if gt (len .) 1 }}{{ $host = index . 1 }}{{ end -}}
{{- if gt (len .) 2 }}{{ $scheme = index . 2 }}{{ end -}}
livenessProbe:
  httpGet:
    path: /health
    port: {{ $port }}
    {{- with $host }}
    host: {{ . }}
    {{- end }}
    {{- with $scheme }}
    scheme: {{ . }}
    {{- end }}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /ready
    port: {{ $port }}
    {{- with $host }}
    host: {{ . }}
    {{- end }}
    {{- with $scheme }}
    scheme: {{ . }}
    {{- end }}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
startupProbe:
  httpGet:
    path: /health
    port: {{ $port }}
    {{- with $host }}
    host: {{ . }}
    {{- end }}
    {{- with $scheme }}
    scheme: {{ . }}
    {{- end }}
  periodSeconds: 2
  failureThreshold: 60
{{- end -}}

{{/* The Secret holding the cluster's credentials: the one named in values, or the generated one. */}}
{{- define "shoal.credentials.secretName" -}}
{{- default (include "shoal.component" (list . "credentials")) .Values.credentials.existingSecret -}}
{{- end -}}

{{/*
A part's credentials as environment variables from the credentials Secret, one per key:
"write-token" becomes SHOAL_<PART>_CREDENTIALS__WRITE_TOKEN. Never in a ConfigMap, so that
whoever may read the chart's ConfigMaps learns nothing that opens the cluster.
Call with (list $ "origin" (list "write-token" "read-token")).
*/}}
{{- define "shoal.credentialsEnv" -}}
{{- $root := index . 0 -}}
{{- $part := index . 1 -}}
{{- range $key := index . 2 }}
- name: SHOAL_{{ upper $part }}_CREDENTIALS__{{ $key | replace "-" "_" | upper }}
  valueFrom:
    secretKeyRef:
      name: {{ include "shoal.credentials.secretName" $root }}
      key: {{ $key }}
{{- end }}
{{- end -}}

{{/* The Secret holding the proxy's htpasswd file. */}}
{{- define "shoal.proxy.authSecretName" -}}
{{- default (include "shoal.component" (list . "proxy-auth")) .Values.proxy.auth.existingSecret -}}
{{- end -}}

{{/* Whether the chart generates the proxy's user and password (no htpasswd given). */}}
{{- define "shoal.proxy.generatesUser" -}}
{{- $a := .Values.proxy.auth -}}
{{- if and $a.enabled (not $a.existingSecret) (not $a.htpasswd) -}}true{{- end -}}
{{- end -}}
