/* The route table: every HTTP route of the front, each declared once with its path, methods, handler,
 * access rule and metric label. server.c dispatches by it and accesslog.c labels requests by it for
 * /metrics, so the two cannot disagree.
 *
 * Owns: the table and path matching. Knows nothing of what a handler does. */
#ifndef BW_FRONT_ROUTES_H
#define BW_FRONT_ROUTES_H

#include <stddef.h>

#include "frontend/handlers.h"

enum bw_route_access {
    BW_ROUTE_PROTECTED, /* a bearer token is needed (SPEC §3.1) */
    BW_ROUTE_PUBLIC,
    BW_ROUTE_METRICS, /* public unless --metrics-auth */
};

typedef struct {
    /* A path template: "{id}" matches one non-empty segment, "{rest}" the non-empty rest of the path. */
    const char *path;
    const char *methods; /* "GET, HEAD": the methods served, and the Allow header of a 405 */
    int (*handle)(bw_front *f, h2o_req_t *req, const bw_route_args *a);
    int arg; /* handed to the handler as a->arg */
    enum bw_route_access access;
    const char *label; /* the route's label in beeworker_http_requests_total; NULL: its path */
} bw_route;

/* The route whose template matches path, with its {id} in a; NULL when none does. */
const bw_route *bw_route_find(const char *path, size_t len, bw_route_args *a);
/* Whether the route serves this method (a token of its methods list). */
int bw_route_allows(const bw_route *r, const char *method, size_t len);
/* The metric label of a path: its route's, or "other". */
const char *bw_route_label(const char *path, size_t len);
/* Every label, "other" last: the bounded label set for bw_metrics_create. */
const char *const *bw_route_labels(size_t *n);

#endif
