{{- define "iris.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "iris.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "iris.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "iris.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* A component's object name: <fullname>-<component>, 63 characters at most */}}
{{- define "iris.componentName" -}}
{{- printf "%s-%s" (include "iris.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "iris.selectorLabels" -}}
app.kubernetes.io/name: {{ include "iris.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "iris.labels" -}}
{{ include "iris.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: iris-mlops
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* An image reference: images.<name>.repository, with the chart's appVersion as the default tag */}}
{{- define "iris.image" -}}
{{- $image := index .root.Values.images .name -}}
{{- printf "%s:%s" $image.repository (default .root.Chart.AppVersion $image.tag) -}}
{{- end -}}

{{/* onnxruntime's threads: the API's CPU limit as whole CPUs */}}
{{- define "iris.ortThreads" -}}
{{- include "iris.cpuCount" .Values.api.resources.limits.cpu -}}
{{- end -}}

{{/* A CPU quantity as whole CPUs, rounded up, at least 1 ("500m" -> 1, "2" -> 2, 1.5 -> 2) */}}
{{- define "iris.cpuCount" -}}
{{- $cpu := toString . -}}
{{- $threads := 1 -}}
{{- if hasSuffix "m" $cpu -}}
{{- $threads = div (add (trimSuffix "m" $cpu | atoi) 999) 1000 -}}
{{- else -}}
{{- $threads = ceil (float64 $cpu) | int -}}
{{- end -}}
{{- max 1 $threads -}}
{{- end -}}

{{/* The pod and container security settings every pod of the chart runs with */}}
{{- define "iris.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "iris.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end -}}

{{- define "iris.feedbackTokenSecret" -}}
{{- default (include "iris.componentName" (dict "root" . "component" "feedback-token")) .Values.feedbackToken.existingSecret -}}
{{- end -}}

{{/* NetworkPolicy peers */}}
{{- define "iris.dnsEgress" -}}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ .Values.networkPolicy.dns.namespace }}
      podSelector:
        matchLabels:
          {{- toYaml .Values.networkPolicy.dns.pods | nindent 10 }}
  ports:
    - {protocol: UDP, port: {{ .Values.networkPolicy.dns.port }}}
    - {protocol: TCP, port: {{ .Values.networkPolicy.dns.port }}}
{{- end -}}

{{- define "iris.egressTo" -}}
- to:
    - podSelector:
        matchLabels:
          {{- toYaml .pods | nindent 10 }}
  ports:
    - {protocol: TCP, port: {{ .port }}}
{{- end -}}

{{/* A Job's name: <component name>-<hash of its rendered pod template>. The API server
refuses any change to a Job's pod template, so the same name must always mean the same
template: `helm upgrade` then replaces a changed Job by a new one and leaves an unchanged
(finished) one alone. dict "ctx" (root, component) "template" (the pod template as rendered) */}}
{{- define "iris.jobName" -}}
{{- printf "%s-%s" (include "iris.componentName" .ctx | trunc 52 | trimSuffix "-") (.template | sha256sum | trunc 10) -}}
{{- end -}}
