/* The render stage's promotion rules: requires and soak, approvals, their expiry. */
#include "gate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rf_clock.h"
#include "rf_log.h"
#include "rf_metrics.h"

/* "1h 5m", "30m", "45s": a duration in whole seconds for reasons people read. */
static void gate_duration(long s, char *out, size_t size)
{
    if (s >= 3600 && s % 3600 == 0)
        snprintf(out, size, "%ldh", s / 3600);
    else if (s >= 3600)
        snprintf(out, size, "%ldh %ldm", s / 3600, (s % 3600) / 60);
    else if (s >= 60 && s % 60 == 0)
        snprintf(out, size, "%ldm", s / 60);
    else if (s >= 60)
        snprintf(out, size, "%ldm %lds", s / 60, s % 60);
    else
        snprintf(out, size, "%lds", s);
}

/* The newest success of the version in the required env; the first failed release or
 * rollback of the service there after it; how long the version ran there since (until a
 * success of another version replaced it, or now). */
static const char gate_soak_sql[] =
    "WITH ok AS (SELECT r.id, r.created_at, r.finished_at FROM releases r"
    " WHERE r.service = $1 AND r.env = $2 AND r.version = $3 AND r.status = 'succeeded'"
    " ORDER BY r.finished_at DESC LIMIT 1)"
    " SELECT ok.id, (SELECT b.id::text || CASE WHEN b.kind = 'rollback' THEN ' rollback'"
    " ELSE ' failed' END FROM releases b WHERE b.service = $1 AND b.env = $2"
    " AND b.created_at > ok.created_at AND (b.status = 'failed' OR (b.kind = 'rollback'"
    " AND b.status NOT IN ('rejected', 'cancelled', 'queued', 'awaiting_approval')))"
    " ORDER BY b.created_at LIMIT 1),"
    " floor(extract(epoch FROM coalesce((SELECT min(n.finished_at) FROM releases n"
    " WHERE n.service = $1 AND n.env = $2 AND n.status = 'succeeded' AND n.version <> $3"
    " AND n.finished_at > ok.finished_at), clock_timestamp()) - ok.finished_at))::bigint"
    " FROM ok";

rf_err_t render_gate_check(rf_db_t *db, const render_gate_rules_t *rules, int *verdict,
                           char *reason, size_t reason_size, char *errstr, size_t errstr_size)
{
    const char *params[3] = {rules->service, rules->requires_env, rules->version};
    PGresult *res = NULL;
    rf_err_t result = RF_OK;

    *verdict = RENDER_GATE_PASS;
    /* Rollbacks and redos go back to or repeat what ran here: no questions asked. */
    if (rules->requires_env && strcmp(rules->kind, "deploy") == 0) {
        result = rf_db_exec(db, gate_soak_sql, 3, params, &res, errstr, errstr_size);
        if (result != RF_OK)
            goto out;
        if (PQntuples(res) == 0) {
            snprintf(reason, reason_size,
                     "version '%s' of service '%s' has not succeeded in env '%s' (required"
                     " before env '%s')",
                     rules->version, rules->service, rules->requires_env, rules->env);
            *verdict = RENDER_GATE_REJECT;
            goto out;
        }
        if (rules->soak_s > 0 && !PQgetisnull(res, 0, 1)) {
            const char *breaker = PQgetvalue(res, 0, 1);
            const char *what = strchr(breaker, ' ');
            snprintf(reason, reason_size,
                     "version '%s' of service '%s' did not soak in env '%s': release %.*s %s"
                     " after it succeeded there",
                     rules->version, rules->service, rules->requires_env,
                     what ? (int)(what - breaker) : (int)strlen(breaker), breaker,
                     what && strcmp(what + 1, "rollback") == 0 ? "rolled back" : "failed");
            *verdict = RENDER_GATE_REJECT;
            goto out;
        }
        if (rules->soak_s > 0 && strtol(PQgetvalue(res, 0, 2), NULL, 10) < rules->soak_s) {
            char ran[32], soak[32];
            gate_duration(strtol(PQgetvalue(res, 0, 2), NULL, 10), ran, sizeof(ran));
            gate_duration(rules->soak_s, soak, sizeof(soak));
            snprintf(reason, reason_size,
                     "version '%s' of service '%s' has run in env '%s' for %s of its %s soak"
                     " (required before env '%s')",
                     rules->version, rules->service, rules->requires_env, ran, soak, rules->env);
            *verdict = RENDER_GATE_REJECT;
            goto out;
        }
    }
    if (rules->approvals > 0 && !rules->approved)
        *verdict = RENDER_GATE_AWAIT;
out:
    PQclear(res);
    return result;
}

rf_err_t render_gate_await(rf_db_t *db, const char *id, const render_gate_rules_t *rules,
                           char *errstr, size_t errstr_size)
{
    char needed[16], msg[512];
    const char *params[3] = {id, needed, msg};
    PGresult *res = NULL;
    rf_err_t result;

    snprintf(needed, sizeof(needed), "%d", rules->approvals);
    snprintf(msg, sizeof(msg),
             "awaiting approval: needs %d approval%s from approvers of service '%s' in env '%s'",
             rules->approvals, rules->approvals == 1 ? "" : "s", rules->service, rules->env);
    result = rf_db_begin(db, errstr, errstr_size);
    if (result != RF_OK)
        return result;
    result = rf_db_exec(db,
                        "WITH u AS (UPDATE releases SET status = 'awaiting_approval',"
                        " approvals_needed = $2::int, awaiting_since = clock_timestamp()"
                        " WHERE id = $1 AND status = 'queued' RETURNING id)"
                        " INSERT INTO timeline (release_id, stage, event, status, message)"
                        " SELECT id, 'render', 'awaiting_approval', 'awaiting_approval', $3"
                        " FROM u RETURNING release_id",
                        3, params, &res, errstr, errstr_size);
    if (result == RF_OK && PQntuples(res) == 1) {
        PQclear(res);
        res = NULL;
        /* Its own message and event id: the result of the release comes later. */
        result = rf_db_exec(db,
                            "INSERT INTO notifications (release_id, subscription_id, event_id,"
                            " channel, target, payload) SELECT r.id, s.id,"
                            " (relfleet_awaiting_event(r.id) ->> 'event_id')::uuid, s.channel,"
                            " s.target, relfleet_awaiting_event(r.id) FROM releases r JOIN"
                            " notify_subscriptions s ON s.service = r.service AND s.env = r.env"
                            " AND 'awaiting_approval' = ANY (s.on_status)"
                            " AND s.created_at <= r.awaiting_since WHERE r.id = $1::uuid"
                            " ORDER BY s.id ON CONFLICT DO NOTHING",
                            1, params, NULL, errstr, errstr_size);
    }
    PQclear(res);
    if (result != RF_OK) {
        rf_db_rollback(db);
        return result;
    }
    result = rf_db_commit(db, errstr, errstr_size);
    if (result == RF_OK)
        rf_log_info("%s", msg);
    return result;
}

/* Ends expired waits in one statement, marking each result owed (claim lapsed) so that the
 * track stage's owed-results sweep publishes it once: two render workers sweeping at the
 * same time cannot both end, nor both publish, the same release. */
static const char gate_expire_sql[] =
    "WITH x AS (SELECT r.id, format('approval timed out after %s (%s of %s approvals)', $2::text,"
    " (SELECT count(*) FROM release_approvals a WHERE a.release_id = r.id"
    " AND a.decision = 'approved'), r.approvals_needed) AS why FROM releases r"
    " WHERE r.status = 'awaiting_approval' AND r.awaiting_since < clock_timestamp() -"
    " make_interval(secs => $1::double precision) ORDER BY r.awaiting_since LIMIT 100"
    " FOR UPDATE SKIP LOCKED),"
    " u AS (UPDATE releases r SET status = 'cancelled', error = x.why,"
    " finished_at = clock_timestamp(), duration_ms = 0, track_until = clock_timestamp()"
    " FROM x WHERE r.id = x.id AND r.status = 'awaiting_approval' RETURNING r.id, x.why),"
    " o AS (INSERT INTO release_results_owed (release_id) SELECT id FROM u)"
    " INSERT INTO timeline (release_id, stage, event, status, message)"
    " SELECT id, 'render', 'cancelled', 'cancelled', 'cancelled: ' || why FROM u"
    " RETURNING release_id, message";

void render_gate_expire(rf_worker_t *w)
{
    long long timeout_ms = rf_clock_parse_ms(w->conf->approval_timeout);
    char timeout_s[24], errstr[1024], waited[32];
    const char *params[2] = {timeout_s, waited};
    PGresult *res = NULL;

    snprintf(timeout_s, sizeof(timeout_s), "%.3f", (double)timeout_ms / 1000.0);
    gate_duration((long)(timeout_ms / 1000), waited, sizeof(waited));
    if (rf_db_exec(w->db, gate_expire_sql, 2, params, &res, errstr, sizeof(errstr)) != RF_OK) {
        rf_log_warn("sweep: cannot end releases whose approval timed out: %s", errstr);
        return;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        rf_log_ctx_set("release", PQgetvalue(res, i, 0));
        rf_log_info("release ended %s", PQgetvalue(res, i, 1));
        rf_metrics_add(rf_metrics_counter("relfleet_releases_finished_total",
                                          "Releases that reached a terminal state", "status"),
                       RF_LABELS("cancelled"), 1);
    }
    rf_log_ctx_clear();
    PQclear(res);
}
