/* The HTTP server: h2o configuration, the listening socket and the dispatch through the route table.
 *
 * Owns: the checks every request passes before its route (framing, head size, CORS), authentication
 * before protected routes, and the HTTP/1.1-only default (SPEC §3.0). Which path and method reach which
 * handler is routes.c's; request logic lives in handler_*.c. */
#ifndef BW_FRONT_SERVER_H
#define BW_FRONT_SERVER_H

#include <stddef.h>

#include "frontend/front.h"

/* Configures h2o and the loop (f->loop must be set) and starts listening; -1 with a reason in err. */
int bw_server_start(bw_front *f, char *err, size_t errlen);
/* Stops accepting new connections (running streams continue). */
void bw_server_stop_listening(bw_front *f);

#endif
