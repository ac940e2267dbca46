{{/*
TLS between the parts. Whatever makes the certificates (the chart, or cert-manager), they
land in the same Secrets, so the pods look the same either way:
  <fullname>-origin-<i>-tls, <fullname>-tracker-tls, <fullname>-proxy-tls
      tls.crt, tls.key, ca.crt (the cluster CA), one per origin, the tracker and the proxy
  <fullname>-agents-ca
      tls.crt, tls.key: the agents-only CA, from which each agent makes its own certificate
Every pod mounts what it needs of them at /etc/shoal-tls.
*/}}

{{/* "https" with TLS on, "http" without. */}}
{{- define "shoal.scheme" -}}
{{- ternary "https" "http" .Values.tls.enabled -}}
{{- end -}}

{{/* The Secret of one certificate: (list $ "tracker"), (list $ "proxy") or (list $ <origin ordinal>). */}}
{{- define "shoal.tls.secretName" -}}
{{- $root := index . 0 -}}
{{- $what := index . 1 -}}
{{- if kindIs "string" $what -}}
{{- printf "%s-tls" (include "shoal.component" (list $root $what)) -}}
{{- else -}}
{{- printf "%s-%d-tls" (include "shoal.component" (list $root "origin")) (int $what) -}}
{{- end -}}
{{- end -}}

{{- define "shoal.tls.agentsCaSecret" -}}
{{- include "shoal.component" (list . "agents-ca") -}}
{{- end -}}

{{/* The generated cluster CA, key included; no pod mounts it. */}}
{{- define "shoal.tls.caSecret" -}}
{{- include "shoal.component" (list . "tls-ca") -}}
{{- end -}}

{{/*
The DNS names of one certificate, as a JSON list; call as shoal.tls.secretName. An origin's
first name is its peer name (<pod>.origin.shoal, from which its peer id comes); then the
name the others reach it by (its entry in cluster.members), and the headless Service's own
name, which a scraper can check every origin's certificate against.
*/}}
{{- define "shoal.tls.dnsNames" -}}
{{- $root := index . 0 -}}
{{- $what := index . 1 -}}
{{- $ns := $root.Release.Namespace -}}
{{- if kindIs "string" $what -}}
{{- $svc := include "shoal.component" (list $root $what) -}}
{{- toJson (list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns $root.Values.clusterDomain)) -}}
{{- else -}}
{{- $pod := printf "%s-%d" (include "shoal.component" (list $root "origin")) (int $what) -}}
{{- $svc := include "shoal.origin.serviceName" $root -}}
{{- toJson (list (printf "%s.origin.shoal" $pod) (printf "%s.%s" $pod (include "shoal.origin.domain" $root)) (printf "%s.%s.%s.svc" $pod $svc $ns) (printf "%s.%s.svc.%s" $svc $ns $root.Values.clusterDomain)) -}}
{{- end -}}
{{- end -}}

{{/*
A part's [tls] table, as JSON. The origin's cert and key (each pod its own) and the agent's
name (its node's) come from the environment: see shoal.tls.env.
*/}}
{{- define "shoal.tls.table" -}}
{{- $root := index . 0 -}}
{{- $part := index . 1 -}}
{{- if not $root.Values.tls.enabled -}}
{{- toJson (dict "plaintext" true) -}}
{{- else if eq $part "agent" -}}
{{- toJson (dict "ca" "/etc/shoal-tls/ca.crt" "agent_ca" "/etc/shoal-tls/issuer.crt" "issuer_cert" "/etc/shoal-tls/issuer.crt" "issuer_key" "/etc/shoal-tls/issuer.key") -}}
{{- else if eq $part "origin" -}}
{{- toJson (dict "ca" "/etc/shoal-tls/ca.crt" "agent_ca" "/etc/shoal-tls/agent-ca.crt") -}}
{{- else -}}
{{- toJson (dict "ca" "/etc/shoal-tls/ca.crt" "agent_ca" "/etc/shoal-tls/agent-ca.crt" "cert" "/etc/shoal-tls/tls.crt" "key" "/etc/shoal-tls/tls.key") -}}
{{- end -}}
{{- end -}}

{{/* Environment entries for TLS; origins need POD_NAME set before these. Call with (list $ "origin"). */}}
{{- define "shoal.tls.env" -}}
{{- $root := index . 0 -}}
{{- $part := index . 1 -}}
{{- if $root.Values.tls.enabled -}}
{{- if eq $part "origin" }}
- name: SHOAL_ORIGIN_TLS__CERT
  value: "/etc/shoal-tls/$(POD_NAME).crt"
- name: SHOAL_ORIGIN_TLS__KEY
  value: "/etc/shoal-tls/$(POD_NAME).key"
{{- else if eq $part "agent" }}
# The agent's certificate names its node: <node>.agent.shoal, and its peer id follows.
- name: SHOAL_AGENT_TLS__NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
{{- end }}
{{- end -}}
{{- end -}}

{{/* The volume mount of the TLS files. Call with $. */}}
{{- define "shoal.tls.mount" -}}
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: /etc/shoal-tls
  readOnly: true
{{- end -}}
{{- end -}}

{{/*
The volume of a part's TLS files: its certificate, key and the cluster CA from its own
Secret (every origin's, named after its pod: a StatefulSet's pods share one template), the
agents CA's certificate; for agents, the agents CA's key and the cluster CA instead.
Call with (list $ "origin").
*/}}
{{- define "shoal.tls.volume" -}}
{{- $root := index . 0 -}}
{{- $part := index . 1 -}}
{{- if $root.Values.tls.enabled }}
- name: tls
  projected:
    defaultMode: 0440
    sources:
      {{- if eq $part "agent" }}
      - secret:
          name: {{ include "shoal.tls.agentsCaSecret" $root }}
          items:
            - {key: tls.crt, path: issuer.crt}
            - {key: tls.key, path: issuer.key}
      - secret:
          name: {{ include "shoal.tls.secretName" (list $root "tracker") }}
          items:
            - {key: ca.crt, path: ca.crt}
      {{- else }}
      {{- if eq $part "origin" }}
      {{- $sts := include "shoal.component" (list $root "origin") }}
      {{- range $i := until (int $root.Values.origin.replicas) }}
      - secret:
          name: {{ include "shoal.tls.secretName" (list $root $i) }}
          items:
            - {key: tls.crt, path: {{ printf "%s-%d.crt" $sts $i }}}
            - {key: tls.key, path: {{ printf "%s-%d.key" $sts $i }}}
            {{- if eq $i 0 }}
            - {key: ca.crt, path: ca.crt}
            {{- end }}
      {{- end }}
      {{- else }}
      - secret:
          name: {{ include "shoal.tls.secretName" (list $root $part) }}
          items:
            - {key: tls.crt, path: tls.crt}
            - {key: tls.key, path: tls.key}
            - {key: ca.crt, path: ca.crt}
      {{- end }}
      - secret:
          name: {{ include "shoal.tls.agentsCaSecret" $root }}
          items:
            - {key: tls.crt, path: agent-ca.crt}
      {{- end }}
{{- end -}}
{{- end -}}
