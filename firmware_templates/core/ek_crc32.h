/*
 * ek_crc32: CRC-32/ISO-HDLC (the zlib / Ethernet CRC).
 * Reflected polynomial 0xEDB88320 (0x04C11DB7), init 0xFFFFFFFF, final xor 0xFFFFFFFF.
 * Check value: ek_crc32(0, "123456789", 9) == 0xCBF43926.
 */
#ifndef EK_CRC32_H
#define EK_CRC32_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Continue a CRC: start with crc = 0, feed the previous result to continue over more bytes
 * (same convention as zlib's crc32()). */
uint32_t ek_crc32(uint32_t crc, const uint8_t *data, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* EK_CRC32_H */
