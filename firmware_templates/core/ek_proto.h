/*
 * ek_proto: the device side of the edgekit protocol, version 1 (docs/protocol.md).
 *
 * Portable C99, no heap, no TensorFlow Lite Micro inside. All buffers live in one ek_core struct
 * whose sizes come from the EK_* macros below; declare it `static` (it is large: two model slots).
 *
 * A board port provides two small tables of functions:
 *
 *   ek_platform  how to talk and keep time on this board (UART/USB writes, a clock, reset, nonce)
 *   ek_runner    how to run a model (TFLM in the Arduino / PlatformIO sketches, a deterministic
 *                test transform in the host build and the QEMU firmware)
 *
 * and then does:
 *
 *   static ek_core core;
 *   ek_init(&core, &platform, &runner);
 *   ek_send_boot_hello(&core);              // the unsolicited HELLO with seq 0
 *   for (;;) { if (byte available) ek_feed_byte(&core, byte); }
 *
 * Everything runs in the caller's context: the core never blocks except inside write_bytes()
 * and the runner, and never calls back into the platform from an interrupt.
 *
 * On the wire: every frame the core sends is preceded by one 0x00 (an empty frame, which receivers
 * ignore), so that a frame cut on the way cannot swallow the next one. Received frames longer than
 * EK_MAX_PAYLOAD + 10 bytes (decoded), with a bad CRC, a wrong length field or another version are
 * dropped without an answer. Choices where docs/protocol.md leaves room are listed in README.md.
 */
#ifndef EK_PROTO_H
#define EK_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "ek_cobs.h"
#include "ek_sha256.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- sizes (override with -D or before including this header) ------------------------------- */

/* Largest payload of a frame to the device, announced in HELLO as max_payload. Replies are never
 * longer either. The receive buffer is EK_COBS_MAX_ENCODED(EK_MAX_PAYLOAD + 10) bytes. */
#ifndef EK_MAX_PAYLOAD
#define EK_MAX_PAYLOAD 1024u
#endif
/* Data bytes per UPLOAD_CHUNK the device asks for (clipped to EK_MAX_PAYLOAD - 4). */
#ifndef EK_UPLOAD_CHUNK_BYTES
#define EK_UPLOAD_CHUNK_BYTES (EK_MAX_PAYLOAD - 4u)
#endif
/* Largest model the device accepts (UPLOAD_BEGIN beyond this: ERROR TOO_LARGE). */
#ifndef EK_MODEL_MAX
#define EK_MODEL_MAX 65536u
#endif
/* 2: an upload goes to a second buffer and the active model keeps running until the new one is
 *    hash-checked and loaded (docs/protocol.md 2.2).
 * 1: half the RAM; the active model is dropped when a new upload begins at offset 0. */
#ifndef EK_MODEL_SLOTS
#define EK_MODEL_SLOTS 2
#endif
/* Input / output staging buffers: the largest total input and output tensor bytes. */
#ifndef EK_INPUT_MAX
#define EK_INPUT_MAX 4096u
#endif
#ifndef EK_OUTPUT_MAX
#define EK_OUTPUT_MAX 4096u
#endif
/* Timed runs one PROFILE request may ask for (more: ERROR BAD_LENGTH). 12 bytes of RAM each. */
#ifndef EK_PROFILE_MAX_RUNS
#define EK_PROFILE_MAX_RUNS 256u
#endif

#if EK_MAX_PAYLOAD < 64u || EK_MAX_PAYLOAD > 65535u
#error "EK_MAX_PAYLOAD must be within 64..65535"
#endif
#if EK_MODEL_SLOTS != 1 && EK_MODEL_SLOTS != 2
#error "EK_MODEL_SLOTS must be 1 or 2"
#endif
#if (EK_MODEL_MAX % 16u) != 0u
#error "EK_MODEL_MAX must be a multiple of 16 (model slots are 16-byte aligned)"
#endif

/* TFLM reads the flatbuffer in place and wants it 16-byte aligned (its tensors' buffers inside the
 * model are aligned relative to the start). */
#if defined(__GNUC__) || defined(__clang__)
#define EK_ALIGNED16 __attribute__((aligned(16)))
#else
#define EK_ALIGNED16
#endif

/* ---- protocol constants ----------------------------------------------------------------------- */

#define EK_PROTO_VERSION 1u
#define EK_FRAME_OVERHEAD 10u   /* header 6 + crc 4 */

enum ek_msg_type {
    EK_HELLO_REQ = 0x01, EK_UPLOAD_BEGIN = 0x02, EK_UPLOAD_CHUNK = 0x03, EK_UPLOAD_END = 0x04,
    EK_INVOKE = 0x05, EK_TENSOR_WRITE = 0x06, EK_TENSOR_READ = 0x07, EK_PROFILE = 0x08,
    EK_RESET = 0x09,
    EK_HELLO = 0x81, EK_UPLOAD_STATUS = 0x82, EK_UPLOAD_DONE = 0x84, EK_INVOKE_RESULT = 0x85,
    EK_TENSOR_ACK = 0x86, EK_TENSOR_DATA = 0x87, EK_PROFILE_RUNS = 0x88, EK_PROFILE_OPS = 0x89,
    EK_PROFILE_END = 0x8A, EK_ACK = 0x8B, EK_LOG = 0x8C, EK_ERROR = 0xFF
};

enum ek_error_code {
    EK_ERR_BAD_FRAME = 1, EK_ERR_UNKNOWN_TYPE = 2, EK_ERR_BAD_LENGTH = 3, EK_ERR_NO_MODEL = 4,
    EK_ERR_HASH_MISMATCH = 5, EK_ERR_MODEL_INVALID = 6, EK_ERR_TOO_LARGE = 7,
    EK_ERR_INVOKE_FAILED = 8, EK_ERR_BAD_STATE = 9, EK_ERR_UNSUPPORTED = 10
};

enum ek_capability {
    EK_CAP_UPLOAD = 1u << 0, EK_CAP_INVOKE = 1u << 1, EK_CAP_PROFILE = 1u << 2,
    EK_CAP_PER_OP = 1u << 3, EK_CAP_CYCLES = 1u << 4, EK_CAP_RESET = 1u << 5, EK_CAP_LOG = 1u << 6
};

enum ek_log_level { EK_LOG_DEBUG = 0, EK_LOG_INFO = 1, EK_LOG_WARNING = 2, EK_LOG_ERROR = 3 };

/* ---- what a board provides ------------------------------------------------------------------ */

typedef struct ek_platform {
    void *ctx;                      /* passed back to every function below */
    /* Required. Sends bytes on the link; returns when they are queued or sent. */
    void (*write_bytes)(void *ctx, const uint8_t *data, size_t len);
    /* Required. A monotonic clock in nanoseconds (any start). */
    uint64_t (*time_ns)(void *ctx);
    /* Optional (NULL: INVOKE reports cycles 0, no CYCLES capability). A free-running core cycle
     * counter; the core only takes differences, so wrapping is fine. */
    uint32_t (*cycles)(void *ctx);
    /* Optional (NULL: RESET answers ERROR UNSUPPORTED). Called after the ACK reply was written;
     * on a board it reboots and does not return. If it returns (host builds), the caller of
     * ek_feed_byte() sees ek_reset_requested() and re-runs ek_init() + ek_send_boot_hello(). */
    void (*reset)(void *ctx);
    uint32_t boot_nonce;            /* new after every reset: random, or a boot counter */
    const char *board_id;           /* the id of targets/<board>.yaml, e.g. "qemu-m4" */
    const char *firmware_version;
} ek_platform;

typedef struct ek_runner {
    void *ctx;                      /* passed back to every function below */
    uint32_t arena_bytes;           /* the tensor arena this firmware has (HELLO arena_bytes) */
    /* Required. Prepares `model` (len bytes, hash already checked) for invoke. The bytes stay
     * valid and unchanged until the next successful load_model(). Returns 0 on success and the
     * arena bytes actually used in *arena_used; non-zero: the model is refused (MODEL_INVALID). */
    int (*load_model)(void *ctx, const uint8_t *model, uint32_t len, uint32_t *arena_used);
    /* Required. Total bytes of all input / all output tensors of the loaded model. */
    uint32_t (*input_size)(void *ctx);
    uint32_t (*output_size)(void *ctx);
    /* Required. Runs the model once: reads input_size() bytes from `in`, writes output_size() bytes
     * to `out`. Returns 0 on success (non-zero: INVOKE_FAILED). */
    int (*invoke)(void *ctx, const uint8_t *in, uint8_t *out);
    /* Optional per-op profile hooks (all three or none: PER_OP capability).
     * profile_reset() clears the per-op totals before the timed runs of a PROFILE; op_count() and
     * op_record() report them afterwards: `name` must stay valid until the next invoke. */
    void (*profile_reset)(void *ctx);
    uint16_t (*op_count)(void *ctx);
    int (*op_record)(void *ctx, uint16_t index, const char **name, uint32_t *count,
                     uint64_t *total_ns);
} ek_runner;

/* ---- the core state ------------------------------------------------------------------------- */

#define EK_RX_BUFFER_BYTES EK_COBS_MAX_ENCODED(EK_MAX_PAYLOAD + EK_FRAME_OVERHEAD)

typedef struct ek_run_record {
    uint64_t time_ns;
    uint32_t cycles;
} ek_run_record;

typedef struct ek_core {
    const ek_platform *platform;
    const ek_runner *runner;

    /* receiver */
    uint8_t rx[EK_RX_BUFFER_BYTES];
    size_t rx_len;
    int rx_overflow;                /* discarding up to the next 0x00 */
    uint32_t frames_dropped;        /* bad COBS / CRC / length / version / oversize */

    /* last request and its cached reply (replayed for a duplicate seq + type) */
    int have_last;
    uint8_t last_req_type;
    uint16_t last_seq;
    uint8_t reply_type;
    uint16_t reply_len;
    uint8_t reply[EK_MAX_PAYLOAD];

    /* models: slot `active_slot` holds the active model (if model_active) */
    uint8_t model[EK_MODEL_SLOTS][EK_MODEL_MAX] EK_ALIGNED16;
    int model_active;
    int active_slot;
    uint32_t active_len;
    uint8_t active_sha[EK_SHA256_DIGEST_BYTES];
    uint32_t arena_used;

    /* upload in progress */
    int upload_open;
    int upload_slot;
    uint32_t upload_total;
    uint32_t upload_received;
    uint8_t upload_sha[EK_SHA256_DIGEST_BYTES];

    /* tensors */
    uint8_t input[EK_INPUT_MAX];
    uint8_t output[EK_OUTPUT_MAX];
    int have_output;

    /* last PROFILE result (replayed for a duplicate request) */
    ek_run_record runs[EK_PROFILE_MAX_RUNS];
    uint16_t profile_runs;

    int reset_requested;
    ek_cobs_encoder enc;
} ek_core;

/* ---- API ------------------------------------------------------------------------------------ */

/* Clears all state (no active model). Does not send anything. */
void ek_init(ek_core *core, const ek_platform *platform, const ek_runner *runner);
/* Activates a model the firmware already holds (one compiled into flash, say), as UPLOAD_END
 * activates an uploaded one: the runner loads it, and HELLO then reports its length and SHA-256,
 * so that the host can confirm what was flashed. `model` must stay valid and unchanged while it is
 * active (until an upload replaces it). Call after ek_init() and before ek_send_boot_hello().
 * Returns 0, EK_ERR_TOO_LARGE (input or output beyond EK_INPUT_MAX / EK_OUTPUT_MAX), or
 * EK_ERR_MODEL_INVALID (the runner refused it); on an error no model is active. */
int ek_activate_model(ek_core *core, const uint8_t *model, uint32_t len);
/* Sends the unsolicited boot HELLO (seq 0). Call once after ek_init(). */
void ek_send_boot_hello(ek_core *core);
/* Feeds received bytes; complete frames are handled (and answered) before these return. */
void ek_feed_byte(ek_core *core, uint8_t byte);
void ek_feed(ek_core *core, const uint8_t *data, size_t len);
/* Sends a LOG frame (seq 0); text is cut to fit one frame. */
void ek_log(ek_core *core, uint8_t level, const char *text);
/* The capability bits this core announces with its platform and runner. */
uint32_t ek_capabilities(const ek_core *core);
/* Non-zero after a RESET request whose platform reset() returned (host builds). */
int ek_reset_requested(const ek_core *core);

#ifdef __cplusplus
}
#endif

#endif /* EK_PROTO_H */
