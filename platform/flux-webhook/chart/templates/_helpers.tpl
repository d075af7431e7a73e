{{- /* The base name of the objects and of the app.kubernetes.io/name label: flux-webhook,
whatever the chart is published as (bp-flux-webhook). */ -}}
{{- define "flux-webhook.name" -}}
{{- .Values.nameOverride | default "flux-webhook" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "flux-webhook.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "flux-webhook.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "flux-webhook.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flux-webhook.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "flux-webhook.labels" -}}
{{ include "flux-webhook.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "flux-webhook.host" -}}
flux-webhook.{{ .Values.locationCode }}.{{ .Values.sovereignDomain }}
{{- end -}}

{{- /* "true" when enrollment has something to enroll (otherwise it is off). */ -}}
{{- define "flux-webhook.enrolling" -}}
{{- $e := .Values.enrollment -}}
{{- if or $e.organizations $e.repositories $e.scopesConfigMap $e.followed }}true{{ end -}}
{{- end -}}

{{- /* The namespace of the kubeconfig Secrets registering more clusters. */ -}}
{{- define "flux-webhook.clustersNamespace" -}}
{{- .Values.clusters.secretsNamespace | default (printf "%s-clusters" .Release.Namespace) -}}
{{- end -}}

{{- define "flux-webhook.image" -}}
{{- $registry := .Values.global.imageRegistry | default .Values.image.registry -}}
{{- $ref := printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- if $registry }}{{ $ref = printf "%s/%s" $registry $ref }}{{ end -}}
{{- if .Values.image.digest }}{{ $ref = printf "%s@%s" $ref .Values.image.digest }}{{ end -}}
{{- $ref -}}
{{- end -}}

{{- /* 90% of a memory quantity (Ki Mi Gi Ti, k M G T, or bytes) as GOMEMLIMIT in MiB;
empty when the quantity is empty. Fails on a quantity it cannot read. */ -}}
{{- define "flux-webhook.goMemLimit" -}}
{{- $q := toString . -}}
{{- if $q -}}
{{- $m := regexFind "^[0-9]+(\\.[0-9]+)?" $q -}}
{{- $unit := trimPrefix $m $q -}}
{{- $factors := dict "" 1.0 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "k" 1000.0 "M" 1000000.0 "G" 1000000000.0 "T" 1000000000000.0 -}}
{{- if or (not $m) (not (hasKey $factors $unit)) -}}
{{- fail (printf "resources.limits.memory %q: want a number with an optional unit of Ki Mi Gi Ti k M G T (GOMEMLIMIT is derived from it)" $q) -}}
{{- end -}}
{{- $mib := floor (divf (mulf (float64 $m) (get $factors $unit) 0.9) 1048576.0) -}}
{{- printf "%dMiB" (int64 $mib) -}}
{{- end -}}
{{- end -}}

{{- /* A NetworkPolicy peer selecting namespaces by name. */ -}}
{{- define "flux-webhook.namespacePeer" -}}
- namespaceSelector:
    matchExpressions:
      - key: kubernetes.io/metadata.name
        operator: In
        values:
          {{- toYaml . | nindent 10 }}
{{- end -}}
