/* Release states: names, parsing and classes. */
#include "rf_release.h"

#include <string.h>

static const char *const status_names[RF_STATUS__COUNT] = {
    "queued",    "rendering", "applying",  "progressing", "paused",
    "succeeded", "failed",    "cancelled", "superseded",  "rejected", "awaiting_approval",
};

const char *rf_release_status_name(rf_release_status_t s)
{
    if ((int)s < 0 || s >= RF_STATUS__COUNT)
        return NULL;
    return status_names[s];
}

int rf_release_status_parse(const char *s)
{
    for (int i = 0; i < RF_STATUS__COUNT; i++)
        if (strcmp(status_names[i], s) == 0)
            return i;
    return -1;
}

int rf_release_status_terminal(rf_release_status_t s)
{
    return s >= RF_STATUS_SUCCEEDED && s <= RF_STATUS_REJECTED;
}

int rf_release_status_active(rf_release_status_t s)
{
    return s >= RF_STATUS_RENDERING && s <= RF_STATUS_PAUSED;
}
