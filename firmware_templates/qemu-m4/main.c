/*
 * edgekit qemu-m4 firmware: the portable protocol core on the Cortex-M4 of QEMU mps2-an386, with
 * the deterministic test runner (../core/ek_test_runner.h) in place of TFLM. See README.md.
 */
#include <stdio.h>

#include "board.h"
#include "ek_proto.h"
#include "ek_test_runner.h"

#ifndef EK_FIRMWARE_VERSION
#define EK_FIRMWARE_VERSION "edgekit-qemu-m4 1"
#endif

static ek_core core;
static ek_platform platform;
static ek_runner runner;
static ek_test_runner_state runner_state;

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

int main(void)
{
    char line[96];
    board_init();

    platform.write_bytes = platform_write;
    platform.time_ns = platform_time_ns;
    platform.cycles = platform_cycles;
    platform.reset = platform_reset;
    platform.boot_nonce = board_boot_nonce();
    platform.board_id = "qemu-m4";
    platform.firmware_version = EK_FIRMWARE_VERSION;
    ek_test_runner_init(&runner, &runner_state, EK_INPUT_MAX + EK_OUTPUT_MAX, platform_time_ns,
                        NULL);

    ek_init(&core, &platform, &runner);
    ek_send_boot_hello(&core);
    snprintf(line, sizeof line, "qemu-m4 boot %lu, model buffer %lu bytes, dwt cyccnt %s",
             (unsigned long)board_boot_count(), (unsigned long)EK_MODEL_MAX,
             board_has_dwt_cyccnt() ? "counts" : "absent");
    ek_log(&core, EK_LOG_INFO, line);

    for (;;) {
        uint8_t byte;
        if (board_uart_read(&byte)) {
            ek_feed_byte(&core, byte);
        } else {
            board_wait_for_rx();
        }
    }
}
