/* Coder's app cookies and the hand-off of a session between domains (CODER-COMPAT §5.3), the
 * same at the primary's wildcard and at proxies:
 *
 *   1. a browser signed in at the primary is sent back to the app with an encrypted API key in
 *      the query parameter APP_KEY_PARAM;
 *   2. the region decrypts it and stores it in a session cookie scoped to the app's host: the
 *      path-app cookie on the region's host, or one name per wildcard with Domain set to the
 *      wildcard's parent domain (never the primary's coder_session_token);
 *   3. then redirects (303) to the same URL without the parameter.
 *
 * A region also keeps the signed app token it was given in APP_TOKEN_COOKIE, scoped to the
 * app's base path, so later requests need no call to the primary. */
#ifndef APPPROXY_COOKIES_H
#define APPPROXY_COOKIES_H

#include "apphost/apphost.h"
#include "appproxy/request.h"
#include "http/server.h"

#include <stdbool.h>
#include <stdint.h>

#define APP_KEY_PARAM "coder_application_connect_api_key_35e783"
#define APP_TOKEN_COOKIE "coder_signed_app_token"
#define APP_PATH_SESSION_COOKIE "coder_path_app_session_token"
/* How many coder_signed_app_token cookies a request may offer (as Coder tries). */
#define APP_TOKEN_COOKIES_MAX 4

/* The subdomain session cookie's name for a wildcard: coder_subdomain_app_session_token_ and
 * the first 32 hex digits of SHA-256 of the wildcard hostname. Returns a new string. */
char *app_subdomain_cookie_name(const struct apphost_pattern *wildcard);

/* The user's session for an app request: the Coder-Session-Token header, the
 * coder_session_token cookie or query parameter, else the app session cookie of r's access
 * method. Returns a new string or NULL. */
char *app_session_token(const struct http_request *req, const struct app_request *r,
                        const struct apphost_pattern *wildcard);

/* Step 2 and 3 above: answers ex with 303 to its own URL without APP_KEY_PARAM (path-only, it
 * cannot leave the host) and a session cookie holding api_key. secure adds Secure. */
void app_reply_session_cookie(struct http_exchange *ex, const struct app_request *r,
                              const struct apphost_pattern *wildcard, const char *api_key,
                              bool secure);

/* Sets APP_TOKEN_COOKIE to token for r's base path, expiring at exp_s (Unix seconds). */
void app_set_token_cookie(struct http_exchange *ex, const struct app_request *r, const char *token,
                          int64_t exp_s, bool secure);

#endif
