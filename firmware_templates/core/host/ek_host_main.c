/*
 * ek_host_main: the portable protocol core running on a POSIX host, with the deterministic test
 * runner (ek_test_runner.h). It lets the conformance suite exercise the same C code that runs on
 * the boards, quickly and under sanitizers.
 *
 *   ek_host_main                 serve on stdin / stdout (binary)
 *   ek_host_main --pty           create a pseudo-terminal, print "pty: <path>" on stderr, serve on
 *                                it; the boot HELLO is sent once a client opens the path (waits at
 *                                most --wait-open seconds, default 30)
 *   ek_host_main <tty path>      serve on an existing terminal device
 *
 * Options: --board-id ID (default "c-host"), --nonce N (first boot nonce; default random),
 * --no-reset (no RESET capability). RESET re-initialises the core (models are lost, as on a
 * board) and sends a new boot HELLO with another nonce.
 */
#define _XOPEN_SOURCE 600

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "ek_proto.h"
#include "ek_test_runner.h"

#define EK_HOST_WRITE_WAIT_MS 2000

typedef struct host_link {
    int in_fd;
    int out_fd;
    int is_pty_master;
} host_link;

static ek_core g_core;
/* --builtin FILE: a model "compiled into the firmware", activated at every boot (ek_activate_model) */
static uint8_t g_builtin[EK_MODEL_MAX];
static uint32_t g_builtin_len;

static void host_boot(ek_core *core, const ek_platform *platform, const ek_runner *runner)
{
    ek_init(core, platform, runner);
    if (g_builtin_len > 0u && ek_activate_model(core, g_builtin, g_builtin_len) != 0) {
        ek_send_boot_hello(core);
        ek_log(core, EK_LOG_ERROR, "the built-in model did not load");
        return;
    }
    ek_send_boot_hello(core);
}

static int host_read_builtin(const char *path)
{
    FILE *f = fopen(path, "rb");
    size_t n;
    if (f == NULL) {
        perror("ek_host_main: cannot open the built-in model");
        return -1;
    }
    n = fread(g_builtin, 1, sizeof g_builtin, f);
    if (fgetc(f) != EOF) {
        fprintf(stderr, "ek_host_main: the built-in model is larger than EK_MODEL_MAX\n");
        fclose(f);
        return -1;
    }
    fclose(f);
    g_builtin_len = (uint32_t)n;
    return 0;
}

static void host_sleep_ms(long ms)
{
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

static void host_write(void *ctx, const uint8_t *data, size_t len)
{
    host_link *link = (host_link *)ctx;
    while (len > 0u) {
        ssize_t n = write(link->out_fd, data, len);
        if (n > 0) {
            data += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && errno == EAGAIN) {
            /* the reader is slow or gone: wait a bounded time, then drop the rest like a UART */
            struct pollfd pfd;
            pfd.fd = link->out_fd;
            pfd.events = POLLOUT;
            pfd.revents = 0;
            if (poll(&pfd, 1, EK_HOST_WRITE_WAIT_MS) <= 0 || (pfd.revents & POLLOUT) == 0) {
                return;
            }
            continue;
        }
        return;   /* EIO (no reader) or a closed pipe: bytes are lost, as on a real wire */
    }
}

static uint64_t host_time_ns(void *ctx)
{
    struct timespec ts;
    (void)ctx;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void host_reset(void *ctx)
{
    (void)ctx;   /* the main loop sees ek_reset_requested() and reboots the core */
}

static uint32_t host_random_u32(void)
{
    uint32_t v = 0;
    int fd = open("/dev/urandom", O_RDONLY);
    if (fd >= 0) {
        if (read(fd, &v, sizeof v) != (ssize_t)sizeof v) {
            v = 0;
        }
        close(fd);
    }
    if (v == 0u) {
        v = (uint32_t)host_time_ns(NULL) ^ ((uint32_t)getpid() << 16);
    }
    return v;
}

static int host_make_raw(int fd)
{
    struct termios t;
    if (tcgetattr(fd, &t) != 0) {
        return -1;
    }
    t.c_iflag &= ~(tcflag_t)(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
    t.c_oflag &= ~(tcflag_t)OPOST;
    t.c_lflag &= ~(tcflag_t)(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
    t.c_cflag &= ~(tcflag_t)(CSIZE | PARENB);
    t.c_cflag |= CS8;
    t.c_cc[VMIN] = 1;
    t.c_cc[VTIME] = 0;
    return tcsetattr(fd, TCSANOW, &t);
}

/* A pty master reports POLLHUP while no process has the slave side open. */
static int host_pty_client_open(int master_fd)
{
    struct pollfd pfd;
    pfd.fd = master_fd;
    pfd.events = POLLIN;
    pfd.revents = 0;
    if (poll(&pfd, 1, 0) < 0) {
        return 0;
    }
    return (pfd.revents & POLLHUP) == 0;
}

static int usage(void)
{
    fprintf(stderr, "usage: ek_host_main [--pty | TTY_PATH] [--board-id ID] [--nonce N] "
                    "[--no-reset] [--wait-open SECONDS] [--builtin MODEL_FILE]\n");
    return 2;
}

int main(int argc, char **argv)
{
    static ek_platform platform;
    static ek_runner runner;
    static ek_test_runner_state runner_state;
    static host_link link;
    const char *tty_path = NULL;
    const char *board_id = "c-host";
    int use_pty = 0;
    int allow_reset = 1;
    int have_nonce = 0;
    unsigned long nonce = 0;
    long wait_open_s = 30;
    int i;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--pty") == 0) {
            use_pty = 1;
        } else if (strcmp(argv[i], "--no-reset") == 0) {
            allow_reset = 0;
        } else if (strcmp(argv[i], "--board-id") == 0 && i + 1 < argc) {
            board_id = argv[++i];
        } else if (strcmp(argv[i], "--nonce") == 0 && i + 1 < argc) {
            nonce = strtoul(argv[++i], NULL, 0);
            have_nonce = 1;
        } else if (strcmp(argv[i], "--builtin") == 0 && i + 1 < argc) {
            if (host_read_builtin(argv[++i]) != 0) {
                return 2;
            }
        } else if (strcmp(argv[i], "--wait-open") == 0 && i + 1 < argc) {
            wait_open_s = strtol(argv[++i], NULL, 0);
        } else if (argv[i][0] == '-') {
            return usage();
        } else if (tty_path == NULL) {
            tty_path = argv[i];
        } else {
            return usage();
        }
    }

    link.in_fd = STDIN_FILENO;
    link.out_fd = STDOUT_FILENO;
    if (use_pty) {
        int master = posix_openpt(O_RDWR | O_NOCTTY);
        long waited_ms = 0;
        if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0) {
            perror("ek_host_main: cannot create a pty");
            return 1;
        }
        if (host_make_raw(master) != 0) {
            perror("ek_host_main: cannot set the pty to raw mode");
            return 1;
        }
        fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK);
        link.in_fd = link.out_fd = master;
        link.is_pty_master = 1;
        fprintf(stderr, "pty: %s\n", ptsname(master));
        fflush(stderr);
        while (!host_pty_client_open(master)) {
            if (waited_ms >= wait_open_s * 1000L) {
                fprintf(stderr, "ek_host_main: nobody opened the pty in %ld s\n", wait_open_s);
                return 1;
            }
            host_sleep_ms(10);
            waited_ms += 10;
        }
    } else if (tty_path != NULL) {
        int fd = open(tty_path, O_RDWR | O_NOCTTY);
        if (fd < 0) {
            perror("ek_host_main: cannot open the tty");
            return 1;
        }
        if (host_make_raw(fd) != 0) {
            perror("ek_host_main: cannot set the tty to raw mode");
            return 1;
        }
        link.in_fd = link.out_fd = fd;
    }

    platform.ctx = &link;
    platform.write_bytes = host_write;
    platform.time_ns = host_time_ns;
    platform.cycles = NULL;
    platform.reset = allow_reset ? host_reset : NULL;
    platform.boot_nonce = have_nonce ? (uint32_t)nonce : host_random_u32();
    platform.board_id = board_id;
    platform.firmware_version = "edgekit-c-host 1";
    ek_test_runner_init(&runner, &runner_state, EK_INPUT_MAX + EK_OUTPUT_MAX, host_time_ns, NULL);

    host_boot(&g_core, &platform, &runner);
    ek_log(&g_core, EK_LOG_INFO, "c-host ready");

    for (;;) {
        uint8_t buf[4096];
        ssize_t n = read(link.in_fd, buf, sizeof buf);
        ssize_t k;
        if (n == 0) {
            return 0;   /* end of stdin */
        }
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || (errno == EIO && link.is_pty_master)) {
                /* no data, or no client on the pty right now: wait for either */
                struct pollfd pfd;
                pfd.fd = link.in_fd;
                pfd.events = POLLIN;
                pfd.revents = 0;
                if (poll(&pfd, 1, 200) > 0 && (pfd.revents & POLLHUP)) {
                    host_sleep_ms(20);
                }
                continue;
            }
            perror("ek_host_main: read");
            return 1;
        }
        for (k = 0; k < n; k++) {
            ek_feed_byte(&g_core, buf[k]);
            if (ek_reset_requested(&g_core)) {
                uint32_t old = platform.boot_nonce;
                do {
                    platform.boot_nonce = host_random_u32();
                } while (platform.boot_nonce == old);
                host_boot(&g_core, &platform, &runner);
                break;   /* bytes after the RESET are lost, as on a rebooting board */
            }
        }
    }
}
