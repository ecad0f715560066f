/* Trusted forwarding headers: see realip.h. */
#include "http/realip.h"
#include "base/util.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cidr {
    int family; /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    int bits;
};

struct realip {
    char **headers;
    size_t nheaders;
    struct cidr *origins;
    size_t norigins;
};

/* "a.b.c.d" or an IPv6 literal (brackets allowed) into family and 4 or 16 bytes. */
static int
parse_ip(const char *s, int *family, uint8_t out[16])
{
    char buf[64];
    size_t n = strlen(s);
    if (n >= 2 && s[0] == '[' && s[n - 1] == ']') {
        s++;
        n -= 2;
    }
    if (n == 0 || n >= sizeof(buf))
        return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    if (inet_pton(AF_INET, buf, out) == 1) {
        *family = AF_INET;
        return 0;
    }
    if (inet_pton(AF_INET6, buf, out) == 1) {
        /* An IPv4-mapped address is the IPv4 one. */
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(out, mapped, 12) == 0) {
            memmove(out, out + 12, 4);
            *family = AF_INET;
        } else {
            *family = AF_INET6;
        }
        return 0;
    }
    return -1;
}

static int
parse_cidr(const char *s, struct cidr *c)
{
    const char *slash = strchr(s, '/');
    char ip[64];
    if (!slash || (size_t)(slash - s) >= sizeof(ip))
        return -1;
    memcpy(ip, s, (size_t)(slash - s));
    ip[slash - s] = '\0';
    char *end;
    long bits = strtol(slash + 1, &end, 10);
    if (parse_ip(ip, &c->family, c->addr) < 0 || end == slash + 1 || *end != '\0' || bits < 0 ||
        bits > (c->family == AF_INET ? 32 : 128))
        return -1;
    c->bits = (int)bits;
    return 0;
}

static bool
cidr_contains(const struct cidr *c, int family, const uint8_t addr[16])
{
    if (c->family != family)
        return false;
    int full = c->bits / 8, rest = c->bits % 8;
    if (memcmp(c->addr, addr, (size_t)full) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (c->addr[full] & mask) == (addr[full] & mask);
}

struct realip *
realip_new(const struct conf_strv *headers, const struct conf_strv *origins, char **err)
{
    *err = NULL;
    struct cidr *cs = xcalloc(origins->n + 1, sizeof(*cs));
    for (size_t i = 0; i < origins->n; i++) {
        if (parse_cidr(origins->v[i], &cs[i]) < 0) {
            *err =
                xasprintf("parse proxy trusted origins: invalid CIDR address: %s", origins->v[i]);
            free(cs);
            return NULL;
        }
    }
    if (headers->n == 0 || origins->n == 0) {
        free(cs);
        return NULL;
    }
    struct realip *rc = xcalloc(1, sizeof(*rc));
    rc->origins = cs;
    rc->norigins = origins->n;
    rc->headers = xcalloc(headers->n, sizeof(char *));
    for (size_t i = 0; i < headers->n; i++)
        rc->headers[i] = xstrdup(headers->v[i]);
    rc->nheaders = headers->n;
    return rc;
}

void
realip_free(struct realip *rc)
{
    if (!rc)
        return;
    for (size_t i = 0; i < rc->nheaders; i++)
        free(rc->headers[i]);
    free(rc->headers);
    free(rc->origins);
    free(rc);
}

void
realip_apply(const struct realip *rc, struct http_request *req)
{
    if (!rc)
        return;
    int family;
    uint8_t peer[16];
    if (parse_ip(req->remote_ip, &family, peer) < 0)
        return;
    bool trusted = false;
    for (size_t i = 0; i < rc->norigins && !trusted; i++)
        trusted = cidr_contains(&rc->origins[i], family, peer);
    if (!trusted)
        return;
    for (size_t i = 0; i < rc->nheaders; i++) {
        const char *v = http_request_header(req, rc->headers[i]);
        if (!v)
            continue;
        /* X-Forwarded-For is "client, proxy1, proxy2": the client is the leftmost. */
        char ip[64];
        size_t n = strcspn(v, ",");
        while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
            n--;
        while (n > 0 && (*v == ' ' || *v == '\t')) {
            v++;
            n--;
        }
        if (n == 0 || n >= sizeof(ip))
            continue;
        memcpy(ip, v, n);
        ip[n] = '\0';
        uint8_t addr[16];
        int fam;
        if (parse_ip(ip, &fam, addr) < 0)
            continue; /* not an address: the next trusted header, or the peer's own */
        char out[INET6_ADDRSTRLEN];
        inet_ntop(fam, addr, out, sizeof(out));
        snprintf(req->remote_ip, sizeof(req->remote_ip), "%s", out);
        return;
    }
}
