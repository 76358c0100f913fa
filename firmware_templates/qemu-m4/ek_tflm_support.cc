// What a bare-metal C++ firmware with TFLM needs besides TFLM itself (qemu-m4, EK_QEMU_TFLM builds).
//
// - C++ runtime pieces without exceptions, RTTI or a heap: __dso_handle and __aeabi_atexit (global
//   objects register destructors that never run on a board), __cxa_pure_virtual, and operator delete
//   (a virtual destructor references it; nothing here allocates, so it is never called with memory).
// - TFLM's logging hook, DebugLog: its text goes out as protocol LOG frames, one per line, so that
//   a model that TFLM refuses says why on the host. Trees differ in the hook's signature:
//   tflite-micro checkouts call DebugLog(format, va_list) and DebugVsnprintf; Arduino libraries of
//   the 2.x line call DebugLog(const char*). EK_TFLM_DEBUG_LOG_VA selects the first.
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

extern "C" void ek_qemu_log_line(int level, const char *text);   // main.c

extern "C" {
void *__dso_handle = nullptr;
int __aeabi_atexit(void *object, void (*destructor)(void *), void *dso_handle)
{
    (void)object;
    (void)destructor;
    (void)dso_handle;
    return 0;
}
void __cxa_pure_virtual() { for (;;) { } }
}

void operator delete(void *ptr) noexcept { (void)ptr; }
void operator delete(void *ptr, size_t size) noexcept
{
    (void)ptr;
    (void)size;
}

namespace {

constexpr int kLogWarning = 2;    // EK_LOG_WARNING (ek_proto.h)
char line[160];
size_t used = 0;

void flush_line()
{
    if (used > 0) {
        line[used] = '\0';
        ek_qemu_log_line(kLogWarning, line);
        used = 0;
    }
}

void add_text(const char *text)
{
    for (; text != nullptr && *text != '\0'; ++text) {
        if (*text == '\n' || *text == '\r') {
            flush_line();
        } else if (used + 1 < sizeof line) {
            line[used++] = *text;
        }
    }
}

}  // namespace

#if defined(EK_TFLM_DEBUG_LOG_VA)
extern "C" void DebugLog(const char *format, va_list args)
{
    char text[sizeof line];
    vsnprintf(text, sizeof text, format, args);
    add_text(text);
}

extern "C" int DebugVsnprintf(char *buffer, size_t buf_size, const char *format, va_list vlist)
{
    return vsnprintf(buffer, buf_size, format, vlist);
}
#else
extern "C" void DebugLog(const char *text) { add_text(text); }
#endif
