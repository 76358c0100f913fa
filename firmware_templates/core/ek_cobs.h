/*
 * ek_cobs: Consistent Overhead Byte Stuffing (Cheshire & Baker, 1999).
 *
 * An encoded body never contains 0x00, so 0x00 can end every frame on the wire. The encoder is
 * streaming (it needs a 255-byte block buffer, not a copy of the frame); the decoder works in
 * place, because a decoded frame is never longer than its encoding.
 */
#ifndef EK_COBS_H
#define EK_COBS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Largest encoding of n raw bytes, without the 0x00 delimiter. */
#define EK_COBS_MAX_ENCODED(n) ((n) + ((n) / 254u) + 1u)

/* Called with each finished piece of encoded output. */
typedef void (*ek_cobs_sink)(void *ctx, const uint8_t *data, size_t len);

typedef struct ek_cobs_encoder {
    uint8_t block[255];       /* block[0] is the code byte, then up to 254 data bytes */
    size_t fill;              /* bytes used in block, >= 1 */
    int after_full_block;     /* the last flushed block was a full one (code 0xFF) */
    ek_cobs_sink sink;
    void *sink_ctx;
} ek_cobs_encoder;

void ek_cobs_encode_begin(ek_cobs_encoder *enc, ek_cobs_sink sink, void *sink_ctx);
void ek_cobs_encode_bytes(ek_cobs_encoder *enc, const uint8_t *data, size_t len);
/* Flushes the last block and emits the 0x00 frame delimiter. */
void ek_cobs_encode_end(ek_cobs_encoder *enc);

/* Decodes buf[0..len) in place (no delimiter inside). Returns the decoded length, or -1 if the
 * input is not valid COBS (a 0x00 byte, or a code byte that runs past the end). */
long ek_cobs_decode_inplace(uint8_t *buf, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* EK_COBS_H */
