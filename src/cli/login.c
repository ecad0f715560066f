/* `coder login [<url>]` and `coder logout`. */
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

static char *
normalize_url(const char *u)
{
    char *s;
    if (strstr(u, "://"))
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

/* Prompts for whatever first-user field the flags left empty (interactive terminals only). */
static int
prompt_first_user(struct login_opts *o)
{
    if (o->username == NULL || *o->username == '\0') {
        if (!cli_stdin_is_tty())
            return cli_fail("the initial user cannot be created in non-interactive mode. use the "
                            "API");
        printf("> Your Coder deployment hasn't been set up!\n");
        struct passwd *pw = getpwuid(getuid());
        char *v = cli_prompt("What username would you like?", pw ? pw->pw_name : "admin", false);
        if (v == NULL)
            return cli_fail("no username given");
        str_replace(&o->username, v);
        free(v);
    }
    if ((o->full_name == NULL || *o->full_name == '\0') && cli_stdin_is_tty()) {
        char *v = cli_prompt("(Optional) What name would you like?", "", false);
        str_replace(&o->full_name, v ? v : "");
        free(v);
    }
    if (o->email == NULL || *o->email == '\0') {
        if (!cli_stdin_is_tty())
            return cli_fail("--first-user-email is required in non-interactive mode");
        char *v = cli_prompt("What's your email?", NULL, false);
        if (v == NULL || strchr(v, '@') == NULL) {
            free(v);
            return cli_fail("That's not a valid email address!");
        }
        str_replace(&o->email, v);
        free(v);
    }
    if (o->password == NULL || *o->password == '\0') {
        if (!cli_stdin_is_tty())
            return cli_fail("--first-user-password is required in non-interactive mode");
        char *a = cli_prompt("Enter a password:", NULL, true);
        char *b = cli_prompt("Confirm password:", NULL, true);
        bool same = a && b && strcmp(a, b) == 0;
        if (same)
            str_replace(&o->password, a);
        free(a);
        free(b);
        if (!same)
            return cli_fail("Passwords do not match");
    }
    return 0;
}

static int
create_first_user(struct cli *c, struct login_opts *o)
{
    if (prompt_first_user(o) != 0)
        return 1;
    json_t *out = NULL;
    json_t *body =
        json_pack("{s:s, s:s, s:s, s:s, s:b}", "email", o->email, "username", o->username, "name",
                  o->full_name ? o->full_name : "", "password", o->password, "trial", o->trial);
    int rc = cli_api(c, "POST", "/api/v2/users/first", body, &out, NULL);
    json_decref(body);
    json_decref(out);
    if (rc < 0)
        return 1;
    body = json_pack("{s:s, s:s}", "email", o->email, "password", o->password);
    rc = cli_api(c, "POST", "/api/v2/users/login", body, &out, NULL);
    json_decref(body);
    if (rc < 0)
        return 1;
    free(c->token);
    c->token = xstrdup(json_string_value(json_object_get(out, "session_token")));
    json_decref(out);
    return 0;
}

/* Exchanges a given token for a new session key, as Coder does (unless told not to). */
static int
session_from_token(struct cli *c, const char *token, bool as_is)
{
    c->token = xstrdup(token);
    if (as_is)
        return 0;
    json_t *out = NULL;
    if (cli_api(c, "POST", "/api/v2/users/me/keys", NULL, &out, NULL) < 0)
        return 1;
    free(c->token);
    c->token = xstrdup(json_string_value(json_object_get(out, "key")));
    json_decref(out);
    return 0;
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
    const char *src = "argument";
    char *raw = NULL;
    if (c.res.nargs > 1) {
        rc = cli_fail("wanted no more than 1 argument, got %zu", c.res.nargs);
        goto out;
    }
    if (c.res.nargs == 1) {
        raw = xstrdup(c.res.args[0]);
    } else if (c.g.url && *c.g.url) {
        raw = xstrdup(c.g.url);
        src = "flag";
    } else if ((raw = cli_config_read(&c, "url")) != NULL) {
        src = "config";
    } else {
        rc = cli_fail("no url argument provided");
        goto out;
    }
    c.url = normalize_url(raw);
    printf("Attempting to authenticate with %s URL: '%s'\n", src, c.url);
    json_t *out = NULL;
    long status = 0;
    char *err = NULL;
    bool is_coder = false;
    if (cli_api_raw(&c, "GET", "/api/v2/users/first", NULL, &out, &status, &err, &is_coder) < 0) {
        rc = cli_fail("Failed to check server \"%s\" for first user, is the URL correct and is "
                      "coder accessible from your browser? Error - has initial user: %s",
                      c.url, err);
        free(err);
        goto out;
    }
    json_decref(out);
    if (!is_coder) {
        rc = cli_fail("missing build version header, not a coder instance");
        goto out;
    }
    if (status == 404) {
        if (create_first_user(&c, &o) != 0)
            goto out;
    } else if (c.g.token && *c.g.token) {
        if (session_from_token(&c, c.g.token, o.use_token_as_session) != 0)
            goto out;
    } else {
        if (!cli_stdin_is_tty()) {
            rc = cli_fail("the deployment is already set up: pass a session token with --token or "
                          "CODER_SESSION_TOKEN (get one at %s/cli-auth)",
                          c.url);
            goto out;
        }
        printf("Open the following in your browser:\n\n\t%s/cli-auth\n\n", c.url);
        char *tok = cli_prompt("Paste your token here:", NULL, true);
        if (tok == NULL || session_from_token(&c, tok, o.use_token_as_session) != 0) {
            free(tok);
            goto out;
        }
        free(tok);
    }
    if (cli_api(&c, "GET", "/api/v2/users/me", NULL, &out, NULL) < 0)
        goto out;
    if (cli_config_write(&c, "session", c.token) < 0 || cli_config_write(&c, "url", c.url) < 0) {
        rc = cli_fail("write session to \"%s\": %s", c.config_dir, strerror(errno));
        json_decref(out);
        goto out;
    }
    printf("Welcome to Coder, %s! You're authenticated.\n",
           json_string_value(json_object_get(out, "username")));
    json_decref(out);
    rc = 0;
out:
    free(raw);
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
    if (cli_require_session(&c) < 0)
        goto out;
    if (!yes && cli_stdin_is_tty()) {
        char *a = cli_prompt("Are you sure you want to log out? (yes/no)", "yes", false);
        bool ok = a && (str_eq_ci(a, "yes") || str_eq_ci(a, "y"));
        free(a);
        if (!ok) {
            rc = cli_fail("logout canceled");
            goto out;
        }
    }
    json_t *out = NULL;
    char *err = NULL;
    long status = 0;
    int api = cli_api_raw(&c, "POST", "/api/v2/users/logout", NULL, &out, &status, &err, NULL);
    json_decref(out);
    cli_config_remove(&c, "url");
    cli_config_remove(&c, "session");
    cli_config_remove(&c, "organization");
    if (api < 0) {
        rc = cli_fail("Failed to log out: logout api: %s", err);
        free(err);
        goto out;
    }
    printf("You are no longer logged in. You can log in using 'coder login <url>'.\n");
    rc = 0;
out:
    cli_fini(&c);
    return rc;
}
