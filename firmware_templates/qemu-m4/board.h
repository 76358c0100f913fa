/* Board support for QEMU mps2-an386: polled CMSDK UART0, SysTick time, reset, boot record. */
#ifndef EK_QEMU_BOARD_H
#define EK_QEMU_BOARD_H

#include <stddef.h>
#include <stdint.h>

#define EK_BOARD_CPU_HZ 25000000u   /* SYSCLK of the MPS2 FPGA images */
#define EK_BOARD_UART_BAUD 115200u

void board_init(void);
int board_uart_read(uint8_t *byte);                 /* 1 if a byte was waiting */
void board_wait_for_rx(void);                        /* WFI until UART0 has a byte (or a tick) */
void board_uart_write(const uint8_t *data, size_t len);
uint64_t board_time_ns(void);
uint32_t board_cycles(void);                         /* SysTick ticks of the 25 MHz core clock */
void board_reset(void);                              /* SCB AIRCR SYSRESETREQ; does not return */
uint32_t board_boot_count(void);                     /* 1 after power-on, +1 per reset */
uint32_t board_boot_nonce(void);
int board_has_dwt_cyccnt(void);                      /* the DWT cycle counter counts */
/* Called by the fault handler before it resets the board: the faulting pc and the CFSR register.
 * Provided by the firmware (main.c), which reports it as a LOG frame. */
void board_fault_hook(uint32_t pc, uint32_t cfsr);

#endif /* EK_QEMU_BOARD_H */
