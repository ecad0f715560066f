/* `coder login [<url>]` and `coder logout`, line for line as Coder's cli/login.go and
 * cli/logout.go print them (CODER-COMPAT part 2 §1.6, §1.8). */
#include "base/util.h"
#include "cli.h"
#include "commands.h"

#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

struct login_opts {
    char *email, *username, *full_name, *password;
    bool trial;
    bool use_token_as_session;
};

/* Coder adds https:// (http:// for localhost) when the URL has neither scheme. */
static char *
normalize_url(const char *u)
{
    char *s;
    if (str_has_prefix(u, "http://") || str_has_prefix(u, "https://"))
        s = xstrdup(u);
    else if (str_has_prefix(u, "localhost"))
        s = xasprintf("http://%s", u);
    else
        s = xasprintf("https://%s", u);
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '/')
        s[--n] = '\0';
    return s;
}

static const char *
check_not_empty(const char *answer, void *arg)
{
    (void)arg;
    return *answer ? NULL : "value must not be empty";
}

static const char *
check_email(const char *answer, void *arg)
{
    (void)arg;
    const char *at = strchr(answer, '@');
    bool ok = at && at > answer && at[1] && !strchr(at + 1, '@') && !strchr(answer, ' ');
    return ok ? NULL : "That's not a valid email address!";
}

/* Coder's promptFirstPassword: asked until both entries match. */
static int
ask_password(char **dest)
{
    for (;;) {
        char *a = NULL, *b = NULL;
        if (cli_prompt_set(&a, "Enter a password:", NULL, true, check_not_empty) < 0 ||
            cli_prompt_set(&b, "Confirm password:", NULL, true, check_not_empty) < 0) {
            free(a);
            return -1;
        }
        bool same = strcmp(a, b) == 0;
        free(b);
        if (same) {
            free(*dest);
            *dest = a;
            return 0;
        }
        free(a);
        printf("Passwords do not match\n");
    }
}

/* The username prompts, which Coder only asks on a terminal. */
static int
ask_first_username(struct cli *c, struct login_opts *o)
{
    if (!cli_stdin_is_tty(c)) {
        cli_fail("the initial user cannot be created in non-interactive mode. use the API");
        return -1;
    }
    if (cli_confirm(false, "Would you like to create the first user?", "yes") != 0)
        return -1;
    struct passwd *pw = getpwuid(getuid());
    if (cli_prompt_set(&o->username, "What username would you like?", pw ? pw->pw_name : NULL,
                       false, NULL) < 0)
        return -1;
    return cli_prompt_set(&o->full_name, "(Optional) What name would you like?", NULL, false, NULL);
}

/* The trial's contact details: the name Coder's prompt shows, the API's field. */
static const struct {
    const char *prompt, *field;
} trial_fields[] = {
    {"firstName", "first_name"}, {"lastName", "last_name"},       {"phoneNumber", "phone_number"},
    {"jobTitle", "job_title"},   {"companyName", "company_name"},
};
static const char *const developer_counts[] = {"1-100",     "101-500", "501-1000",
                                               "1001-2500", "2500+",   NULL};

static const char *
check_developers(const char *answer, void *arg)
{
    (void)arg;
    for (size_t i = 0; developer_counts[i]; i++) {
        if (strcmp(answer, developer_counts[i]) == 0)
            return NULL;
    }
    return "choose one of 1-100, 101-500, 501-1000, 1001-2500, 2500+";
}

/* Coder picks the country and the team size from lists; here they are typed. Returns the
 * trial_info object, or NULL after printing why. */
static json_t *
ask_trial_info(void)
{
    json_t *info = json_object();
    char *v = NULL;
    for (size_t i = 0; i < ARRAY_LEN(trial_fields); i++) {
        char *q = xasprintf("Please enter %s:", trial_fields[i].prompt);
        int rc = cli_prompt_set(&v, q, NULL, false, check_not_empty);
        free(q);
        if (rc < 0)
            goto fail;
        json_object_set_new(info, trial_fields[i].field, json_string(v));
    }
    if (cli_prompt_set(&v, "Select the country:", NULL, false, check_not_empty) < 0)
        goto fail;
    json_object_set_new(info, "country", json_string(v));
    if (cli_prompt_set(&v, "Select the number of developers:", NULL, false, check_developers) < 0)
        goto fail;
    json_object_set_new(info, "developers", json_string(v));
    free(v);
    return info;
fail:
    free(v);
    json_decref(info);
    return NULL;
}

/* Fills whatever the flags left empty, in Coder's order. Returns trial_info (an empty object
 * without a trial), or NULL after printing why. */
static json_t *
ask_first_user(struct cli *c, struct login_opts *o)
{
    if ((o->username == NULL || *o->username == '\0') && ask_first_username(c, o) < 0)
        return NULL;
    if ((o->email == NULL || *o->email == '\0') &&
        cli_prompt_set(&o->email, "What's your email?", NULL, false, check_email) < 0)
        return NULL;
    if ((o->password == NULL || *o->password == '\0') && ask_password(&o->password) < 0)
        return NULL;
    /* Neither the flag nor the variable: ask, and no answer means no trial. */
    if (strcmp(conf_source(&c->cmd, "first-user-trial"), "default") == 0)
        o->trial = cli_ask_yes("Start a trial of Enterprise?", "yes") == 1;
    return o->trial ? ask_trial_info() : json_object();
}

/* Coder's loginWithPassword: a session from the password, written at once, then the user. */
static int
login_with_password(struct cli *c, struct login_opts *o)
{
    json_t *out = NULL;
    json_t *body = json_pack("{s:s, s:s}", "email", o->email, "password", o->password);
    int rc = cli_api(c, "POST", "/api/v2/users/login", body, &out, NULL);
    json_decref(body);
    if (rc < 0)
        return -1;
    free(c->token);
    c->token = xstrdup(json_string_value(json_object_get(out, "session_token")));
    json_decref(out);
    if (cli_config_write(c, "session", c->token) < 0) {
        cli_fail("write session token: %s", strerror(errno));
        return -1;
    }
    if (cli_api(c, "GET", "/api/v2/users/me", NULL, &out, NULL) < 0)
        return -1;
    /* Coder prints this without a line break and glues the next line to it; ours ends it. */
    printf("Welcome to Coder, %s! You're authenticated.\n",
           json_string_value(json_object_get(out, "username")));
    json_decref(out);
    return 0;
}

static int
create_first_user(struct cli *c, struct login_opts *o)
{
    printf("> Your Coder deployment hasn't been set up!\n");
    fflush(stdout);
    json_t *info = ask_first_user(c, o);
    if (info == NULL)
        return -1;
    json_t *out = NULL;
    json_t *body = json_pack("{s:s, s:s, s:s, s:s, s:b, s:o}", "email", o->email, "username",
                             o->username, "name", o->full_name ? o->full_name : "", "password",
                             o->password, "trial", o->trial, "trial_info", info);
    int rc = cli_api(c, "POST", "/api/v2/users/first", body, &out, NULL);
    json_decref(body);
    json_decref(out);
    if (rc < 0 || login_with_password(c, o) < 0)
        return -1;
    if (cli_config_write(c, "url", c->url) < 0) {
        cli_fail("write server url: %s", strerror(errno));
        return -1;
    }
    printf("Get started by creating a template: coder templates init\n");
    return 0;
}

static const char *
check_token(const char *answer, void *arg)
{
    struct cli *c = arg;
    str_replace(&c->token, answer);
    json_t *out = NULL;
    long status = 0;
    char *err = NULL;
    int rc = cli_api_raw(c, "GET", "/api/v2/users/me", NULL, &out, &status, &err, NULL);
    json_decref(out);
    free(err);
    return rc == 0 && status == 200 ? NULL : "That's not a valid token!";
}

/* The session for a deployment that has its first user: a pasted token is kept as it is; a
 * --token / CODER_SESSION_TOKEN is exchanged for a new key unless --use-token-as-session. */
static int
session_for_user(struct cli *c, struct login_opts *o)
{
    if (c->g.token == NULL || *c->g.token == '\0') {
        printf("Open the following in your browser:\n\n\t%s/cli-auth\n\n", c->url);
        char *tok = cli_prompt_checked("Paste your token here:", NULL, true, check_token, c);
        if (tok == NULL) {
            cli_fail("no token pasted: end of input");
            return -1;
        }
        str_replace(&c->token, tok);
        free(tok);
        return 0;
    }
    str_replace(&c->token, c->g.token);
    if (o->use_token_as_session)
        return 0;
    json_t *out = NULL;
    if (cli_api(c, "POST", "/api/v2/users/me/keys", NULL, &out, NULL) < 0)
        return -1;
    str_replace(&c->token, json_string_value(json_object_get(out, "key")));
    json_decref(out);
    return 0;
}

static int
login_user(struct cli *c, struct login_opts *o)
{
    json_t *out = NULL;
    if (session_for_user(c, o) < 0 || cli_api(c, "GET", "/api/v2/users/me", NULL, &out, NULL) < 0)
        return -1;
    int rc = -1;
    if (cli_config_write(c, "session", c->token) < 0 || cli_config_write(c, "url", c->url) < 0) {
        cli_fail("write session to \"%s\": %s", c->config_dir, strerror(errno));
    } else {
        printf("> Welcome to Coder, %s! You're authenticated.\n",
               json_string_value(json_object_get(out, "username")));
        rc = 0;
    }
    json_decref(out);
    return rc;
}

/* The URL and where it came from, in Coder's order: argument, --url / CODER_URL, the config
 * directory's url file. Returns NULL after printing Coder's error. */
static char *
login_url(struct cli *c, const char **src)
{
    char *raw = NULL;
    if (c->res.nargs == 1) {
        raw = xstrdup(c->res.args[0]);
        *src = "argument";
    } else if (c->g.url && *c->g.url) {
        raw = xstrdup(c->g.url);
        *src = strcmp(conf_source(&c->cmd, "url"), "env") == 0 ? "environment" : "flag";
    } else if ((raw = cli_config_read(c, "url")) != NULL) {
        *src = "config";
    } else {
        cli_fail("no url argument provided");
        return NULL;
    }
    char *u = normalize_url(raw);
    free(raw);
    return u;
}

/* GET /users/first. Returns 1 when the first user exists, 0 when not, -1 after printing
 * Coder's "Failed to check server" line. Anything not answering as coderd is refused, not
 * only a 404 without X-Coder-Build-Version as in Coder. */
static int
has_first_user(struct cli *c)
{
    json_t *out = NULL;
    long status = 0;
    char *err = NULL;
    bool is_coder = false;
    int rc = cli_api_raw(c, "GET", "/api/v2/users/first", NULL, &out, &status, &err, &is_coder);
    if (rc == 0 && !is_coder)
        err = xstrdup("missing build version header, not a coder instance");
    else if (rc == 0 && status != 200 && status != 404)
        err = cli_api_error(status, out);
    json_decref(out);
    if (err == NULL)
        return status == 200;
    cli_fail("Failed to check server \"%s\" for first user, is the URL correct and is coder "
             "accessible from your browser? Error - has initial user: %s",
             c->url, err);
    free(err);
    return -1;
}

int
cmd_login(int argc, char **argv)
{
    struct login_opts o = {0};
    const struct conf_opt opts[] = {
        {.flag = "first-user-email",
         .env = "CODER_FIRST_USER_EMAIL",
         .type = CONF_STRING,
         .dest = &o.email,
         .help =
             "Specifies an email address to use if creating the first user for the deployment."},
        {.flag = "first-user-username",
         .env = "CODER_FIRST_USER_USERNAME",
         .type = CONF_STRING,
         .dest = &o.username,
         .help = "Specifies a username to use if creating the first user for the deployment."},
        {.flag = "first-user-full-name",
         .env = "CODER_FIRST_USER_FULL_NAME",
         .type = CONF_STRING,
         .dest = &o.full_name,
         .help = "Specifies a human-readable name for the first user of the deployment."},
        {.flag = "first-user-password",
         .env = "CODER_FIRST_USER_PASSWORD",
         .type = CONF_STRING,
         .dest = &o.password,
         .help = "Specifies a password to use if creating the first user for the deployment."},
        {.flag = "first-user-trial",
         .env = "CODER_FIRST_USER_TRIAL",
         .type = CONF_BOOL,
         .dest = &o.trial,
         .help = "Specifies whether a trial license should be provisioned for the Coder deployment "
                 "or not."},
        {.flag = "use-token-as-session",
         .type = CONF_BOOL,
         .dest = &o.use_token_as_session,
         .help = "By default, the CLI will generate a new session token when logging in. This flag "
                 "will instead use the provided token as the session token."},
    };
    struct cli c = {0};
    int r = cli_parse(&c, "coder login [flags] [<url>]", "Authenticate with Coder deployment", opts,
                      ARRAY_LEN(opts), argc, argv);
    if (r <= 0) {
        cli_fini(&c);
        return r < 0;
    }
    int rc = 1;
    const char *src = NULL;
    if (c.res.nargs > 1) {
        cli_fail("wanted no more than 1 argument, got %zu", c.res.nargs);
        goto out;
    }
    if ((c.url = login_url(&c, &src)) == NULL || (r = has_first_user(&c)) < 0)
        goto out;
    printf("Attempting to authenticate with %s URL: '%s'\n", src, c.url);
    fflush(stdout);
    if ((r == 0 ? create_first_user(&c, &o) : login_user(&c, &o)) == 0)
        rc = 0;
out:
    cli_fini(&c);
    return rc;
}

int
cmd_logout(int argc, char **argv)
{
    bool yes = false;
    const struct conf_opt opts[] = {CLI_OPT_YES(&yes)};
    struct cli c = {0};
    int r = cli_parse(&c, "coder logout [flags]", "Unauthenticate your local session", opts,
                      ARRAY_LEN(opts), argc, argv);
    if (r <= 0) {
        cli_fini(&c);
        return r < 0;
    }
    int rc = 1;
    if (cli_require_session(&c) < 0 ||
        cli_confirm(yes, "Are you sure you want to log out?", "yes") != 0)
        goto out;
    json_t *out = NULL;
    char *err = NULL;
    long status = 0;
    /* As Coder's client.Logout, only a request that got no answer at all is an error; the
     * local session is removed either way. */
    int api = cli_api_raw(&c, "POST", "/api/v2/users/logout", NULL, &out, &status, &err, NULL);
    json_decref(out);
    cli_config_remove(&c, "url");
    cli_config_remove(&c, "session");
    cli_config_remove(&c, "organization");
    if (api < 0) {
        cli_fail("Failed to log out. logout api: %s", err);
        free(err);
        goto out;
    }
    printf("> You are no longer logged in. You can log in using 'coder login <url>'.\n");
    rc = 0;
out:
    cli_fini(&c);
    return rc;
}
