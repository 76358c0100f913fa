/*
 * Board support for QEMU mps2-an386.
 *
 * CMSDK APB UART0 at 0x40004000: DATA +0x00, STATE +0x04 (bit 0 TX full, bit 1 RX full),
 * CTRL +0x08 (bit 0 TX enable, bit 1 RX enable), BAUDDIV +0x10. QEMU holds further received bytes
 * in the chardev while RX is full, so polling loses nothing.
 *
 * Time: SysTick on the processor clock (25 MHz), 24-bit, counting down; its wrap interrupt extends
 * it to 64 bits. QEMU derives SysTick from host time (without -icount), so times are host-speed
 * times of emulated code, and "cycles" are 25 MHz clock ticks, not executed instructions.
 *
 * Boot record: 12 bytes at the start of PSRAM that the ELF does not cover, so neither QEMU's reset
 * (which reloads the ELF image) nor the reset handler touches them: a magic word, a boot count, and
 * a seed the host may place there at every reset (`-device loader,addr=0x21000008,data=N,
 * data-len=4`; edgekit's QemuMachine passes a random one). QEMU has no RNG on MPS2.
 * boot_nonce = seed + boot_count * 0x9E3779B9: different after every reset (the multiplier is odd)
 * and different between QEMU runs with different seeds.
 */
#include "board.h"

#define EK_REG(addr) (*(volatile uint32_t *)(addr))

#define UART0_BASE 0x40004000u
#define UART_DATA EK_REG(UART0_BASE + 0x00u)
#define UART_STATE EK_REG(UART0_BASE + 0x04u)
#define UART_CTRL EK_REG(UART0_BASE + 0x08u)
#define UART_INTSTATUS EK_REG(UART0_BASE + 0x0Cu)
#define UART_BAUDDIV EK_REG(UART0_BASE + 0x10u)
#define UART_STATE_TXFULL 1u
#define UART_STATE_RXFULL 2u
#define UART_CTRL_TXEN 1u
#define UART_CTRL_RXEN 2u
#define UART_CTRL_RXIRQEN 8u
#define UART_INT_RX 2u
#define UART0_RX_IRQ 0u   /* AN385/AN386 interrupt map: UART0 RX is IRQ 0 */

#define NVIC_ISER0 EK_REG(0xE000E100u)

#define SYST_CSR EK_REG(0xE000E010u)
#define SYST_RVR EK_REG(0xE000E014u)
#define SYST_CVR EK_REG(0xE000E018u)
#define SYST_CSR_ENABLE 1u
#define SYST_CSR_TICKINT 2u
#define SYST_CSR_CLKSOURCE 4u
#define SYST_RELOAD 0x00FFFFFFu

#define SCB_AIRCR EK_REG(0xE000ED0Cu)
#define SCB_AIRCR_VECTKEY 0x05FA0000u
#define SCB_AIRCR_SYSRESETREQ 4u

#define DEMCR EK_REG(0xE000EDFCu)
#define DEMCR_TRCENA (1u << 24)
#define DWT_CTRL EK_REG(0xE0001000u)
#define DWT_CYCCNT EK_REG(0xE0001004u)
#define DWT_CTRL_NOCYCCNT (1u << 25)

#define BOOT_MAGIC 0x454B4254u   /* "EKBT" */

extern uint32_t __boot_record[];   /* linker symbol: an address, no storage here */

typedef struct boot_record {
    uint32_t magic;
    uint32_t boot_count;
    uint32_t host_seed;
} boot_record;

static volatile uint32_t systick_wraps;
static uint32_t boot_count;
static uint32_t boot_nonce;
static int dwt_ok;

void ek_systick_handler(void);
void ek_fault_handler(void);
void ek_uart0_rx_handler(void);

void ek_uart0_rx_handler(void)
{
    /* only wakes the CPU from WFI; the main loop reads the byte */
    UART_INTSTATUS = UART_INT_RX;
}

void ek_systick_handler(void)
{
    systick_wraps++;
}

#define SCB_CFSR EK_REG(0xE000ED28u)

void ek_fault_report(const uint32_t *frame);

/* HardFault / MemManage / BusFault / UsageFault: find the stacked exception frame (MSP or PSP, bit 2
 * of EXC_RETURN), then report and reset in C. */
__attribute__((naked)) void ek_fault_handler(void)
{
    __asm__ volatile(
        "tst lr, #4\n\t"
        "ite eq\n\t"
        "mrseq r0, msp\n\t"
        "mrsne r0, psp\n\t"
        "b ek_fault_report\n\t");
}

void ek_fault_report(const uint32_t *frame)
{
    /* a crash must not look like a live device: say where it happened (a LOG frame), then reboot;
     * the host sees a new boot nonce */
    board_fault_hook(frame[6], SCB_CFSR);
    board_reset();
}

static uint64_t board_ticks(void)
{
    uint32_t wraps;
    uint32_t value;
    do {
        wraps = systick_wraps;
        value = SYST_CVR;
    } while (wraps != systick_wraps);   /* a wrap in between: the interrupt ran, read again */
    return ((uint64_t)wraps << 24) + (uint64_t)(SYST_RELOAD - value);
}

uint64_t board_time_ns(void)
{
    return board_ticks() * (1000000000u / EK_BOARD_CPU_HZ);   /* 40 ns per tick */
}

uint32_t board_cycles(void)
{
    return (uint32_t)board_ticks();
}

int board_uart_read(uint8_t *byte)
{
    if (UART_STATE & UART_STATE_RXFULL) {
        *byte = (uint8_t)UART_DATA;
        return 1;
    }
    return 0;
}

void board_wait_for_rx(void)
{
    /* Sleep until a byte arrives. Interrupts are masked around the check, so a byte that arrives
     * between the check and WFI still wakes it (and its interrupt runs after cpsie). Sleeping
     * instead of spinning on the UART registers lets QEMU deliver the next byte sooner. */
    __asm__ volatile("cpsid i" ::: "memory");
    if (!(UART_STATE & UART_STATE_RXFULL)) {
        __asm__ volatile("wfi" ::: "memory");
    }
    __asm__ volatile("cpsie i" ::: "memory");
}

void board_uart_write(const uint8_t *data, size_t len)
{
    size_t i;
    for (i = 0; i < len; i++) {
        while (UART_STATE & UART_STATE_TXFULL) {
        }
        UART_DATA = data[i];
    }
}

void board_reset(void)
{
    __asm__ volatile("dsb" ::: "memory");
    SCB_AIRCR = SCB_AIRCR_VECTKEY | SCB_AIRCR_SYSRESETREQ;
    __asm__ volatile("dsb" ::: "memory");
    for (;;) {
    }
}

uint32_t board_boot_count(void)
{
    return boot_count;
}

uint32_t board_boot_nonce(void)
{
    return boot_nonce;
}

int board_has_dwt_cyccnt(void)
{
    return dwt_ok;
}

static void probe_dwt(void)
{
    uint32_t first;
    volatile uint32_t spin;
    DEMCR |= DEMCR_TRCENA;
    if (DWT_CTRL & DWT_CTRL_NOCYCCNT) {
        dwt_ok = 0;
        return;
    }
    DWT_CYCCNT = 0u;
    DWT_CTRL |= 1u;
    first = DWT_CYCCNT;
    for (spin = 0; spin < 1000u; spin++) {
    }
    dwt_ok = DWT_CYCCNT != first;
}

void board_init(void)
{
    volatile boot_record *rec = (volatile boot_record *)(uintptr_t)__boot_record;
    uint32_t seed;
    volatile uint32_t spin;

    UART_BAUDDIV = EK_BOARD_CPU_HZ / EK_BOARD_UART_BAUD;
    UART_CTRL = UART_CTRL_TXEN | UART_CTRL_RXEN | UART_CTRL_RXIRQEN;
    NVIC_ISER0 = 1u << UART0_RX_IRQ;

    SYST_RVR = SYST_RELOAD;
    SYST_CVR = 0u;
    SYST_CSR = SYST_CSR_CLKSOURCE | SYST_CSR_TICKINT | SYST_CSR_ENABLE;

    if (rec->magic != BOOT_MAGIC) {
        rec->magic = BOOT_MAGIC;   /* power-on: PSRAM starts zeroed in QEMU */
        rec->boot_count = 0u;
    }
    rec->boot_count = rec->boot_count + 1u;
    boot_count = rec->boot_count;

    seed = rec->host_seed;
    if (seed == 0u) {
        /* no seed from the host: the host-time jitter of a short busy loop is all there is */
        for (spin = 0; spin < 20000u; spin++) {
        }
        seed = (uint32_t)board_ticks() * 2654435761u;
    }
    boot_nonce = seed + boot_count * 0x9E3779B9u;

    probe_dwt();
}
