// ek_tflm_runner: ek_runner (ek_proto.h) implemented with TensorFlow Lite Micro.
//
// One interpreter at a time, placement-constructed in static storage (no heap). The arena size and
// the op resolver come from the exported model_data.h / model_ops.h, so the firmware holds exactly
// the kernels this model needs. With a clock, every operator invoke is timed (PER_OP capability).
#include "ek_tflm_runner.h"

#include <new>
#include <string.h>

#include "model_data.h"
#include "model_ops.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_log.h"
#include "tensorflow/lite/micro/micro_profiler_interface.h"
#include "tensorflow/lite/schema/schema_generated.h"

#ifndef EK_PROFILE_MAX_OPS
#define EK_PROFILE_MAX_OPS 32u   // distinct op types timed per model (more are not timed)
#endif

namespace {

// Per-op timing: TFLM opens one event per operator invoke, tagged with the op's name. Totals are
// kept per op name (summed over the timed runs of a PROFILE request) for the core's PER_OP reply.
class OpProfiler : public tflite::MicroProfilerInterface {
 public:
  static constexpr uint32_t kNotTimed = 0xFFFFFFFFu;

  uint64_t (*clock)(void *ctx) = nullptr;
  void *clock_ctx = nullptr;

  uint32_t BeginEvent(const char *tag) override
  {
    if (clock == nullptr || tag == nullptr) {
      return kNotTimed;
    }
    uint32_t i = 0;
    while (i < used_ && strcmp(names_[i], tag) != 0) {
      ++i;
    }
    if (i == used_) {
      if (used_ == EK_PROFILE_MAX_OPS) {
        return kNotTimed;
      }
      names_[used_] = tag;
      counts_[used_] = 0;
      totals_ns_[used_] = 0;
      ++used_;
    }
    start_ns_ = clock(clock_ctx);
    return i;
  }

  void EndEvent(uint32_t handle) override
  {
    if (handle < used_) {
      totals_ns_[handle] += clock(clock_ctx) - start_ns_;
      counts_[handle] += 1;
    }
  }

  void Reset() { used_ = 0; }
  uint16_t Count() const { return static_cast<uint16_t>(used_); }

  int Record(uint16_t index, const char **name, uint32_t *count, uint64_t *total_ns) const
  {
    if (index >= used_) {
      return 1;
    }
    *name = names_[index];
    *count = counts_[index];
    *total_ns = totals_ns_[index];
    return 0;
  }

 private:
  const char *names_[EK_PROFILE_MAX_OPS] = {};
  uint32_t counts_[EK_PROFILE_MAX_OPS] = {};
  uint64_t totals_ns_[EK_PROFILE_MAX_OPS] = {};
  uint32_t used_ = 0;
  uint64_t start_ns_ = 0;
};

OpProfiler profiler;

alignas(16) uint8_t tensor_arena[g_model_tensor_arena_size];

tflite::MicroMutableOpResolver<g_model_op_count> op_resolver;
bool ops_registered = false;

alignas(tflite::MicroInterpreter) uint8_t interpreter_storage[sizeof(tflite::MicroInterpreter)];
tflite::MicroInterpreter *interpreter = nullptr;

uint32_t total_bytes(bool inputs)
{
    if (interpreter == nullptr) {
        return 0;
    }
    const size_t count = inputs ? interpreter->inputs_size() : interpreter->outputs_size();
    uint32_t total = 0;
    for (size_t i = 0; i < count; ++i) {
        const TfLiteTensor *t = inputs ? interpreter->input(i) : interpreter->output(i);
        total += static_cast<uint32_t>(t->bytes);
    }
    return total;
}

void drop_interpreter()
{
    if (interpreter != nullptr) {
        interpreter->~MicroInterpreter();
        interpreter = nullptr;
    }
}

int load_model(void *ctx, const uint8_t *model_bytes, uint32_t len, uint32_t *arena_used)
{
    (void)ctx;
    (void)len;
    drop_interpreter();
    if (!ops_registered) {
        if (register_model_ops(op_resolver) != kTfLiteOk) {
            MicroPrintf("edgekit runner: registering the model's ops failed");
            return 1;
        }
        ops_registered = true;
    }
    const tflite::Model *model = tflite::GetModel(model_bytes);
    if (model == nullptr || model->version() != TFLITE_SCHEMA_VERSION) {
        MicroPrintf("edgekit runner: model schema version %d, this TFLM reads %d",
                    model == nullptr ? -1 : static_cast<int>(model->version()), TFLITE_SCHEMA_VERSION);
        return 2;
    }
    interpreter = new (interpreter_storage) tflite::MicroInterpreter(
        model, op_resolver, tensor_arena, sizeof tensor_arena, nullptr,
        profiler.clock != nullptr ? &profiler : nullptr);
    if (interpreter->AllocateTensors() != kTfLiteOk) {
        MicroPrintf("edgekit runner: AllocateTensors failed (tensor arena %u bytes)",
                    static_cast<unsigned>(sizeof tensor_arena));
        drop_interpreter();
        return 3;
    }
    if (arena_used != nullptr) {
        *arena_used = static_cast<uint32_t>(interpreter->arena_used_bytes());
    }
    return 0;
}

uint32_t input_size(void *ctx)
{
    (void)ctx;
    return total_bytes(true);
}

uint32_t output_size(void *ctx)
{
    (void)ctx;
    return total_bytes(false);
}

int invoke(void *ctx, const uint8_t *in, uint8_t *out)
{
    (void)ctx;
    if (interpreter == nullptr) {
        return 1;
    }
    size_t offset = 0;
    for (size_t i = 0; i < interpreter->inputs_size(); ++i) {
        TfLiteTensor *t = interpreter->input(i);
        memcpy(t->data.raw, in + offset, t->bytes);
        offset += t->bytes;
    }
    if (interpreter->Invoke() != kTfLiteOk) {
        return 2;
    }
    offset = 0;
    for (size_t i = 0; i < interpreter->outputs_size(); ++i) {
        const TfLiteTensor *t = interpreter->output(i);
        memcpy(out + offset, t->data.raw, t->bytes);
        offset += t->bytes;
    }
    return 0;
}

void profile_reset(void *ctx)
{
    (void)ctx;
    profiler.Reset();
}

uint16_t op_count(void *ctx)
{
    (void)ctx;
    return profiler.Count();
}

int op_record(void *ctx, uint16_t index, const char **name, uint32_t *count, uint64_t *total_ns)
{
    (void)ctx;
    return profiler.Record(index, name, count, total_ns);
}

}  // namespace

extern "C" void ek_tflm_runner_init(ek_runner *runner, uint64_t (*time_ns)(void *ctx), void *time_ctx)
{
    memset(runner, 0, sizeof *runner);
    runner->ctx = nullptr;
    runner->arena_bytes = static_cast<uint32_t>(sizeof tensor_arena);
    runner->load_model = load_model;
    runner->input_size = input_size;
    runner->output_size = output_size;
    runner->invoke = invoke;
    profiler.clock = time_ns;
    profiler.clock_ctx = time_ctx;
    if (time_ns != nullptr) {
        runner->profile_reset = profile_reset;
        runner->op_count = op_count;
        runner->op_record = op_record;
    }
}

extern "C" int ek_tflm_activate_builtin_model(ek_core *core)
{
    // The same activation as a finished upload (load, size checks, SHA-256 for HELLO), through
    // the core's API: the host confirms what was flashed by the hash HELLO reports.
    return ek_activate_model(core, g_model_model_data, g_model_model_data_len);
}
