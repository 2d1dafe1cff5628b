{{/* Combinations the schema cannot express, failed with what to change */}}
{{- define "iris.validate" -}}
{{- if and .Values.api.podDisruptionBudget.enabled (lt (int .Values.api.replicas) 2) -}}
{{- fail "api.podDisruptionBudget.enabled needs api.replicas >= 2 (with one replica the budget blocks every node drain): raise api.replicas or set api.podDisruptionBudget.enabled=false" -}}
{{- end -}}
{{- end -}}
