/* CloudEvents 1.0 attributes of a results message, for the Kafka and HTTP bindings (binary mode).
 */
#include "rf_cloudevents.h"
#include "rf_json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const attr_names[RF_CLOUDEVENT_ATTRS] = {"specversion", "id",   "source",
                                                            "type",        "time", "subject"};

const char *rf_cloudevent_attr(const rf_cloudevent_t *ev, int i, const char **value)
{
    const char *values[RF_CLOUDEVENT_ATTRS] = {
        RF_CLOUDEVENTS_SPECVERSION, ev->id, ev->source, ev->type, ev->time, ev->subject};

    if (i < 0 || i >= RF_CLOUDEVENT_ATTRS)
        return NULL;
    *value = values[i];
    return attr_names[i];
}

/* 1 when s is printable ASCII without spaces (and not empty). */
static int cloudevents_token_ok(const char *s)
{
    if (!s || !*s)
        return 0;
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return 0;
    return 1;
}

int rf_cloudevents_source_ok(const char *s)
{
    return cloudevents_token_ok(s) && strlen(s) < sizeof(((rf_cloudevent_t *)0)->source);
}

const char *rf_cloudevents_source(const rf_config_t *conf, char *buf, size_t size)
{
    const char *prefix = conf->topic_prefix ? conf->topic_prefix : "";
    size_t n = strlen(prefix);

    if (conf->cloudevents_source && *conf->cloudevents_source) {
        snprintf(buf, size, "%s", conf->cloudevents_source);
        return buf;
    }
    while (n > 0 && strchr("._-", prefix[n - 1]))
        n--;
    if (n == 0) {
        prefix = "relfleet";
        n = strlen(prefix);
    }
    snprintf(buf, size, "/relfleet/%.*s", (int)n, prefix);
    return buf;
}

/* Copies the string field name of result into out; RF_ERR_PERM if absent or unfit. */
static rf_err_t cloudevent_field(const json_t *result, const char *name, char *out, size_t size,
                                 char *errstr, size_t errstr_size)
{
    const char *v = json_string_value(json_object_get(result, name));

    if (!v)
        return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                       "cannot describe the result as a cloudevent: no string '%s'", name);
    if (!cloudevents_token_ok(v) || strlen(v) >= size)
        return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                       "cannot describe the result as a cloudevent: '%s' is not a short "
                       "ascii token",
                       name);
    snprintf(out, size, "%s", v);
    return RF_OK;
}

rf_err_t rf_cloudevent_from_result(const json_t *result, const char *source, rf_cloudevent_t *ev,
                                   char *errstr, size_t errstr_size)
{
    char status[32], service[64], env[64];
    rf_err_t r;

    memset(ev, 0, sizeof(*ev));
    if (!json_is_object(result))
        return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                       "cannot describe the result as a cloudevent: not a json object");
    if (!rf_cloudevents_source_ok(source))
        return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                       "cannot describe the result as a cloudevent: bad source '%.200s'",
                       source ? source : "");
    snprintf(ev->source, sizeof(ev->source), "%s", source);
    r = cloudevent_field(result, "event_id", ev->id, sizeof(ev->id), errstr, errstr_size);
    if (r == RF_OK)
        r = cloudevent_field(result, "status", status, sizeof(status), errstr, errstr_size);
    if (r == RF_OK)
        r = cloudevent_field(result, "finished_at", ev->time, sizeof(ev->time), errstr,
                             errstr_size);
    if (r == RF_OK)
        r = cloudevent_field(result, "service", service, sizeof(service), errstr, errstr_size);
    if (r == RF_OK)
        r = cloudevent_field(result, "env", env, sizeof(env), errstr, errstr_size);
    if (r != RF_OK)
        return r;
    snprintf(ev->type, sizeof(ev->type), "%s%s", RF_CLOUDEVENTS_TYPE_PREFIX, status);
    snprintf(ev->subject, sizeof(ev->subject), "%s/%s", service, env);
    return RF_OK;
}

rf_err_t rf_cloudevent_from_text(const char *text, size_t len, const char *source,
                                 rf_cloudevent_t *ev, char *errstr, size_t errstr_size)
{
    json_error_t jerr;
    json_t *result = rf_json_loadb(text, len, 0, &jerr);
    rf_err_t r;

    if (!result) {
        memset(ev, 0, sizeof(*ev));
        return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                       "cannot describe the result as a cloudevent: %s", jerr.text);
    }
    r = rf_cloudevent_from_result(result, source, ev, errstr, errstr_size);
    json_decref(result);
    return r;
}

rd_kafka_headers_t *rf_cloudevent_kafka_headers(const rf_cloudevent_t *ev)
{
    rd_kafka_headers_t *h = rd_kafka_headers_new(RF_CLOUDEVENT_ATTRS + 1);
    char name[32];
    const char *value;

    for (int i = 0; i < RF_CLOUDEVENT_ATTRS; i++) {
        snprintf(name, sizeof(name), "ce_%s", rf_cloudevent_attr(ev, i, &value));
        rd_kafka_header_add(h, name, -1, value, -1);
    }
    rd_kafka_header_add(h, "content-type", -1, RF_CLOUDEVENTS_CONTENT_TYPE, -1);
    return h;
}
