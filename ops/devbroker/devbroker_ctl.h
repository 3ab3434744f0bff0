/* The dev broker's control commands: one text line in, one reply line out. */
#ifndef DEVBROKER_CTL_H
#define DEVBROKER_CTL_H

#include <stddef.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

/* Runs one command line (without its newline) against the mock cluster and writes the
 * reply, without a newline, to reply (reply_size bytes, always NUL-terminated): "ok" or
 * "error: <reason>". Returns 0 when the reply is "ok", -1 otherwise.
 * Commands:
 *   ping
 *   push-errors APIKEY ERRCODE COUNT   APIKEY a number or a name (Produce, Fetch, ...),
 *                                      ERRCODE a number or a name (NOT_LEADER_FOR_PARTITION,
 *                                      _TRANSPORT, ...)
 *   clear-errors APIKEY
 *   broker-down ID | broker-up ID      ID a broker id (1..N) or -1 for all
 *   rtt ID MS
 *   create-topic NAME PARTITIONS
 *   leader TOPIC PARTITION BROKER      of a topic this broker created (devbroker_ctl_topic_add)
 *   coordinator group|transaction KEY BROKER
 * brokers is the cluster's broker count (ids 1..brokers). */
int devbroker_ctl_exec(rd_kafka_mock_cluster_t *mcluster, int brokers, int replication_factor,
                       const char *line, char *reply, size_t reply_size);

/* Records a topic the broker created at start, for `leader`; -1 when the table is full. */
int devbroker_ctl_topic_add(const char *name, int partitions);

#endif
