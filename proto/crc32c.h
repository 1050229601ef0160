/* crc32c: CRC-32C (Castagnoli), the checksum of shards and manifests.
 * Uses the SSE4.2 crc32 instruction when the CPU has it (checked once at run time), else a
 * slicing-by-8 table; both give identical results. */
#ifndef ADAPT_CRC32C_H
#define ADAPT_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Continues a running checksum: crc32c_update(0, ...) starts one. */
uint32_t crc32c_update(uint32_t crc, const void *data, size_t len);
static inline uint32_t crc32c(const void *data, size_t len) { return crc32c_update(0, data, len); }

#endif
