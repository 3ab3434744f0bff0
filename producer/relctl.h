/* relctl internals: the context every verb gets and the verbs themselves. */
#ifndef RELCTL_H
#define RELCTL_H

#include <jansson.h>

#include "rf_config.h"
#include "rf_db.h"
#include "rf_kafka.h"

#define RELCTL_OK 0
#define RELCTL_FAIL 1
#define RELCTL_USAGE 2

typedef struct relctl {
    rf_config_t conf;
    int json;              /* --output json */
    const char *operator_name;
    rf_db_t *db;           /* opened on first use */
    rf_producer_t *producer;
    char *user;            /* the token's user, once relctl_whoami looked it up */
} relctl_t;

/* Lazily opened connections; on failure they print the reason and return NULL. */
rf_db_t *relctl_db(relctl_t *ctl);
rf_producer_t *relctl_producer(relctl_t *ctl);

/* Prints "relctl: <message>" to stderr and returns RELCTL_FAIL. */
int relctl_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints the usage error and returns RELCTL_USAGE. */
int relctl_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Prints JSON to stdout (indented) and frees it. */
void relctl_print_json(json_t *j);

/* Validates and publishes a message on a topic with key env/service. */
int relctl_publish(relctl_t *ctl, const char *suffix, json_t *msg);

/* Publishes a request (and frees it; NULL: out of memory), then follows its release with
 * wait, or prints its id (with --output json {release_id, parent} or {release_id} for a
 * request without a parent). */
int relctl_request(relctl_t *ctl, json_t *msg, int wait);

/* Follows a release until its end, printing progress; returns 0 only on success.
 * With json, prints the final record instead of progress. */
int relctl_follow(relctl_t *ctl, const char *id, int json);

int relctl_cmd_deploy(relctl_t *ctl, int argc, char **argv);
int relctl_cmd_show(relctl_t *ctl, int argc, char **argv);
int relctl_cmd_watch(relctl_t *ctl, int argc, char **argv);
int relctl_cmd_history(relctl_t *ctl, int argc, char **argv);
int relctl_cmd_status(relctl_t *ctl, int argc, char **argv);
int relctl_cmd_stats(relctl_t *ctl, int argc, char **argv); /* cmd_stats.c */
int relctl_cmd_service(relctl_t *ctl, int argc, char **argv);
int relctl_cmd_template(relctl_t *ctl, int argc, char **argv);
/* cmd_template.c: `template check` (argv[0] is "check"), and the dry renders of a template
 * with the values of each service that uses it (service NULL) or of service/env, checked
 * against the schema of each service's cluster (else the built-in one); each check is
 * appended to checks ({service, env, valid, schema, errors[]}) and printed when print; with
 * sample, a template no service uses is rendered with sample values (db may be NULL then).
 * Returns how many renders are invalid, or -1 when the database failed. */
int relctl_template_check(relctl_t *ctl, int argc, char **argv);
int relctl_template_verify(relctl_t *ctl, rf_db_t *db, const char *id, const char *body,
                           size_t len, const char *service, const char *env, int print,
                           int sample, json_t *checks);
int relctl_cmd_image(relctl_t *ctl, int argc, char **argv);
int relctl_cmd_db(relctl_t *ctl, int argc, char **argv);
int relctl_cmd_notify(relctl_t *ctl, int argc, char **argv);
int relctl_cmd_command(relctl_t *ctl, int argc, char **argv); /* cancel, promote, abort */
int relctl_cmd_rollback(relctl_t *ctl, int argc, char **argv);
int relctl_cmd_redo(relctl_t *ctl, int argc, char **argv);
int relctl_cmd_user(relctl_t *ctl, int argc, char **argv);
int relctl_cmd_wave(relctl_t *ctl, int argc, char **argv); /* cmd_wave.c */
int relctl_cmd_advance(relctl_t *ctl, int argc, char **argv); /* cmd_promote.c */
int relctl_cmd_decide(relctl_t *ctl, int argc, char **argv);  /* approve, deny */

/* Who runs relctl (cmd_ops.c): with the setting `token`, the user it belongs to, who
 * becomes the operator; *user is NULL without a token. Prints the reason on failure. */
int relctl_whoami(relctl_t *ctl, const char **user);

/* Requires the role ("viewer", "releaser", "admin") for service/env (env NULL: in some
 * env; "*", "*": on everything) when relctl runs with a token, or always when
 * auth_required is on. RELCTL_OK or RELCTL_FAIL with the reason printed. */
int relctl_require(relctl_t *ctl, const char *role, const char *service, const char *env);

/* Signs msg (a request or command) with the key of setting signing_key_id or else of
 * the token's user, when that key is in the secrets; a user's key makes its user the
 * operator. Unsigned and RELCTL_OK when there is no key to sign with. */
int relctl_sign(relctl_t *ctl, json_t *msg);

/* Creates the bootstrap admin on a database without users (after `db migrate`). */
int relctl_bootstrap_admin(relctl_t *ctl);

#endif
