/* A strict RFC 3986 splitter for absolute URLs. It exists to validate what operators and peers
 * give us (access URLs, registration requests), so it refuses rather than repairs: anything Go's
 * url.Parse would reject, and a few things it lets through (ports above 65535, whitespace). */
#include "http/url.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/util.h"

static bool
is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool
is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int
hex_value(char c)
{
    if (is_digit(c))
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* RFC 3986 reg-name characters (unreserved and sub-delims), without percent-escapes: hostnames
 * we connect to or compare are plain ASCII. */
static bool
host_char(char c)
{
    return is_alpha(c) || is_digit(c) || (c != '\0' && strchr("-._~!$&'()*+,;=", c) != NULL);
}

/* Every '%' in s[0..n) starts a valid escape. */
static bool
escapes_valid(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%')
            continue;
        if (i + 2 >= n)
            return false;
        if (hex_value(s[i + 1]) < 0 || hex_value(s[i + 2]) < 0)
            return false;
        i += 2;
    }
    return true;
}

static int
port_parse(const char *s, size_t n)
{
    int v = 0;
    if (n > 5)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v <= 65535 ? v : -1;
}

/* authority = [ userinfo "@" ] host [ ":" port ] */
static int
authority_parse(const char *a, size_t n, struct url *out)
{
    const char *at = NULL;
    for (size_t i = 0; i < n; i++) {
        if (a[i] == '@')
            at = a + i;
    }
    if (at != NULL) {
        out->has_userinfo = true;
        out->userinfo = xstrndup(a, (size_t)(at - a));
        n -= (size_t)(at - a) + 1;
        a = at + 1;
    }
    const char *host = a, *port = NULL;
    size_t hlen = n;
    if (n > 0 && a[0] == '[') {
        const char *close = memchr(a, ']', n);
        char addr[INET6_ADDRSTRLEN + 1];
        struct in6_addr tmp;
        if (close == NULL)
            return -EINVAL;
        hlen = (size_t)(close - a) - 1;
        host = a + 1;
        if (hlen == 0 || hlen >= sizeof(addr))
            return -EINVAL;
        memcpy(addr, host, hlen);
        addr[hlen] = '\0';
        if (inet_pton(AF_INET6, addr, &tmp) != 1)
            return -EINVAL;
        out->ipv6 = true;
        if (close + 1 < a + n) {
            if (close[1] != ':')
                return -EINVAL;
            port = close + 2;
        }
    } else {
        const char *colon = memchr(a, ':', n);
        if (colon != NULL) {
            hlen = (size_t)(colon - a);
            port = colon + 1;
        }
        for (size_t i = 0; i < hlen; i++) {
            if (!host_char(host[i]))
                return -EINVAL;
        }
    }
    if (port != NULL) {
        int p = port_parse(port, (size_t)(a + n - port));
        if (p < 0)
            return -EINVAL;
        out->port = p;
    }
    out->host = str_lower(xstrndup(host, hlen));
    return 0;
}

static bool
scheme_is(const struct url *u, const char *a, const char *b)
{
    return strcmp(u->scheme, a) == 0 || strcmp(u->scheme, b) == 0;
}

int
url_parse(const char *s, struct url *out)
{
    size_t n, i = 0;
    memset(out, 0, sizeof(*out));
    if (s == NULL)
        return -EINVAL;
    n = strnlen(s, URL_MAX_LEN + 1);
    if (n > URL_MAX_LEN)
        return -EINVAL;
    for (size_t k = 0; k < n; k++) {
        unsigned char c = (unsigned char)s[k];
        if (c <= 0x20 || c == 0x7f)
            return -EINVAL;
    }
    if (!is_alpha(s[0]))
        return -EINVAL;
    while (is_alpha(s[i]) || is_digit(s[i]) || s[i] == '+' || s[i] == '-' || s[i] == '.')
        i++;
    if (s[i] != ':')
        return -EINVAL;
    out->scheme = str_lower(xstrndup(s, i));
    const char *p = s + i + 1;
    if (p[0] == '/' && p[1] == '/') {
        p += 2;
        size_t alen = strcspn(p, "/?#");
        out->has_authority = true;
        if (authority_parse(p, alen, out) < 0)
            goto fail;
        p += alen;
    }
    size_t plen = strcspn(p, "?#");
    if (!escapes_valid(p, plen))
        goto fail;
    out->path = xstrndup(p, plen);
    p += plen;
    if (*p == '?') {
        size_t qlen = strcspn(p + 1, "#");
        out->has_query = true;
        out->query = xstrndup(p + 1, qlen);
        p += 1 + qlen;
    }
    if (*p == '#') {
        out->has_fragment = true;
        if (!escapes_valid(p + 1, strlen(p + 1)))
            goto fail;
        out->fragment = xstrdup(p + 1);
    }
    if ((scheme_is(out, "http", "https") || scheme_is(out, "ws", "wss")) &&
        (out->host == NULL || out->host[0] == '\0'))
        goto fail;
    /* Absent parts are "" so callers can compare without NULL checks. */
    if (out->userinfo == NULL)
        out->userinfo = xstrdup("");
    if (out->host == NULL)
        out->host = xstrdup("");
    if (out->query == NULL)
        out->query = xstrdup("");
    if (out->fragment == NULL)
        out->fragment = xstrdup("");
    return 0;
fail:
    url_free(out);
    return -EINVAL;
}

void
url_free(struct url *u)
{
    if (u == NULL)
        return;
    free(u->scheme);
    free(u->userinfo);
    free(u->host);
    free(u->path);
    free(u->query);
    free(u->fragment);
    memset(u, 0, sizeof(*u));
}

int
url_default_port(const struct url *u)
{
    if (u->scheme == NULL)
        return 0;
    if (scheme_is(u, "http", "ws"))
        return 80;
    if (scheme_is(u, "https", "wss"))
        return 443;
    return 0;
}

char *
url_authority(const struct url *u)
{
    const char *open = u->ipv6 ? "[" : "", *close = u->ipv6 ? "]" : "";
    if (u->port == 0)
        return xasprintf("%s%s%s", open, u->host ? u->host : "", close);
    return url_host_port(u);
}

char *
url_host_port(const struct url *u)
{
    int port = u->port ? u->port : url_default_port(u);
    const char *host = u->host ? u->host : "";
    const char *open = u->ipv6 ? "[" : "", *close = u->ipv6 ? "]" : "";
    if (port == 0)
        return xasprintf("%s%s%s", open, host, close);
    return xasprintf("%s%s%s:%d", open, host, close, port);
}

bool
url_is_http_base(const char *s)
{
    struct url u;
    if (url_parse(s, &u) < 0)
        return false;
    bool ok = scheme_is(&u, "http", "https") && u.host[0] != '\0' &&
              (u.path[0] == '\0' || strcmp(u.path, "/") == 0) && !u.has_query && !u.has_fragment &&
              !u.has_userinfo;
    url_free(&u);
    return ok;
}

char *
url_unescape(const char *s, size_t n, bool plus_is_space)
{
    char *out = xmalloc(n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            int hi = i + 2 < n ? hex_value(s[i + 1]) : -1;
            int lo = i + 2 < n ? hex_value(s[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
                free(out);
                return NULL;
            }
            out[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else if (s[i] == '+' && plus_is_space) {
            out[o++] = ' ';
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return out;
}

char *
url_escape_query(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    struct buf b;
    buf_init(&b);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char c = (char)*p;
        if (is_alpha(c) || is_digit(c) || c == '-' || c == '_' || c == '.' || c == '~') {
            buf_putc(&b, c);
        } else if (c == ' ') {
            buf_putc(&b, '+');
        } else {
            char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            buf_append(&b, e, 3);
        }
    }
    return buf_steal(&b);
}

char *
url_query_get(const char *query, const char *key)
{
    if (query == NULL || key == NULL)
        return NULL;
    const char *p = query;
    while (*p) {
        size_t len = strcspn(p, "&");
        const char *pair = p;
        p += len;
        if (*p == '&')
            p++;
        if (len == 0 || memchr(pair, ';', len) != NULL)
            continue;
        const char *eq = memchr(pair, '=', len);
        size_t klen = eq ? (size_t)(eq - pair) : len;
        char *k = url_unescape(pair, klen, true);
        if (k == NULL)
            continue;
        bool match = strcmp(k, key) == 0;
        free(k);
        if (!match)
            continue;
        char *v = eq ? url_unescape(eq + 1, len - klen - 1, true) : xstrdup("");
        if (v != NULL)
            return v;
    }
    return NULL;
}
