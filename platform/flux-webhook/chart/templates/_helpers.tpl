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

{{- /* The Sovereign's FQDN, the one name the platform gives a Sovereign (its bootstrap kit
sets global.sovereignFQDN: ${SOVEREIGN_FQDN}); empty when not set. 0.2's sovereignDomain and
locationCode are refused with what to set instead. */ -}}
{{- define "flux-webhook.sovereignFQDN" -}}
{{- if or (hasKey .Values "sovereignDomain") (hasKey .Values "locationCode") -}}
{{- fail "sovereignDomain and locationCode were replaced in chart 0.3.0 by global.sovereignFQDN, the Sovereign's one FQDN: set global.sovereignFQDN to <locationCode>.<sovereignDomain> (the host stays flux-webhook.<locationCode>.<sovereignDomain>) and remove both (platform/flux-webhook/README.md, Upgrading)" -}}
{{- end -}}
{{- dig "sovereignFQDN" "" (.Values.global | default dict) -}}
{{- end -}}

{{- /* /hook's host: flux-webhook.<sovereignFQDN>, the Blueprint's endpoint. */ -}}
{{- define "flux-webhook.host" -}}
flux-webhook.{{ include "flux-webhook.sovereignFQDN" . }}
{{- end -}}

{{- /* Where statuses go: giteaUrl, else the Sovereign's Gitea, https://gitea.<sovereignFQDN>
(as the platform's bp-gitea serves it), else empty (logged only). */ -}}
{{- define "flux-webhook.giteaUrl" -}}
{{- $fqdn := include "flux-webhook.sovereignFQDN" . -}}
{{- .Values.giteaUrl | default (ternary (printf "https://gitea.%s" $fqdn) "" (ne $fqdn "")) -}}
{{- end -}}

{{- /* The NetworkPolicy flavor: cilium or kubernetes. auto: a CiliumNetworkPolicy where the
cluster serves cilium.io/v2 (Gateway traffic reaches the pod as Cilium's ingress entity and the
API server is the kube-apiserver entity: no Kubernetes NetworkPolicy can name either), a
Kubernetes NetworkPolicy elsewhere. */ -}}
{{- define "flux-webhook.networkPolicyFlavor" -}}
{{- $f := .Values.networkPolicy.flavor | default "auto" -}}
{{- if eq $f "auto" -}}
{{- ternary "cilium" "kubernetes" (.Capabilities.APIVersions.Has "cilium.io/v2") -}}
{{- else -}}
{{- $f -}}
{{- end -}}
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

{{- /* CiliumNetworkPolicy peers: one endpoint selector per namespace, by Cilium's namespace
label; and a toPorts of TCP ports. */ -}}
{{- define "flux-webhook.ciliumNamespaces" -}}
{{- $out := list -}}
{{- range . }}{{ $out = append $out (dict "matchLabels" (dict "k8s:io.kubernetes.pod.namespace" .)) }}{{ end -}}
{{- toYaml $out -}}
{{- end -}}

{{- define "flux-webhook.ciliumPorts" -}}
{{- $ports := list -}}
{{- range . }}{{ $ports = append $ports (dict "port" (toString .) "protocol" "TCP") }}{{ end -}}
{{- toYaml (list (dict "ports" $ports)) -}}
{{- end -}}
