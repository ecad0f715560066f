/* Proxy health, as Coder's proxyhealth: every --proxy-health-interval (and at once after a
 * create, edit, delete, register or deregister) the primary GETs each proxy's /healthz-report
 * on a fresh connection and classifies it unregistered / unreachable / unhealthy / ok.
 * Better than Coder: a proxy that deregisters, or misses three re-registrations in a row, is
 * shown unreachable at once, so the status is true within 15 s with default settings.
 * Results live in memory; the store thread reads them under a lock. */
#ifndef SERVER_PROXYHEALTH_H
#define SERVER_PROXYHEALTH_H

#include "store/store.h"

#include <jansson.h>
#include <stdbool.h>

struct primary;
struct proxyhealth;

struct proxyhealth *proxyhealth_new(struct primary *p);
/* Runs the first check and starts the ticker (loop thread). */
void proxyhealth_start(struct proxyhealth *h);
/* Stops timers and outstanding checks; frees h once its handles are closed. */
void proxyhealth_stop(struct proxyhealth *h);
/* Loop thread: schedule a full check now (coalesced with one already running). */
void proxyhealth_check_now(struct proxyhealth *h);
/* Loop thread: a replica of this proxy registered / deregistered. */
void proxyhealth_on_register(struct proxyhealth *h, const char *proxy_id);
void proxyhealth_on_deregister(struct proxyhealth *h, const char *proxy_id);
/* Any thread: the WorkspaceProxyStatus JSON for a proxy, and whether it is "ok". */
json_t *proxyhealth_status_json(struct proxyhealth *h, const struct store_proxy *px, bool *ok);

#endif
