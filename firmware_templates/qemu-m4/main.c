/*
 * edgekit qemu-m4 firmware: the portable protocol core on the Cortex-M4 of QEMU mps2-an386.
 *
 * Two runners, chosen at build time (see README.md):
 *   EK_QEMU_TFLM defined  the TFLM runner of the Arduino / PlatformIO projects
 *                         (../arduino/edgekit_runner/ek_tflm_runner.cpp, the same file), real TFLM and
 *                         CMSIS-NN kernels from a TFLM source tree; EK_QEMU_BUILTIN_MODEL also
 *                         activates the model compiled into model_data.cc, as a flashed board does.
 *   otherwise             the protocol test runner (../core/ek_test_runner.h): no ML, an exact
 *                         function of model and input, for protocol tests.
 */
#include <stdio.h>

#include "board.h"
#include "ek_proto.h"

#ifdef EK_QEMU_TFLM
#include "ek_tflm_runner.h"
#else
#include "ek_test_runner.h"
#endif

#ifndef EK_FIRMWARE_VERSION
#define EK_FIRMWARE_VERSION "edgekit-qemu-m4 1"
#endif
#ifndef EK_BOARD_ID
#define EK_BOARD_ID "qemu-m4"
#endif

static ek_core core;
static ek_platform platform;
static ek_runner runner;
#ifndef EK_QEMU_TFLM
static ek_test_runner_state runner_state;
#endif
static int core_ready;

static void platform_write(void *ctx, const uint8_t *data, size_t len)
{
    (void)ctx;
    board_uart_write(data, len);
}

static uint64_t platform_time_ns(void *ctx)
{
    (void)ctx;
    return board_time_ns();
}

static uint32_t platform_cycles(void *ctx)
{
    (void)ctx;
    return board_cycles();
}

static void platform_reset(void *ctx)
{
    (void)ctx;
    board_reset();
}

/* TFLM's DebugLog lines (ek_tflm_support.cc) and fault reports go out as LOG frames. */
void ek_qemu_log_line(int level, const char *text)
{
    if (core_ready) {
        ek_log(&core, (uint8_t)level, text);
    }
}

void board_fault_hook(uint32_t pc, uint32_t cfsr)
{
    char line[80];
    snprintf(line, sizeof line, "hard fault at pc 0x%08lx (cfsr 0x%08lx); resetting", (unsigned long)pc,
             (unsigned long)cfsr);
    ek_qemu_log_line(EK_LOG_ERROR, line);
}

int main(void)
{
    char line[128];
    int status = 0;
    board_init();

    platform.write_bytes = platform_write;
    platform.time_ns = platform_time_ns;
    platform.cycles = platform_cycles;
    platform.reset = platform_reset;
    platform.boot_nonce = board_boot_nonce();
    platform.board_id = EK_BOARD_ID;
    platform.firmware_version = EK_FIRMWARE_VERSION;
#ifdef EK_QEMU_TFLM
    ek_tflm_runner_init(&runner, platform_time_ns, NULL);
#else
    ek_test_runner_init(&runner, &runner_state, EK_INPUT_MAX + EK_OUTPUT_MAX, platform_time_ns,
                        NULL);
#endif

    ek_init(&core, &platform, &runner);
    core_ready = 1;
#if defined(EK_QEMU_TFLM) && defined(EK_QEMU_BUILTIN_MODEL)
    status = ek_tflm_activate_builtin_model(&core);
#endif
    ek_send_boot_hello(&core);
    snprintf(line, sizeof line, "%s boot %lu, model buffer %lu bytes, arena %lu bytes, dwt cyccnt %s",
             EK_BOARD_ID, (unsigned long)board_boot_count(), (unsigned long)EK_MODEL_MAX,
             (unsigned long)runner.arena_bytes, board_has_dwt_cyccnt() ? "counts" : "absent");
    ek_log(&core, EK_LOG_INFO, line);
    if (status != 0) {
        ek_log(&core, EK_LOG_ERROR, "the built-in model did not load (op missing or arena too small)");
    }

    for (;;) {
        uint8_t byte;
        if (board_uart_read(&byte)) {
            ek_feed_byte(&core, byte);
        } else {
            board_wait_for_rx();
        }
    }
}
