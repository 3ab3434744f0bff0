/* One Redis connection (plain or TLS, direct or the master Sentinels name) following failovers. */
#ifndef RF_REDIS_H
#define RF_REDIS_H

#include <stddef.h>

#include <hiredis/hiredis.h>

#include "rf_config.h"
#include "rf_err.h"

typedef struct rf_redis rf_redis_t;

/* Reads conf->redis_url and the redis_* settings; connects on first use. The URL forms:
 *   redis://[[user]:password@]host:port[/db]          one server
 *   rediss://...                                      the same over TLS
 *   redis-sentinel://[[user]:password@]host:port[,host:port...][/db]#master-name
 *   rediss-sentinel://...                             TLS to the Sentinels and the master
 * With a user, AUTH user password (ACL), else AUTH password. Sentinels get the URL's
 * credentials unless redis_sentinel_password is set. NULL when the URL or a TLS setting is
 * bad (always permanent): errstr names what is wrong, never the password. conf may be
 * released after. */
rf_redis_t *rf_redis_new(const rf_config_t *conf, char *errstr, size_t errstr_size);
void rf_redis_destroy(rf_redis_t *r);

/* Connects unless connected (Sentinel: asks the Sentinels in turn, confirms the master
 * with ROLE, subscribes to +switch-master) and runs PING. errstr gets what was reached
 * ("redis master 'm' at host:port (sentinel host:port)") or why not. RF_ERR_RETRY when
 * a server or every Sentinel is unreachable or the master a replica; RF_ERR_PERM for a
 * refused AUTH or SELECT, a master name no Sentinel knows, a failed TLS verification. */
rf_err_t rf_redis_check(rf_redis_t *r, char *errstr, size_t errstr_size);

/* Runs one command; *reply is the caller's (freeReplyObject). An error reply is RF_OK with
 * reply->type REDIS_REPLY_ERROR, except READONLY, LOADING and MASTERDOWN: those, a lost
 * connection and a +switch-master event drop the connection, find the master again and
 * run the command once more there. Callers send only commands that are safe to run twice
 * (the lock's scripts are idempotent per release id). */
rf_err_t rf_redis_command(rf_redis_t *r, int argc, const char **argv, const size_t *lens,
                          redisReply **reply, char *errstr, size_t errstr_size);

/* Pipelining: append queues a command (connecting first when nothing is queued), get_reply
 * sends what is queued and returns the next reply; read every reply that was appended. A
 * failure (as rf_redis_command's, but run nothing again) drops the connection and what was
 * queued: rf_redis_drops() grew, and the caller may repeat the whole batch once. */
rf_err_t rf_redis_append(rf_redis_t *r, int argc, const char **argv, const size_t *lens,
                         char *errstr, size_t errstr_size);
rf_err_t rf_redis_get_reply(rf_redis_t *r, redisReply **reply, char *errstr, size_t errstr_size);

/* How many times a working connection was given up (lost, READONLY, LOADING, MASTERDOWN,
 * +switch-master). */
unsigned rf_redis_drops(const rf_redis_t *r);

#endif
