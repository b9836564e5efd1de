/* The self-pipe signal setup; see signals.h. */
#include "common/signals.h"

#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

int bw_signals_pipe(int fds[2], void (*on_signal)(int), const int *sigs, int n_sigs)
{
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) return -1;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < n_sigs; i++) sigaction(sigs[i], &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    return 0;
}
