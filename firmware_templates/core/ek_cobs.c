#include "ek_cobs.h"

static void ek_cobs_flush_block(ek_cobs_encoder *enc)
{
    enc->after_full_block = (enc->fill == 255u);
    enc->block[0] = (uint8_t)enc->fill;
    enc->sink(enc->sink_ctx, enc->block, enc->fill);
    enc->fill = 1;
}

void ek_cobs_encode_begin(ek_cobs_encoder *enc, ek_cobs_sink sink, void *sink_ctx)
{
    enc->sink = sink;
    enc->sink_ctx = sink_ctx;
    enc->fill = 1;
    enc->after_full_block = 0;
}

void ek_cobs_encode_bytes(ek_cobs_encoder *enc, const uint8_t *data, size_t len)
{
    size_t i;
    for (i = 0; i < len; i++) {
        if (data[i] == 0u) {
            /* a zero ends the block: the code byte says where it was */
            ek_cobs_flush_block(enc);
        } else {
            enc->block[enc->fill++] = data[i];
            if (enc->fill == 255u) {
                /* 254 non-zero bytes: code 0xFF, which implies no zero */
                ek_cobs_flush_block(enc);
            }
        }
    }
}

void ek_cobs_encode_end(ek_cobs_encoder *enc)
{
    static const uint8_t delimiter = 0u;
    /* Data that ends right after a full block needs no empty trailing block: the encoding is
     * then exactly n + ceil(n / 254) bytes, as docs/protocol.md counts it. */
    if (!(enc->fill == 1u && enc->after_full_block)) {
        ek_cobs_flush_block(enc);
    }
    enc->sink(enc->sink_ctx, &delimiter, 1u);
}

long ek_cobs_decode_inplace(uint8_t *buf, size_t len)
{
    size_t in = 0;
    size_t out = 0;
    while (in < len) {
        uint8_t code = buf[in++];
        size_t run;
        size_t k;
        if (code == 0u) {
            return -1;
        }
        run = (size_t)code - 1u;
        if (run > len - in) {
            return -1;
        }
        for (k = 0; k < run; k++) {
            uint8_t b = buf[in++];
            if (b == 0u) {
                return -1;
            }
            buf[out++] = b;
        }
        /* every block except a full one (0xFF) and the last one stands for a zero */
        if (code != 0xFFu && in < len) {
            buf[out++] = 0u;
        }
    }
    return (long)out;
}
