/* Service-manager notifications for both processes (systemd's sd_notify protocol, through libsystemd).
 *
 * Owns: what each process tells its unit: READY=1 (the engine once the model is loaded, the front once it
 * listens), STATUS= lines for `systemctl status`, STOPPING=1, and watchdog pings. Every call is a no-op
 * when NOTIFY_SOCKET is unset, so the binaries behave the same outside systemd. Calls are made from one
 * thread per process (the event loop or the scheduler loop); nothing here is thread-safe. */
#ifndef BW_COMMON_NOTIFY_H
#define BW_COMMON_NOTIFY_H

void bw_notify_ready(const char *status);
void bw_notify_stopping(const char *status);
void bw_notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Pings the watchdog when the unit sets WatchdogSec=. Cheap enough for every turn of a loop: it sends at
 * most four times per watchdog interval, and only the loop that calls it proves it is alive. */
void bw_notify_watchdog(void);

#endif
