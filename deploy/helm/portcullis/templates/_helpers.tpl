{{/* Chart name. */}}
{{- define "portcullis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name. */}}
{{- define "portcullis.fullname" -}}
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

{{- define "portcullis.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "portcullis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "portcullis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "portcullis.labels" -}}
helm.sh/chart: {{ include "portcullis.chart" . }}
{{ include "portcullis.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "portcullis.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "portcullis.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding audit.key and audit.pub: existingSecret, or <fullname>-audit-key (created by the chart with auditKey.create, else by you). */}}
{{- define "portcullis.auditKeySecret" -}}
{{- if .Values.auditKey.existingSecret }}
{{- .Values.auditKey.existingSecret }}
{{- else }}
{{- printf "%s-audit-key" (include "portcullis.fullname" .) }}
{{- end }}
{{- end }}

{{/* Refuse values the gateway cannot run with. */}}
{{- define "portcullis.validate" -}}
{{- if gt (int .Values.replicaCount) 1 }}
{{- fail "replicaCount > 1 is not supported: each gateway keeps holds, grants and pins in SQLite in its own data volume; more replicas need [state] backend = \"postgres\", which is not built yet" }}
{{- end }}
{{- if and .Values.auditKey.create (not .Values.auditKey.existingSecret) (or (not .Values.auditKey.keyBase64) (not .Values.auditKey.pubBase64)) }}
{{- fail "auditKey.create=true needs auditKey.keyBase64 and auditKey.pubBase64 (base64 -w0 of audit.key and audit.pub)" }}
{{- end }}
{{- if hasPrefix "/var/lib/portcullis" .Values.auditKey.mountPath }}
{{- fail "auditKey.mountPath must be outside the data directory /var/lib/portcullis" }}
{{- end }}
{{- end }}
