/* Leaving a daemon. Both processes end with _exit: no atexit handlers and no library teardown, because
 * nng 1.5.2 can hang closing a socket with live pipes. That would also skip LeakSanitizer, which runs
 * from an atexit handler, so in a sanitizer build bw_quit runs the leak check itself first. */
#ifndef BW_COMMON_QUIT_H
#define BW_COMMON_QUIT_H

/* Flushes stderr and ends the process with status, or with 23 (LeakSanitizer's own exit code) when a
 * sanitizer build finds leaked memory and status was 0. Never returns. */
_Noreturn void bw_quit(int status);

#endif
