# Provenance: stringData["configurator.sh"] of Secret redpanda-configurator, case
# "01-default-values" of redpanda-data/redpanda-operator
# charts/redpanda/testdata/template-cases.golden.txtar at commit
# 010c5ab24cf0c0e1b7e11ff31447c165e2e47858, copied by hand as served; everything below this
# header is the chart's script unchanged. The chart runs it with /bin/bash (see the
# redpanda-configurator init container of 01-default-values.statefulset.yaml).
set -xe
SERVICE_NAME=$1
KUBERNETES_NODE_NAME=$2
POD_ORDINAL=${SERVICE_NAME##*-}
BROKER_INDEX=`expr $POD_ORDINAL + 1`

CONFIG=/etc/redpanda/redpanda.yaml

# Setup config files
cp /tmp/base-config/redpanda.yaml "${CONFIG}"

LISTENER="{\"address\":\"${SERVICE_NAME}.redpanda.default.svc.cluster.local.\",\"name\":\"internal\",\"port\":9093}"
rpk redpanda config --config "$CONFIG" set redpanda.advertised_kafka_api[0] "$LISTENER"

ADVERTISED_KAFKA_ADDRESSES=()

PREFIX_TEMPLATE=""
ADVERTISED_KAFKA_ADDRESSES+=("{\"address\":\"${SERVICE_NAME}\",\"name\":\"default\",\"port\":31092}")

PREFIX_TEMPLATE=""
ADVERTISED_KAFKA_ADDRESSES+=("{\"address\":\"${SERVICE_NAME}\",\"name\":\"default\",\"port\":31092}")

PREFIX_TEMPLATE=""
ADVERTISED_KAFKA_ADDRESSES+=("{\"address\":\"${SERVICE_NAME}\",\"name\":\"default\",\"port\":31092}")

rpk redpanda config --config "$CONFIG" set redpanda.advertised_kafka_api[1] "${ADVERTISED_KAFKA_ADDRESSES[$POD_ORDINAL]}"

LISTENER="{\"address\":\"${SERVICE_NAME}.redpanda.default.svc.cluster.local.\",\"name\":\"internal\",\"port\":8082}"
rpk redpanda config --config "$CONFIG" set pandaproxy.advertised_pandaproxy_api[0] "$LISTENER"

ADVERTISED_HTTP_ADDRESSES=()

PREFIX_TEMPLATE=""
ADVERTISED_HTTP_ADDRESSES+=("{\"address\":\"${SERVICE_NAME}\",\"name\":\"default\",\"port\":30082}")

PREFIX_TEMPLATE=""
ADVERTISED_HTTP_ADDRESSES+=("{\"address\":\"${SERVICE_NAME}\",\"name\":\"default\",\"port\":30082}")

PREFIX_TEMPLATE=""
ADVERTISED_HTTP_ADDRESSES+=("{\"address\":\"${SERVICE_NAME}\",\"name\":\"default\",\"port\":30082}")

rpk redpanda config --config "$CONFIG" set pandaproxy.advertised_pandaproxy_api[1] "${ADVERTISED_HTTP_ADDRESSES[$POD_ORDINAL]}"
