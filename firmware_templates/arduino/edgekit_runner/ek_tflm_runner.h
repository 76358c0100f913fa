// ek_tflm_runner: the edgekit protocol core's model-runner interface (ek_runner, ek_proto.h)
// implemented with TensorFlow Lite Micro, for the model compiled into model_data.cc.
#ifndef EK_TFLM_RUNNER_H
#define EK_TFLM_RUNNER_H

#include "ek_board_config.h"
#include "ek_proto.h"

#ifdef __cplusplus
extern "C" {
#endif

// Fills `runner` with the TFLM functions (arena: the size measured for this model, plus margin).
// With `time_ns` (the platform's nanosecond clock), operators are timed for per-op profiles;
// NULL leaves the per-op hooks out.
void ek_tflm_runner_init(ek_runner *runner, uint64_t (*time_ns)(void *ctx), void *time_ctx);

// Activates the built-in model (model_data.cc) with ek_activate_model(), so that HELLO reports
// its length and SHA-256. Call after ek_init(). Returns 0 on success, else an ek_error_code.
int ek_tflm_activate_builtin_model(ek_core *core);

#ifdef __cplusplus
}
#endif

#endif  // EK_TFLM_RUNNER_H
