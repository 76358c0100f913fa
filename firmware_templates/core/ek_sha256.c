/* SHA-256 written from the FIPS 180-4 description. */
#include "ek_sha256.h"

#include <string.h>

/* First 32 bits of the fractional parts of the cube roots of the first 64 primes (FIPS 180-4 4.2.2). */
static const uint32_t ek_sha256_k[64] = {
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u, 0x923f82a4u, 0xab1c5ed5u,
    0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u, 0x72be5d74u, 0x80deb1feu, 0x9bdc06a7u, 0xc19bf174u,
    0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu, 0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau,
    0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u, 0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u,
    0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu, 0x53380d13u, 0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u,
    0xa2bfe8a1u, 0xa81a664bu, 0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u,
    0x19a4c116u, 0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,
    0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u, 0x90befffau, 0xa4506cebu, 0xbef9a3f7u, 0xc67178f2u,
};

#define EK_ROTR(x, n) (((x) >> (n)) | ((x) << (32u - (n))))
#define EK_CH(x, y, z) (((x) & (y)) ^ (~(x) & (z)))
#define EK_MAJ(x, y, z) (((x) & (y)) ^ ((x) & (z)) ^ ((y) & (z)))
#define EK_BSIG0(x) (EK_ROTR((x), 2u) ^ EK_ROTR((x), 13u) ^ EK_ROTR((x), 22u))
#define EK_BSIG1(x) (EK_ROTR((x), 6u) ^ EK_ROTR((x), 11u) ^ EK_ROTR((x), 25u))
#define EK_SSIG0(x) (EK_ROTR((x), 7u) ^ EK_ROTR((x), 18u) ^ ((x) >> 3))
#define EK_SSIG1(x) (EK_ROTR((x), 17u) ^ EK_ROTR((x), 19u) ^ ((x) >> 10))

static void ek_sha256_compress(uint32_t state[8], const uint8_t block[64])
{
    uint32_t w[64];
    uint32_t a, b, c, d, e, f, g, h;
    unsigned t;

    /* message schedule (6.2.2 step 1), words are big-endian */
    for (t = 0; t < 16u; t++) {
        w[t] = ((uint32_t)block[4u * t] << 24) | ((uint32_t)block[4u * t + 1u] << 16) |
               ((uint32_t)block[4u * t + 2u] << 8) | (uint32_t)block[4u * t + 3u];
    }
    for (t = 16; t < 64u; t++) {
        w[t] = EK_SSIG1(w[t - 2u]) + w[t - 7u] + EK_SSIG0(w[t - 15u]) + w[t - 16u];
    }

    a = state[0]; b = state[1]; c = state[2]; d = state[3];
    e = state[4]; f = state[5]; g = state[6]; h = state[7];
    for (t = 0; t < 64u; t++) {
        uint32_t t1 = h + EK_BSIG1(e) + EK_CH(e, f, g) + ek_sha256_k[t] + w[t];
        uint32_t t2 = EK_BSIG0(a) + EK_MAJ(a, b, c);
        h = g; g = f; f = e; e = d + t1;
        d = c; c = b; b = a; a = t1 + t2;
    }
    state[0] += a; state[1] += b; state[2] += c; state[3] += d;
    state[4] += e; state[5] += f; state[6] += g; state[7] += h;
}

void ek_sha256_init(ek_sha256_ctx *ctx)
{
    /* initial hash value H(0) (5.3.3) */
    ctx->state[0] = 0x6a09e667u; ctx->state[1] = 0xbb67ae85u;
    ctx->state[2] = 0x3c6ef372u; ctx->state[3] = 0xa54ff53au;
    ctx->state[4] = 0x510e527fu; ctx->state[5] = 0x9b05688cu;
    ctx->state[6] = 0x1f83d9abu; ctx->state[7] = 0x5be0cd19u;
    ctx->total_bytes = 0;
    ctx->block_fill = 0;
}

void ek_sha256_update(ek_sha256_ctx *ctx, const uint8_t *data, size_t len)
{
    ctx->total_bytes += len;
    while (len > 0u) {
        size_t take = 64u - ctx->block_fill;
        if (take > len) {
            take = len;
        }
        memcpy(ctx->block + ctx->block_fill, data, take);
        ctx->block_fill += take;
        data += take;
        len -= take;
        if (ctx->block_fill == 64u) {
            ek_sha256_compress(ctx->state, ctx->block);
            ctx->block_fill = 0;
        }
    }
}

void ek_sha256_final(ek_sha256_ctx *ctx, uint8_t digest[EK_SHA256_DIGEST_BYTES])
{
    /* padding (5.1.1): a 1 bit, zeros, then the message length in bits as a 64-bit big-endian */
    uint64_t bits = ctx->total_bytes * 8u;
    unsigned i;
    ctx->block[ctx->block_fill++] = 0x80u;
    if (ctx->block_fill > 56u) {
        memset(ctx->block + ctx->block_fill, 0, 64u - ctx->block_fill);
        ek_sha256_compress(ctx->state, ctx->block);
        ctx->block_fill = 0;
    }
    memset(ctx->block + ctx->block_fill, 0, 56u - ctx->block_fill);
    for (i = 0; i < 8u; i++) {
        ctx->block[63u - i] = (uint8_t)(bits >> (8u * i));
    }
    ek_sha256_compress(ctx->state, ctx->block);
    for (i = 0; i < 8u; i++) {
        digest[4u * i] = (uint8_t)(ctx->state[i] >> 24);
        digest[4u * i + 1u] = (uint8_t)(ctx->state[i] >> 16);
        digest[4u * i + 2u] = (uint8_t)(ctx->state[i] >> 8);
        digest[4u * i + 3u] = (uint8_t)ctx->state[i];
    }
}

void ek_sha256(const uint8_t *data, size_t len, uint8_t digest[EK_SHA256_DIGEST_BYTES])
{
    ek_sha256_ctx ctx;
    ek_sha256_init(&ctx);
    ek_sha256_update(&ctx, data, len);
    ek_sha256_final(&ctx, digest);
}
