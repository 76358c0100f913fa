#include "ek_test_runner.h"

#include <string.h>

static uint32_t ek_tr_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static uint64_t ek_tr_now(const ek_test_runner_state *s)
{
    return s->time_ns ? s->time_ns(s->time_ctx) : 0u;
}

static int ek_tr_load(void *ctx, const uint8_t *model, uint32_t len, uint32_t *arena_used)
{
    ek_test_runner_state *s = (ek_test_runner_state *)ctx;
    uint32_t in = EK_TEST_DEFAULT_INPUT;
    uint32_t out = EK_TEST_DEFAULT_OUTPUT;
    uint32_t flags = 0;
    s->model = NULL;
    s->model_len = 0;
    if (len == 0u) {
        return 1;
    }
    if (len >= 16u && memcmp(model, "EKT1", 4) == 0) {
        in = ek_tr_u32(model + 4);
        out = ek_tr_u32(model + 8);
        flags = ek_tr_u32(model + 12);
        if (in == 0u || out == 0u) {
            return 1;
        }
    }
    s->model = model;
    s->model_len = len;
    s->input_bytes = in;
    s->output_bytes = out;
    s->flags = flags;
    s->op_calls = 0;
    s->op_total_ns = 0;
    *arena_used = in + out;
    return 0;
}

static uint32_t ek_tr_input_size(void *ctx)
{
    return ((ek_test_runner_state *)ctx)->input_bytes;
}

static uint32_t ek_tr_output_size(void *ctx)
{
    return ((ek_test_runner_state *)ctx)->output_bytes;
}

static int ek_tr_invoke(void *ctx, const uint8_t *in, uint8_t *out)
{
    ek_test_runner_state *s = (ek_test_runner_state *)ctx;
    uint64_t t0;
    uint32_t i;
    uint32_t in_pos = 0;
    uint32_t model_pos = 0;
    if (s->model == NULL || (s->flags & 1u)) {
        return 1;
    }
#if defined(EK_TEST_RUNNER_FAULTS)
    /* firmware-level failures, for tests of the host's bounds (QEMU firmware only) */
    if (s->flags & 2u) {
        __builtin_trap();          /* an undefined instruction: HardFault */
    }
    if (s->flags & 4u) {
        for (;;) {                 /* never returns */
        }
    }
#endif
    t0 = ek_tr_now(s);
    for (i = 0; i < s->output_bytes; i++) {
        out[i] = (uint8_t)(in[in_pos] ^ s->model[model_pos]);
        if (++in_pos == s->input_bytes) {
            in_pos = 0;
        }
        if (++model_pos == s->model_len) {
            model_pos = 0;
        }
    }
    s->op_calls++;
    s->op_total_ns += ek_tr_now(s) - t0;
    return 0;
}

static void ek_tr_profile_reset(void *ctx)
{
    ek_test_runner_state *s = (ek_test_runner_state *)ctx;
    s->op_calls = 0;
    s->op_total_ns = 0;
}

static uint16_t ek_tr_op_count(void *ctx)
{
    (void)ctx;
    return 1u;
}

static int ek_tr_op_record(void *ctx, uint16_t index, const char **name, uint32_t *count,
                           uint64_t *total_ns)
{
    ek_test_runner_state *s = (ek_test_runner_state *)ctx;
    if (index != 0u) {
        return 1;
    }
    *name = "XOR_TRANSFORM";
    *count = s->op_calls;
    *total_ns = s->op_total_ns;
    return 0;
}

void ek_test_runner_init(ek_runner *runner, ek_test_runner_state *state, uint32_t arena_bytes,
                         uint64_t (*time_ns)(void *ctx), void *time_ctx)
{
    memset(state, 0, sizeof *state);
    state->time_ns = time_ns;
    state->time_ctx = time_ctx;
    runner->ctx = state;
    runner->arena_bytes = arena_bytes;
    runner->load_model = ek_tr_load;
    runner->input_size = ek_tr_input_size;
    runner->output_size = ek_tr_output_size;
    runner->invoke = ek_tr_invoke;
    runner->profile_reset = ek_tr_profile_reset;
    runner->op_count = ek_tr_op_count;
    runner->op_record = ek_tr_op_record;
}
