/* sd_notify wrappers; see notify.h. libsystemd rather than a hand-written datagram sender: it handles
 * abstract socket names, WATCHDOG_PID checks and credentials, and Debian ships it everywhere systemd runs. */
#include "common/notify.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <systemd/sd-daemon.h>

#include "common/clock.h"

void bw_notify_ready(const char *status)
{
    if (status) sd_notifyf(0, "READY=1\nSTATUS=%s", status);
    else sd_notify(0, "READY=1");
}

void bw_notify_stopping(const char *status)
{
    if (status) sd_notifyf(0, "STOPPING=1\nSTATUS=%s", status);
    else sd_notify(0, "STOPPING=1");
}

void bw_notify_status(const char *fmt, ...)
{
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    sd_notifyf(0, "STATUS=%s", line);
}

void bw_notify_watchdog(void)
{
    static int checked;
    static uint64_t every_ns, last_ns;
    if (!checked) {
        /* read once: WATCHDOG_USEC/WATCHDOG_PID do not change while the process runs */
        uint64_t usec = 0;
        checked = 1;
        if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) every_ns = usec * 1000ull / 4;
    }
    if (!every_ns) return;
    uint64_t now = bw_clock_mono_ns();
    if (last_ns && now - last_ns < every_ns) return;
    last_ns = now;
    sd_notify(0, "WATCHDOG=1");
}
