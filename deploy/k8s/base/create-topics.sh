#!/usr/bin/env bash
# Creates the platform's topics and their dead-letter topics with kafka-topics.sh;
# raises a topic's partition count when it has fewer (never lowers it).
# Env: KAFKA_BOOTSTRAP, TOPICS ("name=partitions ..."), DLQ_PARTITIONS,
# REPLICATION_FACTOR, MIN_INSYNC_REPLICAS, MAX_MESSAGE_BYTES (the largest record a topic
# takes; set again on topics that exist). Used by the k8s Job and compose.yaml.
set -euo pipefail
PATH="/opt/kafka/bin:$PATH"
server=(--bootstrap-server "$KAFKA_BOOTSTRAP")

until kafka-topics.sh "${server[@]}" --list >/dev/null; do
  echo "waiting for Kafka at $KAFKA_BOOTSTRAP"
  sleep 2
done

ensure() {
  local topic=$1 partitions=$2 retention=$3
  kafka-topics.sh "${server[@]}" --create --if-not-exists --topic "$topic" \
    --partitions "$partitions" --replication-factor "$REPLICATION_FACTOR" \
    --config "min.insync.replicas=$MIN_INSYNC_REPLICAS" \
    --config "retention.ms=$retention" \
    --config "max.message.bytes=$MAX_MESSAGE_BYTES"
  kafka-configs.sh "${server[@]}" --alter --entity-type topics --entity-name "$topic" \
    --add-config "max.message.bytes=$MAX_MESSAGE_BYTES"
  local now
  now=$(kafka-topics.sh "${server[@]}" --describe --topic "$topic" \
    | sed -n 's/.*PartitionCount: *\([0-9]*\).*/\1/p' | head -n 1)
  if [ "$now" -lt "$partitions" ]; then
    kafka-topics.sh "${server[@]}" --alter --topic "$topic" --partitions "$partitions"
  fi
  echo "$topic: $partitions partitions (had ${now})"
}

# Event topics keep everything (-1): a new consumer group reads them from the start.
for entry in $TOPICS; do
  ensure "${entry%%=*}" "${entry#*=}" -1
done
# Dead letters: kept 30 days, for inspection and replay by hand.
for entry in $TOPICS; do
  ensure "${entry%%=*}.dlq" "$DLQ_PARTITIONS" 2592000000
done
