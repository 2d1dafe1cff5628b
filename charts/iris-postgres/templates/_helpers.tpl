{{- define "iris-postgres.fullname" -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "iris-postgres.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "iris-postgres.labels" -}}
{{ include "iris-postgres.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | quote }}
app.kubernetes.io/part-of: iris-mlops
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The passwords: the Secret's when it exists (an upgrade), else new ones. Computed once
per render, in secrets.yaml, so every Secret made from them agrees. */}}
{{- define "iris-postgres.passwords" -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "iris-postgres.fullname" .) -}}
{{- $passwords := dict -}}
{{- range $role := list "postgres" "mlflow" "prefect" "feedback" -}}
{{- $key := printf "%s-password" $role -}}
{{- if and $existing (hasKey ($existing.data | default dict) $key) -}}
{{- $_ := set $passwords $role (index $existing.data $key | b64dec) -}}
{{- else -}}
{{- $_ := set $passwords $role (randAlphaNum 32) -}}
{{- end -}}
{{- end -}}
{{- toJson $passwords -}}
{{- end -}}
