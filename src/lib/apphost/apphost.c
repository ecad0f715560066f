/* Wildcard patterns and subdomain app names, matched by hand rather than with a regex engine:
 * the grammar is small, and this keeps matching linear and allocation-free on the request path. */
#include "apphost/apphost.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/buf.h"
#include "base/util.h"

/* A Host header longer than this cannot be a hostname plus port; refuse it before scanning. */
#define APPHOST_MAX_HOST_HEADER 512

static bool
is_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static bool
is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Go's regexp \s: the characters Coder's pattern allows around a hostname. */
static bool
is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r';
}

/* Appends s quoted the way Go's %q does for ASCII, so messages match Coder's. */
static void
buf_put_quoted(struct buf *b, const char *s)
{
    buf_putc(b, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            buf_printf(b, "\\%c", *p);
        else if (*p < 0x20 || *p >= 0x7f)
            buf_printf(b, "\\x%02x", *p);
        else
            buf_putc(b, (char)*p);
    }
    buf_putc(b, '"');
}

static int
compile_fail(char **err, const char *what, const char *label, const char *pattern)
{
    if (err != NULL) {
        struct buf b;
        buf_init(&b);
        buf_printf(&b, "hostname pattern %s", what);
        if (label != NULL) {
            buf_putc(&b, ' ');
            buf_put_quoted(&b, label);
        }
        buf_puts(&b, ": ");
        buf_put_quoted(&b, pattern);
        *err = buf_steal(&b);
    }
    return -EINVAL;
}

/* Coder's validHostnameLabelRegex: ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ */
static bool
label_valid(const char *s, size_t n)
{
    if (n == 0 || s[0] == '-' || s[n - 1] == '-')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || is_digit(c) || c == '-'))
            return false;
    }
    return true;
}

static size_t
count_char(const char *s, char c)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == c;
    return n;
}

/* A decimal port 1-65535 filling all of s. */
static int
port_parse(const char *s)
{
    long v = 0;
    if (*s == '\0' || strlen(s) > 5)
        return -1;
    for (; *s; s++) {
        if (!is_digit(*s))
            return -1;
        v = v * 10 + (*s - '0');
    }
    return v >= 1 && v <= 65535 ? (int)v : -1;
}

/* Checks every label of host ("*..." with the '*' standing in for a letter, as Coder does). */
static int
labels_check(const char *host, char **err)
{
    const char *p = host;
    for (int i = 0;; i++) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        char label[APPHOST_MAX_HOSTNAME + 2];
        if (i == 0) {
            /* "*" -> "a", "*--apps" -> "a--apps" */
            snprintf(label, sizeof(label), "a%.*s", (int)n - 1, p + 1);
        } else {
            snprintf(label, sizeof(label), "%.*s", (int)n, p);
        }
        if (!label_valid(label, strlen(label)))
            return compile_fail(err, "contains invalid label", label, host);
        if (dot == NULL)
            return 0;
        p = dot + 1;
    }
}

int
apphost_pattern_compile(const char *pattern, struct apphost_pattern *out, char **err)
{
    char *lower = NULL, *colon;
    int rc, port = 0;
    memset(out, 0, sizeof(*out));
    if (err != NULL)
        *err = NULL;
    if (pattern == NULL)
        pattern = "";
    /* Room for a full hostname and ":65535"; longer cannot be valid. */
    if (strlen(pattern) > APPHOST_MAX_HOSTNAME + 6)
        return compile_fail(err, "is too long", NULL, "...");
    lower = str_lower(xstrdup(pattern));
    if (strstr(lower, "http:") || strstr(lower, "https:")) {
        rc = compile_fail(err, "must not contain a scheme", NULL, lower);
        goto fail;
    }
    size_t n = strlen(lower);
    if (n > 0 && (lower[0] == '.' || lower[n - 1] == '.')) {
        rc = compile_fail(err, "must not start or end with a period", NULL, lower);
        goto fail;
    }
    if (count_char(lower, '.') < 1) {
        rc = compile_fail(err, "must contain at least two labels/segments", NULL, lower);
        goto fail;
    }
    if (count_char(lower, '*') != 1) {
        rc = compile_fail(err, "must contain exactly one asterisk", NULL, lower);
        goto fail;
    }
    if (lower[0] != '*') {
        rc = compile_fail(err, "must only contain an asterisk at the beginning", NULL, lower);
        goto fail;
    }
    /* A port is kept for building URLs and ignored for matching. With more than one colon
     * there is no port to split off and the label check rejects the pattern. */
    colon = strchr(lower, ':');
    if (colon != NULL && count_char(lower, ':') == 1) {
        port = port_parse(colon + 1);
        if (port < 0) {
            rc = compile_fail(err, "has an invalid port", NULL, lower);
            goto fail;
        }
        *colon = '\0';
    }
    if (strlen(lower) > APPHOST_MAX_HOSTNAME) {
        rc = compile_fail(err, "is too long", NULL, lower);
        goto fail;
    }
    rc = labels_check(lower, err);
    if (rc < 0)
        goto fail;
    out->host = lower;
    out->suffix = xstrdup(lower + 1);
    out->port = port;
    return 0;
fail:
    free(lower);
    return rc;
}

void
apphost_pattern_free(struct apphost_pattern *p)
{
    if (p == NULL)
        return;
    free(p->host);
    free(p->suffix);
    memset(p, 0, sizeof(*p));
}

/* Equivalent to Coder's ^\s*([^.]+)<suffix>\.?(:\d+)?\s*$, compared case-insensitively, except
 * that surrounding whitespace is never taken as the wildcard part (the regex matches " .hi.com"
 * with " " as the subdomain, which then fails to parse anyway). */
bool
apphost_pattern_match(const struct apphost_pattern *p, const char *host, char **subdomain)
{
    if (subdomain != NULL)
        *subdomain = NULL;
    if (p == NULL || p->suffix == NULL || host == NULL)
        return false;
    size_t n = strnlen(host, APPHOST_MAX_HOST_HEADER + 1);
    if (n > APPHOST_MAX_HOST_HEADER)
        return false;
    const char *s = host;
    while (n > 0 && is_space(*s)) {
        s++;
        n--;
    }
    while (n > 0 && is_space(s[n - 1]))
        n--;
    size_t d = n;
    while (d > 0 && is_digit(s[d - 1]))
        d--;
    if (d < n && d > 0 && s[d - 1] == ':')
        n = d - 1;
    if (n > 0 && s[n - 1] == '.')
        n--;
    size_t sl = strlen(p->suffix);
    if (n > APPHOST_MAX_HOSTNAME || n <= sl || strncasecmp(s + n - sl, p->suffix, sl) != 0)
        return false;
    size_t wl = n - sl;
    if (memchr(s, '.', wl) != NULL)
        return false;
    if (subdomain != NULL)
        *subdomain = xstrndup(s, wl);
    return true;
}

/* Coder's nameRegex: [a-zA-Z0-9]+(?:-[a-zA-Z0-9]+)* */
static bool
name_valid(const char *s, size_t n)
{
    if (n == 0 || !is_alnum(s[0]) || !is_alnum(s[n - 1]))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!(is_alnum(s[i]) || (s[i] == '-' && i + 1 < n && s[i + 1] != '-')))
            return false;
    }
    return true;
}

/* Coder's PortRegex: ^\d{4,5}s?$ */
static bool
slug_is_port(const char *s)
{
    size_t n = strlen(s);
    if (n > 0 && s[n - 1] == 's')
        n--;
    if (n < 4 || n > 5)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(s[i]))
            return false;
    }
    return true;
}

int
apphost_parse(const char *subdomain, struct apphost_app *out)
{
    const char *parts[5];
    size_t lens[5], nparts = 0;
    memset(out, 0, sizeof(*out));
    if (subdomain == NULL)
        return -EINVAL;
    size_t n = strnlen(subdomain, APPHOST_MAX_HOSTNAME + 1);
    if (n > APPHOST_MAX_HOSTNAME)
        return -EINVAL;
    /* Like Go's strings.Split(s, "---"), scanning left to right without overlap: the prefix is
     * everything up to and including the last separator found that way. */
    size_t rest = 0;
    for (size_t i = 0; i + 3 <= n;) {
        if (memcmp(subdomain + i, "---", 3) == 0) {
            i += 3;
            rest = i;
        } else {
            i++;
        }
    }
    const char *s = subdomain + rest;
    size_t sn = n - rest;
    /* A name never contains "--", so the separators are exactly the "--" occurrences. */
    for (size_t start = 0, i = 0;; i++) {
        if (i == sn || (i + 2 <= sn && s[i] == '-' && s[i + 1] == '-')) {
            if (nparts == ARRAY_LEN(parts))
                return -EINVAL;
            parts[nparts] = s + start;
            lens[nparts++] = i - start;
            if (i == sn)
                break;
            start = i + 2;
            i++;
        }
    }
    if (nparts != 3 && nparts != 4)
        return -EINVAL;
    for (size_t i = 0; i < nparts; i++) {
        if (!name_valid(parts[i], lens[i]))
            return -EINVAL;
    }
    size_t w = nparts - 2;
    memcpy(out->prefix, subdomain, rest);
    memcpy(out->app_slug_or_port, parts[0], lens[0]);
    memcpy(out->workspace, parts[w], lens[w]);
    memcpy(out->username, parts[w + 1], lens[w + 1]);
    if (slug_is_port(out->app_slug_or_port)) {
        if (nparts == 3) {
            memset(out, 0, sizeof(*out));
            return -EDESTADDRREQ;
        }
        memcpy(out->agent, parts[1], lens[1]);
    }
    return 0;
}

const char *
apphost_strerror(int err)
{
    switch (err) {
    case 0:
        return "ok";
    case -EDESTADDRREQ:
        return "agent name is required for port-based URLs";
    default:
        return "invalid application url format";
    }
}

char *
apphost_format(const struct apphost_app *app)
{
    return xasprintf("%s%s%s%s--%s--%s", app->prefix, app->app_slug_or_port,
                     app->agent[0] ? "--" : "", app->agent, app->workspace, app->username);
}

int
apphost_app_port(const struct apphost_app *app, bool *https)
{
    const char *s = app->app_slug_or_port;
    size_t n = strlen(s);
    bool tls = n > 0 && s[n - 1] == 's';
    long v = 0;
    if (tls)
        n--;
    if (https != NULL)
        *https = false;
    if (n == 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
        if (v > 65535)
            return -1;
    }
    if (https != NULL)
        *https = tls;
    return (int)v;
}

/* The host part of a hostname that may carry dots around it and a port, as Coder gets with
 * strings.Trim(s, ".") and net.SplitHostPort. Dots are trimmed again after the port goes so that
 * "example.com.:80" is the same host as "example.com". */
static void
host_part(const char *s, const char **start, size_t *len)
{
    size_t n = strlen(s);
    while (n > 0 && *s == '.') {
        s++;
        n--;
    }
    while (n > 0 && s[n - 1] == '.')
        n--;
    if (n > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (close != NULL && (size_t)(close - s) + 1 < n && close[1] == ':') {
            *start = s + 1;
            *len = (size_t)(close - s) - 1;
            return;
        }
    } else {
        const char *colon = memchr(s, ':', n);
        if (colon != NULL && memchr(colon + 1, ':', n - (size_t)(colon - s) - 1) == NULL) {
            n = (size_t)(colon - s);
            while (n > 0 && s[n - 1] == '.')
                n--;
        }
    }
    *start = s;
    *len = n;
}

bool
apphost_hostnames_match(const char *a, const char *b)
{
    const char *as, *bs;
    size_t al, bl;
    if (a == NULL || b == NULL)
        return false;
    host_part(a, &as, &al);
    host_part(b, &bs, &bl);
    return al == bl && strncasecmp(as, bs, al) == 0;
}
