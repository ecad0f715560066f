/* Users, sessions and API keys: the first-user flow, password login, logout, /users/me. */
#include "auth.h"
#include "base/crypto.h"
#include "base/log.h"
#include "base/timeutil.h"
#include "base/util.h"
#include "base/uuid.h"
#include "primary.h"

#include <ctype.h>
#include <string.h>

#define SIGNED_OUT                                                                                 \
    "You are signed out or your session has expired. Please sign in again to continue."
#define HOUR_MS 3600000LL
#define TOKEN_LIFETIME_MS (168 * HOUR_MS)

static json_t *
time_json(int64_t ms)
{
    char ts[40];
    time_format_rfc3339(ms, ts, sizeof(ts));
    return json_string(ts);
}

static json_t *
user_json(const struct store_user *u)
{
    json_t *roles = json_array();
    if (api_user_is_owner(u))
        json_array_append_new(roles, json_pack("{s:s, s:s, s:s}", "name", "owner", "display_name",
                                               "Owner", "organization_id", ""));
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:o, s:o, s:s, s:s, s:s, s:[], s:o}", "id",
                     u->id, "username", u->username, "avatar_url", "", "name", u->name, "email",
                     u->email, "created_at", time_json(u->created_at), "updated_at",
                     time_json(u->updated_at), "last_seen_at", time_json(u->last_seen_at), "status",
                     u->status, "login_type", u->login_type, "theme_preference", "",
                     "organization_ids", "roles", roles);
}

/* Coder's username rule: alphanumerics and single dashes, at most 32 characters. */
static bool
username_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 32 || s[0] == '-' || s[n - 1] == '-')
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '-' && s[i + 1] == '-')
            return false;
        if (!isalnum((unsigned char)s[i]) && s[i] != '-')
            return false;
    }
    return true;
}

static bool
email_valid(const char *s)
{
    const char *at = strchr(s, '@');
    return at && at != s && strchr(at + 1, '@') == NULL && at[1] != '\0' && strlen(s) <= 320 &&
           strchr(s, ' ') == NULL;
}

static void
reply_validation(struct api_ctx *c, const char *msg, const char *field, const char *detail)
{
    json_t *j = json_pack("{s:s, s:[{s:s, s:s}]}", "message", msg, "validations", "field", field,
                          "detail", detail);
    api_reply_json(c, 400, j);
}

/* Coder decodes a body into its request struct before anything else: a field of the wrong type
 * fails like a syntax error. Checks that each of keys (NULL-terminated) is a string when
 * present; replies 400 and returns -1 otherwise. */
static int
check_string_fields(struct api_ctx *c, json_t *j, const char *const *keys)
{
    for (size_t i = 0; keys[i]; i++) {
        bool bad = false;
        api_str_field(j, keys[i], &bad);
        if (bad) {
            char *detail = xasprintf("%s must be a string", keys[i]);
            api_reply_error(c, 400, "Request body must be valid JSON.", detail);
            free(detail);
            return -1;
        }
    }
    return 0;
}

static const char *const user_fields[] = {"email",    "username",   "name",
                                          "password", "login_type", NULL};

/* Validates and fills a new user from a JSON request. Replies and returns -1 on bad input. */
static int
user_from_json(struct api_ctx *c, json_t *j, struct store_user *u, const char *roles)
{
    const char *email = json_string_value(json_object_get(j, "email"));
    const char *username = json_string_value(json_object_get(j, "username"));
    const char *name = json_string_value(json_object_get(j, "name"));
    const char *password = json_string_value(json_object_get(j, "password"));
    const char *login_type = json_string_value(json_object_get(j, "login_type"));
    if (login_type == NULL || *login_type == '\0')
        login_type = "password";
    if (username == NULL || !username_valid(username)) {
        reply_validation(c, "Validation failed.", "username",
                         "username must be 1-32 letters, digits and single dashes");
        return -1;
    }
    if (email == NULL || !email_valid(email)) {
        reply_validation(c, "Validation failed.", "email", "email must be a valid email address");
        return -1;
    }
    if (strcmp(login_type, "password") != 0 && strcmp(login_type, "none") != 0) {
        api_reply_error(c, 400, "Unsupported login type.", login_type);
        return -1;
    }
    if (strcmp(login_type, "password") == 0) {
        char *weak = auth_password_check(password ? password : "");
        if (weak) {
            reply_validation(c, "Password not strong enough!", "password", weak);
            free(weak);
            return -1;
        }
    } else if (password && *password) {
        char *msg = xasprintf("Password cannot be set for non-password (\"%s\") authentication.",
                              login_type);
        api_reply_error(c, 400, msg, NULL);
        free(msg);
        return -1;
    }
    if (name && strlen(name) > 128) {
        reply_validation(c, "Validation failed.", "name", "name must be at most 128 characters");
        return -1;
    }
    uuid_new(u->id);
    u->email = xstrdup(email);
    u->username = xstrdup(username);
    u->name = xstrdup(name ? name : "");
    u->hashed_password =
        strcmp(login_type, "password") == 0 ? auth_password_hash(password) : xstrdup("");
    u->status = xstrdup("active");
    u->login_type = xstrdup(login_type);
    u->rbac_roles = xstrdup(roles);
    u->created_at = u->updated_at = time_now_ms();
    u->last_seen_at = 0;
    return 0;
}

void
api_users_first_get(struct api_ctx *c)
{
    int64_t n = 0;
    if (store_user_count(c->st, &n) < 0) {
        api_reply_error(c, 500, "Internal error fetching user count.", NULL);
        return;
    }
    if (n == 0)
        api_reply_error(c, 404, "The initial user has not been created!", NULL);
    else
        api_reply_json(c, 200,
                       json_pack("{s:s}", "message", "The initial user has already been created!"));
}

void
api_users_first_post(struct api_ctx *c)
{
    json_t *j = api_read_json(c);
    if (j == NULL)
        return;
    struct store_user u = {0};
    int64_t n = 0;
    if (check_string_fields(c, j, user_fields) < 0)
        goto out;
    if (store_begin(c->st) < 0 || store_user_count(c->st, &n) < 0) {
        api_reply_error(c, 500, "Internal error fetching user count.", NULL);
        goto out;
    }
    if (n > 0) {
        api_reply_error(c, 409, "The initial user has already been created.", NULL);
        goto out;
    }
    if (user_from_json(c, j, &u, "owner") < 0)
        goto out;
    if (store_user_insert(c->st, &u) < 0 || store_commit(c->st) < 0) {
        api_reply_error(c, 500, "Internal error creating initial user.", NULL);
        goto out;
    }
    char *org = NULL;
    store_config_get(c->st, "default_organization_id", &org);
    api_reply_json(c, 201,
                   json_pack("{s:s, s:s}", "user_id", u.id, "organization_id", org ? org : ""));
    free(org);
    log_info("api: created the first user %s", u.username);
out:
    store_rollback(c->st);
    store_user_fini(&u);
    json_decref(j);
}

char *
api_apikey_mint(struct api_ctx *c, const char *user_id, const char *login_type, int64_t lifetime_ms,
                const char *token_name, const char *scope)
{
    struct store_apikey k = {0};
    char *token = NULL;
    auth_apikey_new(k.id, &token, k.hashed_secret);
    snprintf(k.user_id, sizeof(k.user_id), "%s", user_id);
    int64_t now = time_now_ms();
    k.lifetime_seconds = lifetime_ms / 1000;
    k.expires_at = now + lifetime_ms;
    k.created_at = k.updated_at = now;
    k.last_used = 0;
    k.login_type = xstrdup(login_type);
    k.scope = xstrdup(scope);
    k.token_name = xstrdup(token_name);
    k.ip_address = xstrdup(c->ex->req.remote_ip);
    if (store_apikey_insert(c->st, &k) < 0) {
        api_reply_error(c, 500, "Failed to create API key.", NULL);
        free(token);
        token = NULL;
    }
    store_apikey_fini(&k);
    return token;
}

static void
set_session_cookie(struct api_ctx *c, const char *value, bool clear)
{
    struct primary_config *cfg = &c->p->cfg;
    const char *samesite = str_eq(cfg->samesite_auth_cookie, "none") ? "None" : "Lax";
    http_exchange_header_printf(
        c->ex, "Set-Cookie", "coder_session_token=%s; Path=/;%s HttpOnly;%s SameSite=%s", value,
        clear ? " Max-Age=0;" : "", cfg->secure_auth_cookie ? " Secure;" : "", samesite);
}

void
api_users_login(struct api_ctx *c)
{
    json_t *j = api_read_json(c);
    if (j == NULL)
        return;
    struct store_user u = {0};
    static const char *const login_fields[] = {"email", "password", NULL};
    if (check_string_fields(c, j, login_fields) < 0)
        goto out;
    const char *email = json_string_value(json_object_get(j, "email"));
    const char *password = json_string_value(json_object_get(j, "password"));
    if (email == NULL || password == NULL) {
        api_reply_error(c, 400, "Validation failed.", "email and password are required");
        goto out;
    }
    int rc = store_user_by_email(c->st, email, &u);
    if (rc == STORE_EIO) {
        api_reply_error(c, 500, "Internal error.", NULL);
        goto out;
    }
    /* Verify even for unknown users so timing does not reveal who exists. */
    bool ok = auth_password_verify(password, rc == 0 ? u.hashed_password : "");
    if (rc != 0 || !ok) {
        api_reply_error(c, 401, "Incorrect email or password.", NULL);
        goto out;
    }
    if (strcmp(u.login_type, "password") != 0) {
        char *msg = xasprintf(
            "Incorrect login type, attempting to use \"password\" but user is of login type \"%s\"",
            u.login_type);
        api_reply_error(c, 403, msg, NULL);
        free(msg);
        goto out;
    }
    if (strcmp(u.status, "suspended") == 0) {
        api_reply_error(c, 401,
                        "Your account is suspended. Contact an admin to reactivate your account.",
                        NULL);
        goto out;
    }
    char *token = api_apikey_mint(c, u.id, "password", c->p->cfg.session_duration_ms, "", "all");
    if (token == NULL)
        goto out;
    set_session_cookie(c, token, false);
    api_reply_json(c, 201, json_pack("{s:s}", "session_token", token));
    free(token);
out:
    store_user_fini(&u);
    json_decref(j);
}

void
api_users_logout(struct api_ctx *c)
{
    if (store_apikey_delete(c->st, c->key.id) < 0) {
        api_reply_error(c, 500, "Internal error deleting API key.", NULL);
        return;
    }
    set_session_cookie(c, "", true);
    api_reply_json(c, 200, json_pack("{s:s}", "message", "Logged out!"));
}

int
api_user_by_name_or_id(struct store *st, const char *s, struct store_user *out)
{
    if (uuid_valid(s)) {
        char id[37];
        snprintf(id, sizeof(id), "%s", s);
        return store_user_by_id(st, str_lower(id), out);
    }
    return store_user_by_username(st, s, out);
}

int
api_resolve_user(struct api_ctx *c, struct store_user *out)
{
    const char *param = http_exchange_param(c->ex, "user");
    int rc = param == NULL || strcmp(param, "me") == 0 ? store_user_by_id(c->st, c->user.id, out)
                                                       : api_user_by_name_or_id(c->st, param, out);
    if (rc == STORE_ENOTFOUND) {
        char *msg = xasprintf("User \"%s\" not found.", param);
        api_reply_error(c, 404, msg, NULL);
        free(msg);
        return -1;
    }
    if (rc < 0) {
        api_reply_error(c, 500, "Internal error fetching user.", NULL);
        return -1;
    }
    /* Members see only themselves. */
    if (strcmp(out->id, c->user.id) != 0 && !api_user_is_owner(&c->user)) {
        store_user_fini(out);
        api_reply_error(c, 404, "Resource not found or you do not have access to this resource",
                        NULL);
        return -1;
    }
    return 0;
}

void
api_users_get(struct api_ctx *c)
{
    struct store_user u = {0};
    if (api_resolve_user(c, &u) < 0)
        return;
    api_reply_json(c, 200, user_json(&u));
    store_user_fini(&u);
}

void
api_users_keys_create(struct api_ctx *c)
{
    struct store_user u = {0};
    if (api_resolve_user(c, &u) < 0)
        return;
    char *token = api_apikey_mint(c, u.id, "token", TOKEN_LIFETIME_MS, "", "all");
    if (token) {
        api_reply_json(c, 201, json_pack("{s:s}", "key", token));
        free(token);
    }
    store_user_fini(&u);
}

void
api_users_create(struct api_ctx *c)
{
    json_t *j = api_read_json(c);
    if (j == NULL)
        return;
    struct store_user u = {0};
    if (check_string_fields(c, j, user_fields) < 0 || user_from_json(c, j, &u, "") < 0)
        goto out;
    int rc = store_user_insert(c->st, &u);
    if (rc == STORE_ECONFLICT) {
        api_reply_error(c, 409, "User already exists.", NULL);
        goto out;
    }
    if (rc < 0) {
        api_reply_error(c, 500, "Internal error creating user.", NULL);
        goto out;
    }
    api_reply_json(c, 201, user_json(&u));
out:
    store_user_fini(&u);
    json_decref(j);
}

void
api_users_authmethods(struct api_ctx *c)
{
    api_reply_json(c, 200,
                   json_pack("{s:s, s:{s:b}, s:{s:b, s:b}, s:{s:b, s:s, s:s}}",
                             "terms_of_service_url", "", "password", "enabled", 1, "github",
                             "enabled", 0, "default_provider_configured", 0, "oidc", "enabled", 0,
                             "signInText", "", "iconUrl", ""));
}

static char *
token_from_request(const struct http_request *r)
{
    char *t = http_request_cookie(r, "coder_session_token");
    if (t && *t)
        return t;
    free(t);
    t = http_request_query_param(r, "coder_session_token");
    if (t && *t)
        return t;
    free(t);
    const char *h = http_request_header(r, "Coder-Session-Token");
    return h && *h ? xstrdup(h) : NULL;
}

int
api_auth_user(struct api_ctx *c)
{
    return api_auth_user_token(c, token_from_request(&c->ex->req));
}

static void
auth_fail(struct api_auth_failure *why, int status, const char *message, const char *detail)
{
    why->status = status;
    why->message = xstrdup(message);
    why->detail = detail ? xstrdup(detail) : NULL;
}

void
api_auth_failure_fini(struct api_auth_failure *why)
{
    free(why->message);
    free(why->detail);
    memset(why, 0, sizeof(*why));
}

void
api_reply_auth_failure(struct api_ctx *c, struct api_auth_failure *why)
{
    api_reply_error(c, why->status ? why->status : 401, why->message ? why->message : SIGNED_OUT,
                    why->detail);
    api_auth_failure_fini(why);
}

int
api_auth_check(struct api_ctx *c, char *token, struct api_auth_failure *why)
{
    char id[APIKEY_ID_LEN + 1];
    uint8_t hash[32];
    const char *detail = NULL;
    int ret = -1;
    if (token == NULL) {
        auth_fail(why, 401, SIGNED_OUT,
                  "Cookie \"coder_session_token\" or query parameter must be provided.");
        goto out;
    }
    if (auth_apikey_split(token, id, hash, &detail) < 0) {
        auth_fail(why, 401, SIGNED_OUT, detail);
        goto out;
    }
    int rc = store_apikey_by_id(c->st, id, &c->key);
    if (rc == STORE_ENOTFOUND) {
        auth_fail(why, 401, SIGNED_OUT, "API key is invalid.");
        goto out;
    }
    if (rc < 0) {
        auth_fail(why, 500, "Internal error fetching API key.", NULL);
        goto out;
    }
    if (!ct_equal(hash, c->key.hashed_secret, 32)) {
        auth_fail(why, 401, SIGNED_OUT, "API key secret is invalid.");
        goto out;
    }
    int64_t now = time_now_ms();
    if (c->key.expires_at <= now) {
        char ts[40], *msg;
        time_format_rfc3339(c->key.expires_at, ts, sizeof(ts));
        msg = xasprintf("API key expired at \"%s\".", ts);
        auth_fail(why, 401, SIGNED_OUT, msg);
        free(msg);
        goto out;
    }
    if (store_user_by_id(c->st, c->key.user_id, &c->user) < 0) {
        auth_fail(why, 401, SIGNED_OUT, "API key is invalid.");
        goto out;
    }
    if (strcmp(c->user.status, "suspended") == 0) {
        char *msg = xasprintf("User is not active (status = \"%s\"). Contact an admin to "
                              "reactivate your account.",
                              c->user.status);
        auth_fail(why, 401, msg, NULL);
        free(msg);
        goto out;
    }
    /* Refresh usage at most hourly, and extend the expiry of an active session. */
    int64_t lifetime = c->key.lifetime_seconds * 1000;
    bool touch = now - c->key.last_used > HOUR_MS;
    int64_t expires = c->key.expires_at;
    if (!c->p->cfg.disable_session_expiry_refresh && lifetime > HOUR_MS &&
        expires - now <= lifetime - HOUR_MS && str_eq(c->key.scope, "all")) {
        expires = now + lifetime;
        touch = true;
    }
    if (touch) {
        store_apikey_update_usage(c->st, c->key.id, now, expires);
        store_user_touch(c->st, c->user.id, now);
    }
    ret = 0;
out:
    free(token);
    return ret;
}

int
api_auth_user_token(struct api_ctx *c, char *token)
{
    struct api_auth_failure why = {0};
    if (api_auth_check(c, token, &why) < 0) {
        api_reply_auth_failure(c, &why);
        return -1;
    }
    /* A key made for workspace apps (auth-redirect) opens apps only, never the API. */
    if (!str_eq(c->key.scope, "all")) {
        api_reply_error(c, 403, "Forbidden.",
                        "This API key is scoped to connecting to workspace applications.");
        return -1;
    }
    return 0;
}

char *
api_request_token(const struct http_request *r)
{
    return token_from_request(r);
}
