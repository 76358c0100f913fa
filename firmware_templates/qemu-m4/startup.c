/*
 * Vector table and reset handler for the Cortex-M4 of QEMU mps2-an386.
 * The reset handler turns the FPU on (hard-float builds), copies .data from its load address,
 * zeroes .bss, runs the C++ static constructors (.preinit_array, .init_array), and calls main().
 */
#include <stdint.h>

extern uint32_t __stack_top;
extern uint32_t __data_load, __data_start, __data_end, __bss_start, __bss_end;

typedef void (*ek_init_fn)(void);
extern ek_init_fn __preinit_array_start[], __preinit_array_end[];
extern ek_init_fn __init_array_start[], __init_array_end[];

#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)

int main(void);
void ek_reset_handler(void);
void ek_systick_handler(void);
void ek_fault_handler(void);
void ek_uart0_rx_handler(void);

void ek_reset_handler(void)
{
    uint32_t *src = &__data_load;
    uint32_t *dst = &__data_start;
    ek_init_fn *fn;
#if defined(__ARM_FP)
    /* CP10 and CP11 full access: the FPU must be on before the first floating-point instruction */
    SCB_CPACR |= (0xFu << 20);
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
    while (dst < &__data_end) {
        *dst++ = *src++;
    }
    for (dst = &__bss_start; dst < &__bss_end; dst++) {
        *dst = 0u;
    }
    for (fn = __preinit_array_start; fn < __preinit_array_end; fn++) {
        (*fn)();
    }
    for (fn = __init_array_start; fn < __init_array_end; fn++) {
        (*fn)();
    }
    (void)main();
    for (;;) {
    }
}

static void ek_default_handler(void)
{
    for (;;) {
    }
}

typedef void (*ek_vector)(void);

/* 16 system exceptions, then external interrupt 0 (UART0 RX, used only to wake from WFI). */
__attribute__((section(".vectors"), used)) static const ek_vector ek_vectors[17] = {
    (ek_vector)(uintptr_t)&__stack_top,
    ek_reset_handler,
    ek_default_handler,   /* NMI */
    ek_fault_handler,     /* HardFault */
    ek_fault_handler,     /* MemManage */
    ek_fault_handler,     /* BusFault */
    ek_fault_handler,     /* UsageFault */
    0, 0, 0, 0,
    ek_default_handler,   /* SVCall */
    ek_default_handler,   /* DebugMonitor */
    0,
    ek_default_handler,   /* PendSV */
    ek_systick_handler,
    ek_uart0_rx_handler,  /* IRQ 0: UART0 RX */
};
