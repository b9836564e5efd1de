/* Signals for both processes, delivered through a self-pipe: the handler only writes a byte, and the
 * event loop that polls the pipe's read end does the work outside signal context. */
#ifndef BW_COMMON_SIGNALS_H
#define BW_COMMON_SIGNALS_H

/* Opens fds as a non-blocking, close-on-exec pipe, routes each of sigs[0..n_sigs) to on_signal
 * (SA_RESTART) and ignores SIGPIPE, so writing to a gone peer fails with EPIPE instead of killing the
 * process. Returns -1 with errno set, and installs nothing, when the pipe cannot be made. */
int bw_signals_pipe(int fds[2], void (*on_signal)(int), const int *sigs, int n_sigs);

#endif
