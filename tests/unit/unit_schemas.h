/* The project's schemas, loaded once for a group of unit tests of messages. */
#ifndef UNIT_SCHEMAS_H
#define UNIT_SCHEMAS_H

#include <stdio.h>
#include <stdlib.h>

#include "rf_schema.h"

/* The project's schemas/ (RELFLEET_SOURCE_DIR, else the source tree built from), loaded by
 * unit_schemas_setup as a cmocka group setup and freed by unit_schemas_teardown. */
static rf_schema_registry_t *reg;

static int unit_schemas_setup(void **state)
{
    const char *src = getenv("RELFLEET_SOURCE_DIR");
    char dir[1024], errstr[512];

    (void)state;
    snprintf(dir, sizeof(dir), "%s/schemas", src ? src : RELFLEET_SOURCE_DIR);
    reg = rf_schema_registry_new();
    if (!reg || rf_schema_registry_load_dir(reg, dir, errstr, sizeof(errstr)) != RF_OK) {
        print_error("cannot load schemas: %s\n", errstr);
        return -1;
    }
    return 0;
}

static int unit_schemas_teardown(void **state)
{
    (void)state;
    rf_schema_registry_destroy(reg);
    return 0;
}

#endif
