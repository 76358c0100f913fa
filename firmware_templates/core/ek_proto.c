/* The device side of the edgekit protocol v1 (docs/protocol.md). See ek_proto.h for the API. */
#include "ek_proto.h"

#include <string.h>

#include "ek_crc32.h"

#define EK_HEADER_BYTES 6u
#define EK_CRC_BYTES 4u
#define EK_RUN_RECORD_BYTES 12u
#define EK_RUNS_PER_FRAME ((EK_MAX_PAYLOAD - 6u) / EK_RUN_RECORD_BYTES)
#define EK_INVOKE_RESULT_HEAD 16u

/* ---- little-endian helpers -------------------------------------------------------------------- */

static uint16_t ek_get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | ((uint16_t)p[1] << 8));
}

static uint32_t ek_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static void ek_set_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void ek_set_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* ---- sending ---------------------------------------------------------------------------------- */

static void ek_sink(void *ctx, const uint8_t *data, size_t len)
{
    const ek_core *core = (const ek_core *)ctx;
    core->platform->write_bytes(core->platform->ctx, data, len);
}

static const uint8_t ek_delimiter = 0u;

/* One frame whose payload is a followed by b (either may be empty). */
static void ek_send_frame(ek_core *core, uint8_t type, uint16_t seq, const uint8_t *a, size_t alen,
                          const uint8_t *b, size_t blen)
{
    uint8_t header[EK_HEADER_BYTES];
    uint8_t crc_bytes[EK_CRC_BYTES];
    uint32_t crc;
    header[0] = (uint8_t)EK_PROTO_VERSION;
    header[1] = type;
    ek_set_u16(header + 2, seq);
    ek_set_u16(header + 4, (uint16_t)(alen + blen));
    crc = ek_crc32(0u, header, sizeof header);
    crc = ek_crc32(crc, a, alen);
    crc = ek_crc32(crc, b, blen);
    ek_set_u32(crc_bytes, crc);
    /* a leading delimiter (an empty frame, ignored by receivers) ends whatever a cut-off earlier
     * frame left in the host's receiver, so that it cannot swallow this one (docs/protocol.md 1) */
    ek_sink(core, &ek_delimiter, 1u);
    ek_cobs_encode_begin(&core->enc, ek_sink, core);
    ek_cobs_encode_bytes(&core->enc, header, sizeof header);
    ek_cobs_encode_bytes(&core->enc, a, alen);
    ek_cobs_encode_bytes(&core->enc, b, blen);
    ek_cobs_encode_bytes(&core->enc, crc_bytes, sizeof crc_bytes);
    ek_cobs_encode_end(&core->enc);
}

/* Replies are built in core->reply, so that a duplicate request gets the same bytes back. */
static void ek_reply_begin(ek_core *core, uint8_t type)
{
    core->reply_type = type;
    core->reply_len = 0;
}

static uint8_t *ek_reply_grow(ek_core *core, size_t n)
{
    uint8_t *p = core->reply + core->reply_len;
    core->reply_len = (uint16_t)(core->reply_len + n);
    return p;
}

static void ek_reply_u8(ek_core *core, uint8_t v) { *ek_reply_grow(core, 1u) = v; }
static void ek_reply_u16(ek_core *core, uint16_t v) { ek_set_u16(ek_reply_grow(core, 2u), v); }
static void ek_reply_u32(ek_core *core, uint32_t v) { ek_set_u32(ek_reply_grow(core, 4u), v); }

static void ek_reply_u64(ek_core *core, uint64_t v)
{
    ek_reply_u32(core, (uint32_t)v);
    ek_reply_u32(core, (uint32_t)(v >> 32));
}

static void ek_reply_bytes(ek_core *core, const uint8_t *data, size_t n)
{
    if (n > 0u) {
        memcpy(ek_reply_grow(core, n), data, n);
    }
}

static size_t ek_reply_room(const ek_core *core)
{
    return (size_t)EK_MAX_PAYLOAD - core->reply_len;
}

/* A u8-length-prefixed string, cut to 255 bytes and to leave `keep` bytes of room after it. */
static void ek_reply_str(ek_core *core, const char *text, size_t keep)
{
    size_t n = text ? strlen(text) : 0u;
    size_t room = ek_reply_room(core);
    size_t limit = room > keep + 1u ? room - keep - 1u : 0u;
    if (n > 255u) {
        n = 255u;
    }
    if (n > limit) {
        n = limit;
    }
    ek_reply_u8(core, (uint8_t)n);
    ek_reply_bytes(core, (const uint8_t *)text, n);
}

static void ek_reply_send(ek_core *core, uint16_t seq)
{
    ek_send_frame(core, core->reply_type, seq, core->reply, core->reply_len, NULL, 0u);
}

static void ek_reply_error(ek_core *core, uint16_t seq, uint16_t code, const char *message)
{
    ek_reply_begin(core, EK_ERROR);
    ek_reply_u16(core, code);
    if (message) {
        size_t n = strlen(message);
        if (n > ek_reply_room(core)) {
            n = ek_reply_room(core);
        }
        ek_reply_bytes(core, (const uint8_t *)message, n);
    }
    ek_reply_send(core, seq);
}

/* ---- state ------------------------------------------------------------------------------------ */

uint32_t ek_capabilities(const ek_core *core)
{
    uint32_t caps = EK_CAP_UPLOAD | EK_CAP_INVOKE | EK_CAP_PROFILE | EK_CAP_LOG;
    const ek_runner *r = core->runner;
    if (r->profile_reset && r->op_count && r->op_record) {
        caps |= EK_CAP_PER_OP;
    }
    if (core->platform->cycles) {
        caps |= EK_CAP_CYCLES;
    }
    if (core->platform->reset) {
        caps |= EK_CAP_RESET;
    }
    return caps;
}

int ek_reset_requested(const ek_core *core)
{
    return core->reset_requested;
}

void ek_init(ek_core *core, const ek_platform *platform, const ek_runner *runner)
{
    /* field by field: clearing the model slots would cost time on a large buffer */
    core->platform = platform;
    core->runner = runner;
    core->rx_len = 0;
    core->rx_overflow = 0;
    core->frames_dropped = 0;
    core->have_last = 0;
    core->last_req_type = 0;
    core->last_seq = 0;
    core->reply_type = 0;
    core->reply_len = 0;
    core->model_active = 0;
    core->active_slot = 0;
    core->active_len = 0;
    memset(core->active_sha, 0, sizeof core->active_sha);
    core->arena_used = 0;
    core->upload_open = 0;
    core->upload_slot = 0;
    core->upload_total = 0;
    core->upload_received = 0;
    core->have_output = 0;
    core->profile_runs = 0;
    core->reset_requested = 0;
}

static uint64_t ek_now_ns(const ek_core *core)
{
    return core->platform->time_ns(core->platform->ctx);
}

static uint32_t ek_now_cycles(const ek_core *core)
{
    return core->platform->cycles ? core->platform->cycles(core->platform->ctx) : 0u;
}

/* ---- HELLO ------------------------------------------------------------------------------------ */

static void ek_build_hello(ek_core *core)
{
    const ek_platform *p = core->platform;
    ek_reply_begin(core, EK_HELLO);
    ek_reply_u8(core, (uint8_t)EK_PROTO_VERSION);
    ek_reply_u32(core, ek_capabilities(core));
    ek_reply_u16(core, (uint16_t)EK_MAX_PAYLOAD);
    ek_reply_u32(core, p->boot_nonce);
    ek_reply_u32(core, core->runner->arena_bytes);
    ek_reply_u32(core, core->model_active ? core->active_len : 0u);
    ek_reply_bytes(core, core->active_sha, sizeof core->active_sha);   /* zeros when no model */
    ek_reply_str(core, p->board_id, 1u);
    ek_reply_str(core, p->firmware_version, 0u);
}

void ek_send_boot_hello(ek_core *core)
{
    core->have_last = 0;   /* the reply buffer now holds no cached reply */
    ek_build_hello(core);
    ek_reply_send(core, 0u);
}

void ek_log(ek_core *core, uint8_t level, const char *text)
{
    size_t n = text ? strlen(text) : 0u;
    if (n > EK_MAX_PAYLOAD - 1u) {
        n = EK_MAX_PAYLOAD - 1u;
    }
    ek_send_frame(core, EK_LOG, 0u, &level, 1u, (const uint8_t *)text, n);
}

/* ---- upload ----------------------------------------------------------------------------------- */

static uint16_t ek_chunk_bytes(void)
{
    return (uint16_t)(EK_UPLOAD_CHUNK_BYTES < EK_MAX_PAYLOAD - 4u ? EK_UPLOAD_CHUNK_BYTES
                                                                : EK_MAX_PAYLOAD - 4u);
}

static void ek_on_upload_begin(ek_core *core, uint16_t seq, const uint8_t *pl, size_t plen)
{
    uint32_t total;
    uint16_t chunk = ek_chunk_bytes();
    if (plen != 4u + EK_SHA256_DIGEST_BYTES) {
        ek_reply_error(core, seq, EK_ERR_BAD_FRAME, "UPLOAD_BEGIN takes total_len u32 + sha256");
        return;
    }
    total = ek_get_u32(pl);
    if (total > EK_MODEL_MAX) {
        ek_reply_error(core, seq, EK_ERR_TOO_LARGE, "model larger than the model buffer");
        return;
    }
    if (total == 0u) {
        ek_reply_error(core, seq, EK_ERR_BAD_LENGTH, "empty model");
        return;
    }
    if (!(core->upload_open && core->upload_total == total &&
          memcmp(core->upload_sha, pl + 4, EK_SHA256_DIGEST_BYTES) == 0)) {
        /* a new upload: into the free slot, so the active model keeps running meanwhile */
#if EK_MODEL_SLOTS == 2
        core->upload_slot = core->model_active ? 1 - core->active_slot : 0;
#else
        core->upload_slot = 0;
        core->model_active = 0;
        memset(core->active_sha, 0, sizeof core->active_sha);
#endif
        core->upload_open = 1;
        core->upload_total = total;
        core->upload_received = 0;
        memcpy(core->upload_sha, pl + 4, EK_SHA256_DIGEST_BYTES);
    }
    ek_reply_begin(core, EK_UPLOAD_STATUS);
    ek_reply_u32(core, core->upload_received);
    ek_reply_u16(core, chunk);
    ek_reply_send(core, seq);
}

static void ek_on_upload_chunk(ek_core *core, uint16_t seq, const uint8_t *pl, size_t plen)
{
    uint32_t offset;
    size_t n;
    uint16_t chunk = ek_chunk_bytes();
    if (plen < 4u) {
        ek_reply_error(core, seq, EK_ERR_BAD_FRAME, "UPLOAD_CHUNK takes offset u32 + data");
        return;
    }
    if (!core->upload_open) {
        ek_reply_error(core, seq, EK_ERR_BAD_STATE, "UPLOAD_CHUNK without UPLOAD_BEGIN");
        return;
    }
    offset = ek_get_u32(pl);
    n = plen - 4u;
    if (offset == core->upload_received) {
        if (n > core->upload_total - core->upload_received) {
            ek_reply_error(core, seq, EK_ERR_BAD_LENGTH, "chunk runs past total_len");
            return;
        }
        memcpy(core->model[core->upload_slot] + offset, pl + 4, n);
        core->upload_received += (uint32_t)n;
    }
    /* a chunk at another offset is not applied: the reply says where to continue */
    ek_reply_begin(core, EK_UPLOAD_STATUS);
    ek_reply_u32(core, core->upload_received);
    ek_reply_u16(core, chunk);
    ek_reply_send(core, seq);
}

static int ek_load(ek_core *core, const uint8_t *model, uint32_t len, const uint8_t *digest);

static void ek_on_upload_end(ek_core *core, uint16_t seq)
{
    uint8_t digest[EK_SHA256_DIGEST_BYTES];
    const uint8_t *model;
    int rc;
    if (!core->upload_open) {
        ek_reply_error(core, seq, EK_ERR_BAD_STATE, "UPLOAD_END without UPLOAD_BEGIN");
        return;
    }
    core->upload_open = 0;   /* complete or not, this upload is over */
    if (core->upload_received != core->upload_total) {
        ek_reply_error(core, seq, EK_ERR_BAD_STATE, "UPLOAD_END before all bytes arrived");
        return;
    }
    model = core->model[core->upload_slot];
    ek_sha256(model, core->upload_total, digest);
    if (memcmp(digest, core->upload_sha, sizeof digest) != 0) {
        ek_reply_error(core, seq, EK_ERR_HASH_MISMATCH, "sha256 of the received bytes differs");
        return;
    }
    rc = ek_load(core, model, core->upload_total, digest);
    if (rc != 0) {
        ek_reply_error(core, seq, (uint16_t)rc,
                       rc == EK_ERR_TOO_LARGE ? "the model's input or output exceeds the tensor buffers"
                                              : "the runtime refused the model");
        return;
    }
    core->active_slot = core->upload_slot;
    ek_reply_begin(core, EK_UPLOAD_DONE);
    ek_reply_bytes(core, digest, sizeof digest);
    ek_reply_u32(core, core->arena_used);
    ek_reply_send(core, seq);
}

/* Loads `model` (hash `digest`) into the runner and makes it the active model. Non-zero: refused,
 * and no model is active (the runtime may have dropped the previous one while trying). */
static int ek_load(ek_core *core, const uint8_t *model, uint32_t len, const uint8_t *digest)
{
    const ek_runner *r = core->runner;
    uint32_t arena_used = 0;
    if (r->load_model(r->ctx, model, len, &arena_used) != 0) {
        core->model_active = 0;
        memset(core->active_sha, 0, sizeof core->active_sha);
        return EK_ERR_MODEL_INVALID;
    }
    if (r->input_size(r->ctx) > EK_INPUT_MAX || r->output_size(r->ctx) > EK_OUTPUT_MAX) {
        core->model_active = 0;
        memset(core->active_sha, 0, sizeof core->active_sha);
        return EK_ERR_TOO_LARGE;
    }
    core->model_active = 1;
    core->active_len = len;
    memcpy(core->active_sha, digest, EK_SHA256_DIGEST_BYTES);
    core->arena_used = arena_used;
    core->have_output = 0;
    memset(core->input, 0, sizeof core->input);
    return 0;
}

int ek_activate_model(ek_core *core, const uint8_t *model, uint32_t len)
{
    uint8_t digest[EK_SHA256_DIGEST_BYTES];
    if (model == NULL || len == 0u) {
        core->model_active = 0;
        memset(core->active_sha, 0, sizeof core->active_sha);
        return EK_ERR_MODEL_INVALID;
    }
    ek_sha256(model, len, digest);
    /* the model is outside both slots: the next upload may take either, take slot 0 */
    core->active_slot = EK_MODEL_SLOTS - 1;
    return ek_load(core, model, len, digest);
}

/* ---- tensors and invoke ----------------------------------------------------------------------- */

static int ek_run_once(ek_core *core, ek_run_record *rec)
{
    const ek_runner *r = core->runner;
    uint64_t t0;
    uint32_t c0;
    int rc;
    c0 = ek_now_cycles(core);
    t0 = ek_now_ns(core);
    rc = r->invoke(r->ctx, core->input, core->output);
    rec->time_ns = ek_now_ns(core) - t0;
    rec->cycles = ek_now_cycles(core) - c0;
    core->have_output = (rc == 0);
    return rc;
}

static void ek_on_invoke(ek_core *core, uint16_t seq, const uint8_t *pl, size_t plen)
{
    const ek_runner *r = core->runner;
    ek_run_record rec;
    uint32_t in_size;
    uint32_t out_size;
    size_t n;
    if (!core->model_active) {
        ek_reply_error(core, seq, EK_ERR_NO_MODEL, "no active model");
        return;
    }
    in_size = r->input_size(r->ctx);
    if (plen != 0u) {
        if (plen != in_size) {
            ek_reply_error(core, seq, EK_ERR_BAD_LENGTH, "input length differs from the model's");
            return;
        }
        memcpy(core->input, pl, plen);
    }
    if (ek_run_once(core, &rec) != 0) {
        ek_reply_error(core, seq, EK_ERR_INVOKE_FAILED, "invoke failed");
        return;
    }
    out_size = r->output_size(r->ctx);
    n = out_size < EK_MAX_PAYLOAD - EK_INVOKE_RESULT_HEAD ? out_size
                                                          : EK_MAX_PAYLOAD - EK_INVOKE_RESULT_HEAD;
    ek_reply_begin(core, EK_INVOKE_RESULT);
    ek_reply_u64(core, rec.time_ns);
    ek_reply_u32(core, rec.cycles);
    ek_reply_u32(core, out_size);
    ek_reply_bytes(core, core->output, n);
    ek_reply_send(core, seq);
}

static void ek_on_tensor_write(ek_core *core, uint16_t seq, const uint8_t *pl, size_t plen)
{
    const ek_runner *r = core->runner;
    uint32_t offset;
    uint32_t in_size;
    size_t n;
    if (plen < 4u) {
        ek_reply_error(core, seq, EK_ERR_BAD_FRAME, "TENSOR_WRITE takes offset u32 + data");
        return;
    }
    if (!core->model_active) {
        ek_reply_error(core, seq, EK_ERR_NO_MODEL, "no active model");
        return;
    }
    offset = ek_get_u32(pl);
    n = plen - 4u;
    in_size = r->input_size(r->ctx);
    if (offset > in_size || n > in_size - offset) {
        ek_reply_error(core, seq, EK_ERR_BAD_LENGTH, "write runs past the model's input bytes");
        return;
    }
    memcpy(core->input + offset, pl + 4, n);
    ek_reply_begin(core, EK_TENSOR_ACK);
    ek_reply_u32(core, offset + (uint32_t)n);
    ek_reply_send(core, seq);
}

static void ek_on_tensor_read(ek_core *core, uint16_t seq, const uint8_t *pl, size_t plen)
{
    const ek_runner *r = core->runner;
    uint32_t offset;
    uint32_t out_size;
    size_t n;
    if (plen != 6u) {
        ek_reply_error(core, seq, EK_ERR_BAD_FRAME, "TENSOR_READ takes offset u32 + length u16");
        return;
    }
    if (!core->model_active) {
        ek_reply_error(core, seq, EK_ERR_NO_MODEL, "no active model");
        return;
    }
    if (!core->have_output) {
        ek_reply_error(core, seq, EK_ERR_BAD_STATE, "no output yet: INVOKE first");
        return;
    }
    offset = ek_get_u32(pl);
    n = ek_get_u16(pl + 4);
    out_size = r->output_size(r->ctx);
    if (offset > out_size) {
        ek_reply_error(core, seq, EK_ERR_BAD_LENGTH, "offset past the end of the output");
        return;
    }
    if (n > out_size - offset) {
        n = out_size - offset;
    }
    if (n > EK_MAX_PAYLOAD - 4u) {
        n = EK_MAX_PAYLOAD - 4u;
    }
    ek_reply_begin(core, EK_TENSOR_DATA);
    ek_reply_u32(core, offset);
    ek_reply_bytes(core, core->output + offset, n);
    ek_reply_send(core, seq);
}

/* ---- profile ---------------------------------------------------------------------------------- */

/* Sends the frames of the last PROFILE (also for a duplicate request, without running again). */
static void ek_send_profile_train(ek_core *core, uint16_t seq)
{
    const ek_runner *r = core->runner;
    uint16_t total = core->profile_runs;
    uint16_t first = 0;
    while (first < total) {
        uint16_t count = (uint16_t)(total - first);
        uint16_t i;
        if (count > EK_RUNS_PER_FRAME) {
            count = (uint16_t)EK_RUNS_PER_FRAME;
        }
        ek_reply_begin(core, EK_PROFILE_RUNS);
        ek_reply_u16(core, total);
        ek_reply_u16(core, first);
        ek_reply_u16(core, count);
        for (i = 0; i < count; i++) {
            ek_reply_u64(core, core->runs[first + i].time_ns);
            ek_reply_u32(core, core->runs[first + i].cycles);
        }
        ek_reply_send(core, seq);
        first = (uint16_t)(first + count);
    }
    if (ek_capabilities(core) & EK_CAP_PER_OP) {
        uint16_t n_ops = r->op_count(r->ctx);
        uint16_t op = 0;
        while (op < n_ops) {
            uint16_t count = 0;
            uint8_t *count_field;
            ek_reply_begin(core, EK_PROFILE_OPS);
            ek_reply_u16(core, n_ops);
            ek_reply_u16(core, op);
            count_field = ek_reply_grow(core, 2u);
            while (op < n_ops) {
                const char *name = "";
                uint32_t calls = 0;
                uint64_t total_ns = 0;
                size_t name_len;
                if (r->op_record(r->ctx, op, &name, &calls, &total_ns) != 0 || name == NULL) {
                    name = "?";
                }
                name_len = strlen(name);
                if (name_len > 255u) {
                    name_len = 255u;
                }
                if (name_len > EK_MAX_PAYLOAD - 6u - 13u) {
                    name_len = EK_MAX_PAYLOAD - 6u - 13u;
                }
                if (count > 0u && ek_reply_room(core) < 1u + name_len + 12u) {
                    break;   /* next frame */
                }
                ek_reply_u8(core, (uint8_t)name_len);
                ek_reply_bytes(core, (const uint8_t *)name, name_len);
                ek_reply_u32(core, calls);
                ek_reply_u64(core, total_ns);
                count++;
                op++;
            }
            ek_set_u16(count_field, count);
            ek_reply_send(core, seq);
        }
    }
    ek_reply_begin(core, EK_PROFILE_END);
    ek_reply_u16(core, total);
    ek_reply_u32(core, core->arena_used);
    ek_reply_send(core, seq);
}

static void ek_on_profile(ek_core *core, uint16_t seq, const uint8_t *pl, size_t plen)
{
    const ek_runner *r = core->runner;
    uint16_t warmup;
    uint16_t runs;
    uint16_t i;
    ek_run_record rec;
    if (plen != 4u) {
        ek_reply_error(core, seq, EK_ERR_BAD_FRAME, "PROFILE takes warmup u16 + runs u16");
        return;
    }
    if (!core->model_active) {
        ek_reply_error(core, seq, EK_ERR_NO_MODEL, "no active model");
        return;
    }
    warmup = ek_get_u16(pl);
    runs = ek_get_u16(pl + 2);
    if (runs > EK_PROFILE_MAX_RUNS) {
        ek_reply_error(core, seq, EK_ERR_BAD_LENGTH, "more timed runs than the device can record");
        return;
    }
    core->profile_runs = 0;
    for (i = 0; i < warmup; i++) {
        if (ek_run_once(core, &rec) != 0) {
            ek_reply_error(core, seq, EK_ERR_INVOKE_FAILED, "invoke failed during warm-up");
            return;
        }
    }
    if (ek_capabilities(core) & EK_CAP_PER_OP) {
        r->profile_reset(r->ctx);
    }
    for (i = 0; i < runs; i++) {
        if (ek_run_once(core, &core->runs[i]) != 0) {
            ek_reply_error(core, seq, EK_ERR_INVOKE_FAILED, "invoke failed during a timed run");
            return;
        }
    }
    core->profile_runs = runs;
    ek_send_profile_train(core, seq);
}

/* ---- dispatch --------------------------------------------------------------------------------- */

static void ek_dispatch(ek_core *core, uint8_t type, uint16_t seq, const uint8_t *pl, size_t plen)
{
    switch (type) {
    case EK_HELLO_REQ:
        ek_build_hello(core);
        ek_reply_send(core, seq);
        break;
    case EK_UPLOAD_BEGIN:
        ek_on_upload_begin(core, seq, pl, plen);
        break;
    case EK_UPLOAD_CHUNK:
        ek_on_upload_chunk(core, seq, pl, plen);
        break;
    case EK_UPLOAD_END:
        ek_on_upload_end(core, seq);
        break;
    case EK_INVOKE:
        ek_on_invoke(core, seq, pl, plen);
        break;
    case EK_TENSOR_WRITE:
        ek_on_tensor_write(core, seq, pl, plen);
        break;
    case EK_TENSOR_READ:
        ek_on_tensor_read(core, seq, pl, plen);
        break;
    case EK_PROFILE:
        ek_on_profile(core, seq, pl, plen);
        break;
    case EK_RESET:
        if (!core->platform->reset) {
            ek_reply_error(core, seq, EK_ERR_UNSUPPORTED, "this device cannot reset itself");
            break;
        }
        ek_reply_begin(core, EK_ACK);
        ek_reply_send(core, seq);
        core->reset_requested = 1;
        core->platform->reset(core->platform->ctx);
        break;
    default:
        ek_reply_error(core, seq, EK_ERR_UNKNOWN_TYPE, "unknown request type");
        break;
    }
}

/* A decoded frame body of len bytes in core->rx. */
static void ek_on_body(ek_core *core, size_t len)
{
    const uint8_t *body = core->rx;
    uint8_t type;
    uint16_t seq;
    size_t plen;
    if (len < EK_FRAME_OVERHEAD || len > EK_MAX_PAYLOAD + EK_FRAME_OVERHEAD ||
        ek_crc32(0u, body, len - EK_CRC_BYTES) != ek_get_u32(body + len - EK_CRC_BYTES) ||
        body[0] != EK_PROTO_VERSION || ek_get_u16(body + 4) != len - EK_FRAME_OVERHEAD) {
        core->frames_dropped++;   /* the sender's timeout and retry cover it */
        return;
    }
    type = body[1];
    seq = ek_get_u16(body + 2);
    plen = len - EK_FRAME_OVERHEAD;
    if (core->have_last && seq != 0u && seq == core->last_seq && type == core->last_req_type) {
        /* a duplicate (a host retry): answer again without executing again */
        if (type == EK_PROFILE && core->reply_type != EK_ERROR) {
            ek_send_profile_train(core, seq);
        } else {
            ek_reply_send(core, seq);
        }
        return;
    }
    core->have_last = 1;
    core->last_seq = seq;
    core->last_req_type = type;
    ek_dispatch(core, type, seq, body + EK_HEADER_BYTES, plen);
}

void ek_feed_byte(ek_core *core, uint8_t byte)
{
    if (byte == 0u) {
        if (core->rx_overflow) {
            core->rx_overflow = 0;
            core->frames_dropped++;
        } else if (core->rx_len > 0u) {
            long n = ek_cobs_decode_inplace(core->rx, core->rx_len);
            if (n < 0) {
                core->frames_dropped++;
            } else {
                ek_on_body(core, (size_t)n);
            }
        }
        core->rx_len = 0;
        return;
    }
    if (core->rx_overflow) {
        return;
    }
    if (core->rx_len == sizeof core->rx) {
        core->rx_overflow = 1;   /* longer than any valid frame: drop up to the next 0x00 */
        core->rx_len = 0;
        return;
    }
    core->rx[core->rx_len++] = byte;
}

void ek_feed(ek_core *core, const uint8_t *data, size_t len)
{
    size_t i;
    for (i = 0; i < len; i++) {
        ek_feed_byte(core, data[i]);
    }
}
