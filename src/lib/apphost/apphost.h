/* Workspace app hostnames, as Coder defines them (coderd/workspaceapps/appurl):
 *
 *   wildcard patterns   "*.apps.example.com", "*--apps.example.com", optionally with ":port"
 *   subdomain apps      ({prefix}---)?{app_slug | port[s]}(--{agent})?--{workspace}--{username}
 *
 * The agent part is optional for app slugs and required for ports (a port is 4-5 digits with an
 * optional "s" for an https upstream). As in Coder (since PR #19750), an agent name given with an
 * app slug is parsed but not reported: app slugs are unique within a workspace.
 *
 * Pure functions over bounded input (a hostname is at most APPHOST_MAX_HOSTNAME bytes), so they
 * can be fuzzed directly. */
#ifndef APPHOST_APPHOST_H
#define APPHOST_APPHOST_H

#include <stdbool.h>

#define APPHOST_MAX_HOSTNAME 253

/* A compiled wildcard hostname pattern. */
struct apphost_pattern {
    char *host;   /* lower-cased pattern without the port, e.g. "*--apps.example.com" */
    char *suffix; /* what follows the '*', e.g. "--apps.example.com" */
    int port;     /* the pattern's port, 0 if none; only used to build URLs, not to match */
};

/* Validates pattern with Coder's CompileHostnamePattern rules: lower-cased; no scheme; no leading
 * or trailing dot; at least two labels; exactly one '*', at the very start; every label (the
 * first with '*' standing for a letter) a valid DNS label; an optional ":port" (1-65535).
 * On success fills *out (release with apphost_pattern_free) and returns 0. On failure returns
 * -EINVAL and, when err is not NULL, sets *err to a message the caller frees. */
int apphost_pattern_compile(const char *pattern, struct apphost_pattern *out, char **err);
/* Releases what compile allocated. Accepts a zeroed struct. */
void apphost_pattern_free(struct apphost_pattern *p);

/* Matches a Host header against the pattern, case-insensitively, ignoring surrounding
 * whitespace, one trailing dot and a ":port". The '*' must match a non-empty run without dots.
 * On a match returns true and, if subdomain is not NULL, sets *subdomain to a new string (the
 * matched part, as written in host). Like Coder, the matched part is not validated here:
 * apphost_parse does that. */
bool apphost_pattern_match(const struct apphost_pattern *p, const char *host, char **subdomain);

/* A parsed subdomain app name. Each part is at most APPHOST_MAX_HOSTNAME bytes. */
struct apphost_app {
    char prefix[APPHOST_MAX_HOSTNAME + 1]; /* "" or ending in "---", e.g. "dean---was---" */
    char app_slug_or_port[APPHOST_MAX_HOSTNAME + 1];
    char agent[APPHOST_MAX_HOSTNAME + 1]; /* "" when an app slug was given */
    char workspace[APPHOST_MAX_HOSTNAME + 1];
    char username[APPHOST_MAX_HOSTNAME + 1];
};

/* Parses a subdomain (the part apphost_pattern_match returned). Returns 0 and fills *out, or
 * -EINVAL ("invalid application url format") or -EDESTADDRREQ (a port without an agent name:
 * "agent name is required for port-based URLs"); apphost_strerror gives Coder's wording. */
int apphost_parse(const char *subdomain, struct apphost_app *out);
/* Coder's message for an apphost_parse error code. */
const char *apphost_strerror(int err);

/* Builds the subdomain back: prefix, slug or port, "--agent" when agent is not empty,
 * "--workspace--username". Returns a new string. */
char *apphost_format(const struct apphost_app *app);

/* Coder's ApplicationURL.PortInfo: the slug read as a port number (digits only, at most 65535,
 * with an optional "s" suffix meaning https). Returns the port, or -1 when the slug is not a
 * port number; sets *https when https is not NULL. Note that apphost_parse only treats 4-5 digit
 * slugs as ports for the agent rule. */
int apphost_app_port(const struct apphost_app *app, bool *https);

/* True when the two hostnames are equal ignoring ASCII case, leading and trailing dots and a
 * ":port" (IPv6 literals may be bracketed). */
bool apphost_hostnames_match(const char *a, const char *b);

#endif
