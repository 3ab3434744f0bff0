/* Hashes: SHA-256 hex digests of bytes (template versions, manifest digests). */
#ifndef RF_HASH_H
#define RF_HASH_H

#include <stddef.h>

/* Writes the lowercase hex SHA-256 of data into out (65 bytes with the NUL). */
void rf_hash_sha256_hex(const void *data, size_t len, char out[65]);

#endif
