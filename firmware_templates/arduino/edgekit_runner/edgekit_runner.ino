// edgekit runner: the edgekit device protocol v1 (docs/protocol.md) on the board's serial port,
// running the model compiled into model_data.cc with TensorFlow Lite Micro.
//
// Rendered by `edgekit flash` / `edgekit export --format arduino|platformio` together with:
//   ek_board_config.h          board id, baud rate and buffer sizes for this model
//   ek_proto.*, ek_cobs.*, ...  the portable protocol core (firmware_templates/core)
//   ek_tflm_runner.*            the core's model-runner interface implemented with TFLM
//   model_data.*, model_ops.h   the model, its arena size and its op resolver
#include <Arduino.h>
#include <Chirale_TensorFlowLite.h>

#include "ek_board_config.h"
#include "ek_proto.h"
#include "ek_tflm_runner.h"

#if defined(ARDUINO_ARCH_ESP32)
#include <esp_random.h>
#endif

static ek_core core;        // large (receive buffer, reply cache, staging buffers): never on the stack
static ek_platform platform;
static ek_runner runner;

// ---- platform functions ---------------------------------------------------------------------

static void ek_write(void *ctx, const uint8_t *data, size_t len)
{
    (void)ctx;
    Serial.write(data, len);
}

// micros() wraps every ~71 minutes; extend it to 64 bits (called often enough by the protocol).
static uint64_t ek_time_ns(void *ctx)
{
    (void)ctx;
    static uint32_t last_us = 0;
    static uint64_t high_us = 0;
    uint32_t now_us = micros();
    if (now_us < last_us) {
        high_us += (uint64_t)1 << 32;
    }
    last_us = now_us;
    return (high_us + now_us) * 1000ull;
}

#if defined(ARDUINO_ARCH_ESP32)
static uint32_t ek_cycles(void *ctx)
{
    (void)ctx;
    return ESP.getCycleCount();
}
#define EK_CYCLES ek_cycles
#elif defined(__ARM_ARCH_7EM__) || defined(__ARM_ARCH_7M__)
// Cortex-M3/M4/M7: the DWT cycle counter.
static uint32_t ek_cycles(void *ctx)
{
    (void)ctx;
    return DWT->CYCCNT;
}
static void ek_enable_cycle_counter(void)
{
    CoreDebug->DEMCR |= CoreDebug_DEMCR_TRCENA_Msk;
    DWT->CYCCNT = 0;
    DWT->CTRL |= DWT_CTRL_CYCCNTENA_Msk;
}
#define EK_CYCLES ek_cycles
#else
#define EK_CYCLES NULL      // Cortex-M0+ (RP2040) has no cycle counter
#endif

static void ek_reset(void *ctx)
{
    (void)ctx;
    Serial.flush();
    delay(20);
#if defined(ARDUINO_ARCH_ESP32)
    ESP.restart();
#elif defined(__arm__)
    NVIC_SystemReset();
#endif
}

static uint32_t ek_make_nonce(void)
{
#if defined(ARDUINO_ARCH_ESP32)
    return esp_random();
#else
    // Boards without a hardware RNG in the Arduino API: the time the USB host took to open the
    // port, mixed with ADC noise. Different on every boot, which is all HELLO needs.
    uint32_t x = micros() ^ ((uint32_t)analogRead(A0) << 16) ^ ((uint32_t)analogRead(A1) << 8);
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return x ? x : 1u;
#endif
}

// ---- sketch ---------------------------------------------------------------------------------

void setup()
{
    Serial.begin(EK_BAUD);
    // USB CDC boards: give the host up to 2 s to open the port, then run anyway.
    const unsigned long start = millis();
    while (!Serial && millis() - start < 2000ul) {
        delay(10);
    }
#if defined(__ARM_ARCH_7EM__) || defined(__ARM_ARCH_7M__)
    ek_enable_cycle_counter();
#endif
    platform.ctx = NULL;
    platform.write_bytes = ek_write;
    platform.time_ns = ek_time_ns;
    platform.cycles = EK_CYCLES;
    platform.reset = ek_reset;
    platform.boot_nonce = ek_make_nonce();
    platform.board_id = EK_BOARD_ID;
    platform.firmware_version = EK_FIRMWARE_VERSION;

    ek_tflm_runner_init(&runner, ek_time_ns, NULL);
    ek_init(&core, &platform, &runner);
    const int status = ek_tflm_activate_builtin_model(&core);
    ek_send_boot_hello(&core);
    if (status != 0) {
        ek_log(&core, EK_LOG_ERROR, "the built-in model did not load (op missing or arena too small)");
    }
}

void loop()
{
    while (Serial.available() > 0) {
        const int byte = Serial.read();
        if (byte < 0) {
            break;
        }
        ek_feed_byte(&core, (uint8_t)byte);
    }
}
