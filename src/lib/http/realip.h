/* The client's address behind a trusted reverse proxy (Coder's --proxy-trusted-headers and
 * --proxy-trusted-origins): only a peer inside a trusted origin (a CIDR) may name the client,
 * in the first trusted header it sends; anyone else's forwarding headers are ignored, so the
 * address in logs and in the X-Forwarded-For we give apps cannot be forged. */
#ifndef HTTP_REALIP_H
#define HTTP_REALIP_H

#include "conf/conf.h"
#include "http/server.h"

struct realip;

/* Parses the option values: header names, and origins as CIDRs ("10.0.0.0/8", "::1/128").
 * Returns NULL with *err (one line) when an origin is not a CIDR; NULL without *err when
 * nothing is trusted (no headers or no origins). */
struct realip *realip_new(const struct conf_strv *headers, const struct conf_strv *origins,
                          char **err);
void realip_free(struct realip *rc);

/* When req came from a trusted origin and carries a trusted header with a valid address (for
 * X-Forwarded-For, the leftmost), sets req->remote_ip to it. rc may be NULL. */
void realip_apply(const struct realip *rc, struct http_request *req);

#endif
