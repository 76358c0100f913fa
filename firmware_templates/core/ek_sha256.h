/*
 * ek_sha256: SHA-256 as specified in FIPS 180-4 (sections 4.1.2, 4.2.2, 5.1.1, 6.2).
 * Streaming: init, update any number of times, final. No heap; the context is 108 bytes.
 */
#ifndef EK_SHA256_H
#define EK_SHA256_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EK_SHA256_DIGEST_BYTES 32u

typedef struct ek_sha256_ctx {
    uint32_t state[8];
    uint64_t total_bytes;
    uint8_t block[64];
    size_t block_fill;
} ek_sha256_ctx;

void ek_sha256_init(ek_sha256_ctx *ctx);
void ek_sha256_update(ek_sha256_ctx *ctx, const uint8_t *data, size_t len);
void ek_sha256_final(ek_sha256_ctx *ctx, uint8_t digest[EK_SHA256_DIGEST_BYTES]);
/* One-shot helper. */
void ek_sha256(const uint8_t *data, size_t len, uint8_t digest[EK_SHA256_DIGEST_BYTES]);

#ifdef __cplusplus
}
#endif

#endif /* EK_SHA256_H */
