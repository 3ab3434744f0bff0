/* Error codes and the errstr convention. */
#include "rf_err.h"

#include <stdarg.h>
#include <stdio.h>

const char *rf_err_name(rf_err_t err)
{
    switch (err) {
    case RF_OK:
        return "ok";
    case RF_ERR_RETRY:
        return "retriable";
    case RF_ERR_PERM:
        return "permanent";
    case RF_ERR_FENCED:
        return "fenced";
    case RF_ERR_NOTFOUND:
        return "not found";
    }
    return "unknown";
}

int rf_err_retriable(rf_err_t err)
{
    return err == RF_ERR_RETRY;
}

rf_err_t rf_errf(rf_err_t err, char *errstr, size_t errstr_size, const char *fmt, ...)
{
    va_list ap;

    if (errstr && errstr_size > 0) {
        va_start(ap, fmt);
        vsnprintf(errstr, errstr_size, fmt, ap);
        va_end(ap);
    }
    return err;
}
