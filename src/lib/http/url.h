/* URL parsing for validation (access URLs, proxy URLs, redirect targets) and the percent-encoding
 * helpers the HTTP server uses for paths and query strings. Absolute URLs only
 * (scheme ":" ["//" authority] path ["?" query] ["#" fragment], RFC 3986); nothing here fetches. */
#ifndef HTTP_URL_H
#define HTTP_URL_H

#include <stdbool.h>
#include <stddef.h>

/* Longest URL url_parse accepts. */
#define URL_MAX_LEN 8192

struct url {
    char *scheme;   /* lower-cased, never empty */
    char *userinfo; /* as written, "" if none (see has_userinfo) */
    char *host;     /* lower-cased, IPv6 without brackets, "" if none */
    int port;       /* 0 when absent */
    char *path;     /* as written (still percent-encoded), "" if none */
    char *query;    /* without the '?', "" if none (see has_query) */
    char *fragment; /* without the '#', "" if none (see has_fragment) */
    bool has_authority;
    bool has_userinfo;
    bool has_query;
    bool has_fragment;
    bool ipv6; /* host was a bracketed IPv6 literal */
};

/* Parses s into *out (release with url_free). Returns 0, or -EINVAL (out left empty) for: no
 * scheme, spaces or control characters anywhere, a port that is not 1-5 digits or above 65535,
 * an invalid host or IPv6 literal, a bad percent-escape in the path or fragment, an empty host
 * for http/https/ws/wss, or more than URL_MAX_LEN bytes. */
int url_parse(const char *s, struct url *out);
/* Frees the strings of a parsed URL and zeroes it. Accepts a zeroed struct. */
void url_free(struct url *u);

/* The scheme's default port: 80 for http/ws, 443 for https/wss, 0 for anything else. */
int url_default_port(const struct url *u);
/* "host:port" with the effective port (explicit or default), IPv6 in brackets; only the host
 * when there is no effective port. Returns a new string. */
char *url_host_port(const struct url *u);
/* The host and the port as written ("example.com", "[::1]:8080"): for URLs shown back to users,
 * where url_host_port would add the default port. Returns a new string. */
char *url_authority(const struct url *u);

/* Coder's rule for a proxy or deployment base URL ("URL is invalid."): http or https, a
 * non-empty host, path empty or "/", and no query, fragment or userinfo. */
bool url_is_http_base(const char *s);

/* Decodes n bytes of s: %XX escapes (either case) and, when plus_is_space, '+' as a space.
 * Returns a new string, or NULL for a malformed escape or an escaped NUL (%00), which no path
 * segment or query value may carry. */
char *url_unescape(const char *s, size_t n, bool plus_is_space);
/* Escapes s for a query key or value like Go's url.QueryEscape: unreserved characters
 * (A-Z a-z 0-9 - _ . ~) stay, space becomes '+', all else %XX. Returns a new string. */
char *url_escape_query(const char *s);
/* The decoded value of the first key=value pair whose decoded key is key, in a query string
 * without its '?'. A key without '=' has the value "". Pairs with a bad escape or a ';' are
 * skipped, as Go's url.ParseQuery does. Returns a new string, or NULL when absent. */
char *url_query_get(const char *query, const char *key);

#endif
