/* POST /api/v2/workspaceproxies/me/issue-signed-app-token (CODER-COMPAT §2.3): a proxy asks
 * whether the user behind session_token may use an app, and gets a signed app token (JWS HS512,
 * kid = the workspace_apps_token key's sequence, one minute) it then checks locally for the
 * rest of the session. The same rules as apps at the primary: path apps for their owner only,
 * subdomain apps by sharing level. */
#include "base/timeutil.h"
#include "base/util.h"
#include "base/uuid.h"
#include "http/url.h"
#include "jose/jwt.h"
#include "primary.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define APP_TOKEN_TTL_S 60
#define NIL_UUID "00000000-0000-0000-0000-000000000000"

/* Looks up a user by name or id. */
static int
user_by_name_or_id(struct store *st, const char *s, struct store_user *out)
{
    if (uuid_valid(s)) {
        char id[37];
        snprintf(id, sizeof(id), "%s", s);
        return store_user_by_id(st, str_lower(id), out);
    }
    return store_user_by_username(st, s, out);
}

void
api_proxies_issue_app_token(struct api_ctx *c)
{
    json_t *j = api_read_json(c);
    if (!j)
        return;
    json_t *req = json_object_get(j, "app_request");
    bool bad = !json_is_object(req);
    const char *method = bad ? NULL : api_str_field(req, "access_method", &bad);
    const char *user = bad ? NULL : api_str_field(req, "username_or_id", &bad);
    const char *ws = bad ? NULL : api_str_field(req, "workspace_name_or_id", &bad);
    const char *agent = bad ? NULL : api_str_field(req, "agent_name_or_id", &bad);
    const char *slug = bad ? NULL : api_str_field(req, "app_slug_or_port", &bad);
    const char *session = api_str_field(j, "session_token", &bad);
    struct store_user owner = {0};
    struct store_workspace w = {0};
    struct store_agent *agents = NULL;
    struct store_app *apps = NULL;
    size_t nagents = 0, napps = 0;
    char *app_url = NULL;
    if (bad || !method || (!str_eq(method, "path") && !str_eq(method, "subdomain")) || !user ||
        !ws || !slug) {
        api_reply_error(c, 400, "Invalid app request.",
                        "app_request needs access_method path or subdomain, username_or_id, "
                        "workspace_name_or_id and app_slug_or_port.");
        goto out;
    }
    bool subdomain = str_eq(method, "subdomain");
    /* The user, if the session is good; an anonymous caller may still reach a public app. */
    struct api_auth_failure why = {0};
    bool signed_in = session && *session && api_auth_check(c, xstrdup(session), &why) == 0;
    api_auth_failure_fini(&why); /* a signed-out caller gets its own answer below */
    int rc = user_by_name_or_id(c->st, user, &owner);
    if (rc == 0)
        rc = store_workspace_by_owner_name(c->st, owner.id, ws, &w);
    if (rc == 0)
        rc = store_agent_list(c->st, w.id, &agents, &nagents);
    struct store_agent *ag = NULL;
    for (size_t i = 0; rc == 0 && i < nagents; i++) {
        if (agent && *agent ? (str_eq_ci(agents[i].name, agent) || str_eq(agents[i].id, agent))
                            : nagents == 1)
            ag = &agents[i];
    }
    const char *share = "owner";
    if (rc == 0 && ag) {
        char *end;
        long port = strtol(slug, &end, 10);
        if (*end == '\0' && port >= 9 && port <= 65535) {
            app_url = xasprintf("http://127.0.0.1:%ld", port);
        } else if (store_app_list(c->st, ag->id, &apps, &napps) == 0) {
            for (size_t i = 0; i < napps; i++) {
                if (!str_eq(apps[i].slug, slug))
                    continue;
                app_url = xstrdup(apps[i].url);
                if (subdomain && apps[i].subdomain)
                    share = apps[i].sharing_level;
            }
        }
    }
    bool allowed =
        app_url && (str_eq(share, "public") || (signed_in && (str_eq(share, "authenticated") ||
                                                              strcmp(owner.id, c->user.id) == 0)));
    if (rc < 0 && rc != STORE_ENOTFOUND) {
        api_reply_error(c, 500, "Internal error resolving the application.", NULL);
        goto out;
    }
    if (!allowed) {
        if (!signed_in)
            api_reply_error(c, 401,
                            "You are signed out or your session has expired. Please "
                            "sign in again to continue.",
                            "Sign in to the deployment to use this application.");
        else
            api_reply_error(c, 404, "Resource not found or you do not have access to this resource",
                            NULL);
        goto out;
    }
    uint8_t key[64];
    size_t keylen = 0;
    int64_t seq = 0;
    if (api_feature_key(c, "workspace_apps_token", key, &keylen, &seq) < 0) {
        api_reply_error(c, 500, "Internal error signing the app token.", NULL);
        goto out;
    }
    char kid[24];
    snprintf(kid, sizeof(kid), "%lld", (long long)seq);
    int64_t now_s = time_now_ms() / 1000;
    json_t *claims =
        json_pack("{s:O, s:s, s:s, s:s, s:s, s:I}", "request", req, "user_id",
                  signed_in ? c->user.id : NIL_UUID, "workspace_id", w.id, "agent_id", ag->id,
                  "app_url", app_url, "exp", (json_int_t)(now_s + APP_TOKEN_TTL_S));
    char *token = jose_sign_hs512(key, keylen, kid, claims);
    OPENSSL_cleanse(key, sizeof(key));
    json_decref(claims);
    if (!token) {
        api_reply_error(c, 500, "Internal error signing the app token.", NULL);
        goto out;
    }
    api_reply_json(c, 201, json_pack("{s:s}", "signed_token_str", token));
    free(token);
out:
    free(app_url);
    store_apps_free(apps, napps);
    store_agents_free(agents, nagents);
    store_workspace_fini(&w);
    store_user_fini(&owner);
    json_decref(j);
}
