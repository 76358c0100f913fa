/*
 * ek_test_runner: a model runner without any ML runtime, for the host build of the core and the
 * QEMU Cortex-M4 firmware. It proves the link (upload, hash, tensors, timing) end to end with an
 * output the host can compute exactly.
 *
 * Model bytes (any content is accepted, at least 1 byte):
 *   - starting with the 4 bytes "EKT1" and at least 16 bytes long: a header
 *       magic "EKT1" | input_bytes u32 | output_bytes u32 | flags u32   (little-endian)
 *     flags bit 0: every invoke fails (to test INVOKE_FAILED). input_bytes or output_bytes 0:
 *     the model is refused (to test MODEL_INVALID). Built with EK_TEST_RUNNER_FAULTS (the QEMU
 *     firmware): bit 1 makes an invoke hard-fault (an undefined instruction), bit 2 makes it hang.
 *   - anything else: input_bytes = EK_TEST_DEFAULT_INPUT (64), output_bytes =
 *     EK_TEST_DEFAULT_OUTPUT (10), the sizes of the 8x8 digits model.
 * Invoke:  output[i] = input[i % input_bytes] XOR model[i % model_len]   for i < output_bytes.
 * arena_used reported for a model: input_bytes + output_bytes.
 * Per-op profile: one op, "XOR_TRANSFORM", timed with the clock given to ek_test_runner_init().
 */
#ifndef EK_TEST_RUNNER_H
#define EK_TEST_RUNNER_H

#include <stdint.h>

#include "ek_proto.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifndef EK_TEST_DEFAULT_INPUT
#define EK_TEST_DEFAULT_INPUT 64u
#endif
#ifndef EK_TEST_DEFAULT_OUTPUT
#define EK_TEST_DEFAULT_OUTPUT 10u
#endif

typedef struct ek_test_runner_state {
    const uint8_t *model;
    uint32_t model_len;
    uint32_t input_bytes;
    uint32_t output_bytes;
    uint32_t flags;
    uint64_t (*time_ns)(void *ctx);
    void *time_ctx;
    uint32_t op_calls;
    uint64_t op_total_ns;
} ek_test_runner_state;

/* Fills `runner` with the test runner's functions bound to `state`; time_ns may be NULL (per-op
 * totals are then 0). */
void ek_test_runner_init(ek_runner *runner, ek_test_runner_state *state, uint32_t arena_bytes,
                         uint64_t (*time_ns)(void *ctx), void *time_ctx);

#ifdef __cplusplus
}
#endif

#endif /* EK_TEST_RUNNER_H */
