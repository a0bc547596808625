{{/* The image of brokerport's container and of the gate init container it adds to brokers. */}}
{{- define "brokerport.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end }}

{{/* tls.mode, refused early when it is neither mode: a typo must not install a webhook without a certificate. */}}
{{- define "brokerport.tlsMode" -}}
{{- if not (has .Values.tls.mode (list "cert-manager" "standalone")) -}}
{{- fail (printf "tls.mode: %q: must be cert-manager or standalone" (toString .Values.tls.mode)) -}}
{{- end -}}
{{ .Values.tls.mode }}
{{- end }}

{{/* namespace, refused unless it is a namespace name: it is written into YAML and into CEL string literals as is. */}}
{{- define "brokerport.checkNamespace" -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$" (toString .Values.namespace)) -}}
{{- fail (printf "namespace: %q: must be a namespace name (lowercase letters, digits and '-', at most 63)" (toString .Values.namespace)) -}}
{{- end -}}
{{- end }}
