/* The dev broker's control commands: fault injection and topics, run in the broker's process. */
#include "devbroker_ctl.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CTL_MAX_ARGS 8
#define CTL_LINE_MAX 1024
#define CTL_TOPICS_MAX 256

/* The topics this broker created (the mock cannot be asked), for `leader`. */
static struct {
    char name[250];
    int partitions;
} ctl_topics[CTL_TOPICS_MAX];
static int ctl_topic_cnt;

static const struct {
    const char *name;
    int key;
} ctl_api_keys[] = {
    {"Produce", 0},
    {"Fetch", 1},
    {"ListOffsets", 2},
    {"Metadata", 3},
    {"OffsetCommit", 8},
    {"OffsetFetch", 9},
    {"FindCoordinator", 10},
    {"JoinGroup", 11},
    {"Heartbeat", 12},
    {"LeaveGroup", 13},
    {"SyncGroup", 14},
    {"DescribeGroups", 15},
    {"ListGroups", 16},
    {"ApiVersions", 18},
    {"CreateTopics", 19},
    {"InitProducerId", 22},
    {"OffsetForLeaderEpoch", 23},
    {"AddPartitionsToTxn", 24},
    {"AddOffsetsToTxn", 25},
    {"EndTxn", 26},
    {"TxnOffsetCommit", 28},
};

int devbroker_ctl_topic_add(const char *name, int partitions)
{
    if (ctl_topic_cnt == CTL_TOPICS_MAX || strlen(name) >= sizeof(ctl_topics[0].name))
        return -1;
    snprintf(ctl_topics[ctl_topic_cnt].name, sizeof(ctl_topics[0].name), "%s", name);
    ctl_topics[ctl_topic_cnt].partitions = partitions;
    ctl_topic_cnt++;
    return 0;
}

static int devbroker_ctl_has_topic(const char *name, int partition)
{
    for (int i = 0; i < ctl_topic_cnt; i++) {
        if (strcmp(ctl_topics[i].name, name) == 0)
            return partition < ctl_topics[i].partitions;
    }
    return 0;
}

/* Parses a whole decimal number within [min, max]; 0 on success. */
static int ctl_parse_long(const char *s, long min, long max, long *out)
{
    char *end = NULL;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int ctl_parse_api_key(const char *s, int16_t *key)
{
    long v;

    if (ctl_parse_long(s, 0, 100, &v) == 0) {
        *key = (int16_t)v;
        return 0;
    }
    for (size_t i = 0; i < sizeof(ctl_api_keys) / sizeof(ctl_api_keys[0]); i++) {
        if (strcasecmp(s, ctl_api_keys[i].name) == 0) {
            *key = (int16_t)ctl_api_keys[i].key;
            return 0;
        }
    }
    return -1;
}

/* Accepts a number, a name as librdkafka spells it (NOT_LEADER_FOR_PARTITION, _TRANSPORT)
 * or the same with the RD_KAFKA_RESP_ERR_ prefix. */
static int ctl_parse_err(const char *s, rd_kafka_resp_err_t *err)
{
    const struct rd_kafka_err_desc *descs = NULL;
    size_t cnt = 0;
    long v;

    if (ctl_parse_long(s, INT_MIN, INT_MAX, &v) == 0) {
        *err = (rd_kafka_resp_err_t)v;
        return 0;
    }
    if (strncasecmp(s, "RD_KAFKA_RESP_ERR_", 18) == 0)
        s += 18;
    rd_kafka_get_err_descs(&descs, &cnt);
    for (size_t i = 0; i < cnt; i++) {
        if (descs[i].name && strcasecmp(descs[i].name, s) == 0) {
            *err = descs[i].code;
            return 0;
        }
    }
    return -1;
}

/* Splits line into at most CTL_MAX_ARGS words, in place; returns the count or -1. */
static int ctl_split(char *line, char **argv)
{
    int argc = 0;
    char *save = NULL;
    char *word = strtok_r(line, " \t\r", &save);

    while (word) {
        if (argc == CTL_MAX_ARGS)
            return -1;
        argv[argc++] = word;
        word = strtok_r(NULL, " \t\r", &save);
    }
    return argc;
}

static int ctl_reply_err(char *reply, size_t reply_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes "error: <formatted reason>" and returns -1. */
static int ctl_reply_err(char *reply, size_t reply_size, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(reply, reply_size, "error: %s", msg);
    return -1;
}

static int ctl_reply_kafka(char *reply, size_t reply_size, rd_kafka_resp_err_t err)
{
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(reply, reply_size, "ok");
        return 0;
    }
    snprintf(reply, reply_size, "error: %s (%s)", rd_kafka_err2str(err), rd_kafka_err2name(err));
    return -1;
}

static int ctl_push_errors(rd_kafka_mock_cluster_t *mcluster, char **argv, char *reply,
                           size_t reply_size)
{
    int16_t api_key;
    rd_kafka_resp_err_t err;
    rd_kafka_resp_err_t *errs = NULL;
    long cnt;
    int result;

    if (ctl_parse_api_key(argv[1], &api_key) != 0)
        return ctl_reply_err(reply, reply_size, "unknown api key '%s'", argv[1]);
    if (ctl_parse_err(argv[2], &err) != 0)
        return ctl_reply_err(reply, reply_size, "unknown error code '%s'", argv[2]);
    if (ctl_parse_long(argv[3], 1, 100000, &cnt) != 0)
        return ctl_reply_err(reply, reply_size, "bad count '%s' (1..100000)", argv[3]);
    /* The mock "disconnects" by shutting the socket down and forgets the connection's
     * pending JoinGroup or SyncGroup answer only when it later sees the socket close; a
     * member that rejoins on a new connection first aborts the whole broker
     * (rd_kafka_mock_cgrp_member_add: assertion `!member->resp', librdkafka 2.0.2). */
    if (err == RD_KAFKA_RESP_ERR__TRANSPORT && api_key >= 8 && api_key <= 14 &&
        api_key != 10) /* OffsetCommit, OffsetFetch, JoinGroup ... SyncGroup; not FindCoordinator */
        return ctl_reply_err(reply, reply_size,
                             "_TRANSPORT on a request to the group coordinator (api key %d) can "
                             "abort librdkafka 2.0.2's mock broker when the member rejoins; use "
                             "broker-down, or another error code",
                             (int)api_key);

    errs = calloc((size_t)cnt, sizeof(*errs));
    if (!errs) {
        result = ctl_reply_err(reply, reply_size, "%s", "out of memory");
        goto cleanup;
    }
    for (long i = 0; i < cnt; i++)
        errs[i] = err;
    rd_kafka_mock_push_request_errors_array(mcluster, api_key, (size_t)cnt, errs);
    snprintf(reply, reply_size, "ok");
    result = 0;

cleanup:
    free(errs);
    return result;
}

static int ctl_broker_cmd(rd_kafka_mock_cluster_t *mcluster, char **argv, int argc, char *reply,
                          size_t reply_size)
{
    long id;
    long ms = 0;
    rd_kafka_resp_err_t err;

    if (ctl_parse_long(argv[1], -1, INT32_MAX, &id) != 0)
        return ctl_reply_err(reply, reply_size, "bad broker id '%s'", argv[1]);
    if (strcmp(argv[0], "broker-down") == 0) {
        err = rd_kafka_mock_broker_set_down(mcluster, (int32_t)id);
    } else if (strcmp(argv[0], "broker-up") == 0) {
        err = rd_kafka_mock_broker_set_up(mcluster, (int32_t)id);
    } else {
        if (argc != 3 || ctl_parse_long(argv[2], 0, 3600000, &ms) != 0)
            return ctl_reply_err(reply, reply_size, "%s", "usage: rtt ID MS");
        err = rd_kafka_mock_broker_set_rtt(mcluster, (int32_t)id, (int)ms);
    }
    return ctl_reply_kafka(reply, reply_size, err);
}

/* Kafka's rule: up to 249 characters of letters, digits, '.', '_' and '-'. */
static int ctl_topic_name_ok(const char *name)
{
    return strlen(name) <= 249 &&
           strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") ==
               strlen(name);
}

static int ctl_create_topic(rd_kafka_mock_cluster_t *mcluster, int replication_factor, char **argv,
                            char *reply, size_t reply_size)
{
    long partitions;

    if (!ctl_topic_name_ok(argv[1]))
        return ctl_reply_err(reply, reply_size, "bad topic name '%s'", argv[1]);
    if (ctl_parse_long(argv[2], 1, 10000, &partitions) != 0)
        return ctl_reply_err(reply, reply_size, "bad partition count '%s' (1..10000)", argv[2]);
    if (ctl_reply_kafka(
            reply, reply_size,
            rd_kafka_mock_topic_create(mcluster, argv[1], (int)partitions, replication_factor)) != 0)
        return -1;
    if (devbroker_ctl_topic_add(argv[1], (int)partitions) != 0)
        return ctl_reply_err(reply, reply_size, "topic '%s' created, but too many topics to "
                             "track for 'leader'", argv[1]);
    return 0;
}

/* leader TOPIC PARTITION BROKER: makes BROKER the partition's leader (clients learn it from
 * their next NOT_LEADER_FOR_PARTITION and metadata refresh). The topic must exist: the mock
 * would create it. */
static int ctl_leader(rd_kafka_mock_cluster_t *mcluster, int brokers, char **argv, char *reply,
                      size_t reply_size)
{
    long partition;
    long id;

    if (!ctl_topic_name_ok(argv[1]))
        return ctl_reply_err(reply, reply_size, "bad topic name '%s'", argv[1]);
    if (ctl_parse_long(argv[2], 0, 9999, &partition) != 0)
        return ctl_reply_err(reply, reply_size, "bad partition '%s' (0..9999)", argv[2]);
    if (ctl_parse_long(argv[3], 1, brokers, &id) != 0)
        return ctl_reply_err(reply, reply_size, "bad broker id '%s' (1..%d)", argv[3], brokers);
    if (!devbroker_ctl_has_topic(argv[1], (int)partition))
        return ctl_reply_err(reply, reply_size, "unknown topic or partition '%s' %ld", argv[1],
                             partition);
    return ctl_reply_kafka(reply, reply_size,
                           rd_kafka_mock_partition_set_leader(mcluster, argv[1], (int32_t)partition,
                                                              (int32_t)id));
}

/* coordinator group|transaction KEY BROKER: makes BROKER the coordinator of a consumer group
 * or a transactional id (the mock otherwise hashes the key onto a broker, down or not). */
static int ctl_coordinator(rd_kafka_mock_cluster_t *mcluster, int brokers, char **argv,
                           char *reply, size_t reply_size)
{
    long id;

    if (strcmp(argv[1], "group") != 0 && strcmp(argv[1], "transaction") != 0)
        return ctl_reply_err(reply, reply_size, "bad coordinator type '%s' (group, transaction)",
                             argv[1]);
    if (ctl_parse_long(argv[3], 1, brokers, &id) != 0)
        return ctl_reply_err(reply, reply_size, "bad broker id '%s' (1..%d)", argv[3], brokers);
    return ctl_reply_kafka(reply, reply_size,
                           rd_kafka_mock_coordinator_set(mcluster, argv[1], argv[2], (int32_t)id));
}

int devbroker_ctl_exec(rd_kafka_mock_cluster_t *mcluster, int brokers, int replication_factor,
                       const char *line, char *reply, size_t reply_size)
{
    char copy[CTL_LINE_MAX];
    char *argv[CTL_MAX_ARGS];
    int16_t api_key;
    int argc;

    if (strlen(line) >= sizeof(copy))
        return ctl_reply_err(reply, reply_size, "%s", "line too long");
    memcpy(copy, line, strlen(line) + 1);
    argc = ctl_split(copy, argv);
    if (argc < 0)
        return ctl_reply_err(reply, reply_size, "%s", "too many words");
    if (argc == 0)
        return ctl_reply_err(reply, reply_size, "%s", "empty command");

    if (strcmp(argv[0], "ping") == 0 && argc == 1) {
        snprintf(reply, reply_size, "ok");
        return 0;
    }
    if (strcmp(argv[0], "push-errors") == 0 && argc == 4)
        return ctl_push_errors(mcluster, argv, reply, reply_size);
    if (strcmp(argv[0], "clear-errors") == 0 && argc == 2) {
        if (ctl_parse_api_key(argv[1], &api_key) != 0)
            return ctl_reply_err(reply, reply_size, "unknown api key '%s'", argv[1]);
        rd_kafka_mock_clear_request_errors(mcluster, api_key);
        snprintf(reply, reply_size, "ok");
        return 0;
    }
    if ((strcmp(argv[0], "broker-down") == 0 || strcmp(argv[0], "broker-up") == 0) && argc == 2)
        return ctl_broker_cmd(mcluster, argv, argc, reply, reply_size);
    if (strcmp(argv[0], "rtt") == 0 && argc == 3)
        return ctl_broker_cmd(mcluster, argv, argc, reply, reply_size);
    if (strcmp(argv[0], "create-topic") == 0 && argc == 3)
        return ctl_create_topic(mcluster, replication_factor, argv, reply, reply_size);
    if (strcmp(argv[0], "leader") == 0 && argc == 4)
        return ctl_leader(mcluster, brokers, argv, reply, reply_size);
    if (strcmp(argv[0], "coordinator") == 0 && argc == 4)
        return ctl_coordinator(mcluster, brokers, argv, reply, reply_size);
    return ctl_reply_err(reply, reply_size,
                         "unknown command or wrong arguments '%s' (ping, push-errors APIKEY "
                         "ERRCODE COUNT, clear-errors APIKEY, broker-down ID, broker-up ID, "
                         "rtt ID MS, create-topic NAME PARTITIONS, leader TOPIC PARTITION "
                         "BROKER, coordinator group|transaction KEY BROKER)",
                         argv[0]);
}
