#include "common/quit.h"

#include <stdio.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define BW_HAVE_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(leak_sanitizer)
#define BW_HAVE_LSAN 1
#endif
#endif

#ifdef BW_HAVE_LSAN
#include <sanitizer/lsan_interface.h>
#endif

_Noreturn void bw_quit(int status)
{
    fflush(stderr);
#ifdef BW_HAVE_LSAN
    /* Memory still reachable from globals or from any thread is not a leak; only lost blocks report. */
    if (__lsan_do_recoverable_leak_check() != 0 && status == 0) status = 23;
#endif
    _exit(status);
}
