/* coder create / list / delete: workspaces registered with one agent and its apps. */
#include "base/timeutil.h"
#include "base/util.h"
#include "cli.h"
#include "commands.h"
#include "http/url.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const list_formats[] = {"table", "json", NULL};
static const char *const list_columns[] = {
    "favorite",        "workspace",  "organization id", "organization name",
    "template",        "status",     "healthy",         "last built",
    "current version", "outdated",   "starts at",       "starts next",
    "stops after",     "stops next", "daily cost",      "id",
    "owner",           "name",       "last used",       NULL};

/* ---- create ---- */

/* Parses SLUG=URL[,subdomain][,share=owner|authenticated|public][,name=DISPLAY] into a JSON
 * app (DISPLAY is the rest of the spec, commas included). Returns NULL after printing the
 * error. */
static json_t *
parse_app_spec(const char *spec)
{
    const char *eq = strchr(spec, '=');
    if (!eq || eq == spec) {
        cli_fail("invalid --app \"%s\": want SLUG=URL[,subdomain][,share=LEVEL][,name=DISPLAY]",
                 spec);
        return NULL;
    }
    char *slug = xstrndup(spec, (size_t)(eq - spec));
    char *rest = xstrdup(eq + 1);
    json_t *app =
        json_pack("{s:s, s:b, s:s}", "slug", slug, "subdomain", 0, "sharing_level", "owner");
    /* name= comes last and takes the rest: a display name may hold commas. */
    char *dname = strstr(rest, ",name=");
    if (dname) {
        json_object_set_new(app, "display_name", json_string(dname + 6));
        *dname = '\0';
    }
    char *save = NULL;
    int i = 0;
    for (char *t = strtok_r(rest, ",", &save); t; t = strtok_r(NULL, ",", &save), i++) {
        if (i == 0) {
            json_object_set_new(app, "url", json_string(t));
        } else if (strcmp(t, "subdomain") == 0) {
            json_object_set_new(app, "subdomain", json_true());
        } else if (str_has_prefix(t, "share=")) {
            json_object_set_new(app, "sharing_level", json_string(t + 6));
        } else {
            cli_fail("invalid --app \"%s\": unknown option \"%s\" (want subdomain, share=, or "
                     "name= last)",
                     spec, t);
            json_decref(app);
            app = NULL;
            break;
        }
    }
    if (app && !json_object_get(app, "url")) {
        cli_fail("invalid --app \"%s\": missing URL after \"=\"", spec);
        json_decref(app);
        app = NULL;
    }
    free(slug);
    free(rest);
    return app;
}

/* "owner/name" or "name" (the caller's own). */
static void
split_full_name(const char *arg, char **owner, char **name)
{
    const char *slash = strchr(arg, '/');
    if (slash) {
        *owner = xstrndup(arg, (size_t)(slash - arg));
        *name = xstrdup(slash + 1);
    } else {
        *owner = xstrdup("me");
        *name = xstrdup(arg);
    }
}

int
cmd_create(int argc, char **argv)
{
    char *agent = NULL;
    struct conf_strv apps = {0};
    bool yes = false;
    const struct conf_opt opts[] = {
        {.flag = "agent",
         .def = "main",
         .type = CONF_STRING,
         .dest = &agent,
         .help = "Name of the workspace's agent."},
        {.flag = "app",
         .type = CONF_STRING_ARRAY,
         .whole = true,
         .dest = &apps,
         .help = "An app of the agent: SLUG=URL[,subdomain][,share=owner|authenticated|public]"
                 "[,name=DISPLAY]. Repeatable."},
        CLI_OPT_YES(&yes),
    };
    struct cli c = {0};
    int r = cli_parse(&c, "coder create [flags] [name]", "Create a workspace", opts,
                      ARRAY_LEN(opts), argc, argv);
    if (r <= 0) {
        cli_fini(&c);
        return r < 0;
    }
    int rc = 1;
    json_t *body = NULL, *resp = NULL, *japps = json_array();
    char *owner = NULL, *name = NULL;
    if (c.res.nargs != 1) {
        rc = cli_fail("wanted 1 argument (the workspace name), got %zu", c.res.nargs);
        goto out;
    }
    for (size_t i = 0; i < apps.n; i++) {
        json_t *app = parse_app_spec(apps.v[i]);
        if (!app)
            goto out;
        json_array_append_new(japps, app);
    }
    if (cli_require_session(&c) < 0)
        goto out;
    split_full_name(c.res.args[0], &owner, &name);
    body = json_pack("{s:s, s:[{s:s, s:O}]}", "name", name, "agents", "name", agent, "apps", japps);
    char *path = xasprintf("/api/v2/users/%s/workspaces", owner);
    int api = cli_api(&c, "POST", path, body, &resp, NULL);
    free(path);
    if (api < 0)
        goto out;
    const char *token = json_string_value(json_object_get(resp, "agent_token"));
    printf("Workspace \"%s\" created. Save the agent token, it will not be shown again.\n", name);
    printf("Agent token: %s\n\n", token ? token : "");
    printf("Start the agent inside the workspace with:\n");
    printf("CODER_AGENT_URL=%s CODER_AGENT_TOKEN=%s coder agent\n", c.url, token ? token : "");
    rc = 0;
out:
    free(owner);
    free(name);
    json_decref(japps);
    json_decref(body);
    json_decref(resp);
    cli_fini(&c);
    return rc;
}

/* ---- list ---- */

static char *
since(const char *rfc3339)
{
    int64_t ms;
    if (!rfc3339 || time_parse_rfc3339(rfc3339, &ms) < 0)
        return xstrdup("");
    int64_t s = (time_now_ms() - ms) / 1000;
    if (s < 60)
        return xasprintf("%llds ago", (long long)(s < 0 ? 0 : s));
    if (s < 3600)
        return xasprintf("%lldm ago", (long long)(s / 60));
    if (s < 86400)
        return xasprintf("%lldh ago", (long long)(s / 3600));
    return xasprintf("%lldd ago", (long long)(s / 86400));
}

static char *
workspace_cell(json_t *w, const char *col)
{
    json_t *b = json_object_get(w, "latest_build");
    const char *owner = json_string_value(json_object_get(w, "owner_name"));
    const char *name = json_string_value(json_object_get(w, "name"));
    if (strcmp(col, "workspace") == 0)
        return xasprintf("%s/%s", owner ? owner : "", name ? name : "");
    if (strcmp(col, "owner") == 0)
        return xstrdup(owner ? owner : "");
    if (strcmp(col, "name") == 0)
        return xstrdup(name ? name : "");
    if (strcmp(col, "id") == 0)
        return xstrdup(json_string_value(json_object_get(w, "id")));
    if (strcmp(col, "status") == 0) {
        const char *st = json_string_value(json_object_get(b, "status"));
        return xstrdup(st && strcmp(st, "running") == 0 ? "Started" : st ? st : "");
    }
    if (strcmp(col, "healthy") == 0)
        return xstrdup(json_is_true(json_object_get(json_object_get(w, "health"), "healthy"))
                           ? "true"
                           : "false");
    if (strcmp(col, "last built") == 0)
        return since(json_string_value(json_object_get(b, "created_at")));
    if (strcmp(col, "last used") == 0)
        return since(json_string_value(json_object_get(w, "last_used_at")));
    if (strcmp(col, "outdated") == 0 || strcmp(col, "favorite") == 0)
        return xstrdup("false");
    if (strcmp(col, "organization name") == 0)
        return xstrdup(json_string_value(json_object_get(w, "organization_name")));
    if (strcmp(col, "organization id") == 0)
        return xstrdup(json_string_value(json_object_get(w, "organization_id")));
    if (strcmp(col, "daily cost") == 0)
        return xstrdup("0");
    return xstrdup(""); /* template, versions, schedules: none here */
}

int
cmd_list(int argc, char **argv)
{
    char *output = NULL;
    struct conf_strv cols = {0};
    bool all = false;
    char *search = NULL;
    const struct conf_opt opts[] = {
        {.flag = "all",
         .shorthand = 'a',
         .type = CONF_BOOL,
         .dest = &all,
         .help = "Specifies whether all workspaces will be listed or not."},
        {.flag = "search",
         .type = CONF_STRING,
         .def = "owner:me",
         .dest = &search,
         .help = "Search for a workspace with a query."},
        {.flag = "output",
         .shorthand = 'o',
         .type = CONF_ENUM,
         .enum_values = list_formats,
         .def = "table",
         .dest = &output,
         .help = "Output format."},
        {.flag = "column",
         .shorthand = 'c',
         .type = CONF_STRING_ARRAY,
         .dest = &cols,
         .help = "Columns to display in table output."},
    };
    struct cli c = {0};
    int r =
        cli_parse(&c, "coder list [flags]", "List workspaces", opts, ARRAY_LEN(opts), argc, argv);
    if (r <= 0) {
        cli_fini(&c);
        return r < 0;
    }
    int rc = 1;
    json_t *resp = NULL;
    char **names = NULL;
    int n = cli_parse_columns(&cols,
                              "workspace,template,status,healthy,last built,current version,"
                              "outdated,starts at,stops after",
                              list_columns, &names);
    if (n < 0 || cli_require_session(&c) < 0)
        goto out;
    char *q = url_escape_query(all ? "" : search);
    char *path = xasprintf("/api/v2/workspaces?q=%s", q);
    free(q);
    int api = cli_api(&c, "GET", path, NULL, &resp, NULL);
    free(path);
    if (api < 0)
        goto out;
    json_t *ws = json_object_get(resp, "workspaces");
    if (strcmp(output, "json") == 0) {
        cli_print_json(ws);
        rc = 0;
        goto out;
    }
    if (json_array_size(ws) == 0) {
        /* Coder's words, its prompt style's "> " included. */
        fprintf(stderr, "> No workspaces found! Create one:\n\n  coder create <name>\n\n");
        rc = 0;
        goto out;
    }
    struct cli_table t;
    cli_table_init(&t, (const char *const *)names, (size_t)n);
    size_t i;
    json_t *w;
    json_array_foreach(ws, i, w)
    {
        char **cells = xcalloc((size_t)n, sizeof(char *));
        for (int k = 0; k < n; k++)
            cells[k] = workspace_cell(w, names[k]);
        cli_table_add(&t, (const char *const *)cells);
        cli_columns_free(cells, n);
    }
    cli_table_print(&t);
    cli_table_fini(&t);
    rc = 0;
out:
    if (n > 0)
        cli_columns_free(names, n);
    json_decref(resp);
    cli_fini(&c);
    return rc;
}

/* ---- delete ---- */

/* Finds a workspace by "owner/name", "name" or UUID; prints the error and returns NULL. */
static json_t *
fetch_workspace(struct cli *c, const char *arg)
{
    char *path;
    if (strlen(arg) == 36 && arg[8] == '-' && arg[13] == '-') {
        path = xasprintf("/api/v2/workspaces/%s", arg);
    } else {
        char *owner, *name;
        split_full_name(arg, &owner, &name);
        path = xasprintf("/api/v2/users/%s/workspace/%s", owner, name);
        free(owner);
        free(name);
    }
    json_t *w = NULL;
    int rc = cli_api(c, "GET", path, NULL, &w, NULL);
    free(path);
    return rc < 0 ? NULL : w;
}

int
cmd_delete(int argc, char **argv)
{
    bool yes = false;
    const struct conf_opt opts[] = {CLI_OPT_YES(&yes)};
    struct cli c = {0};
    int r = cli_parse(&c, "coder delete [flags] <workspace>", "Delete a workspace", opts,
                      ARRAY_LEN(opts), argc, argv);
    if (r <= 0) {
        cli_fini(&c);
        return r < 0;
    }
    int rc = 1;
    json_t *w = NULL, *resp = NULL;
    if (c.res.nargs != 1) {
        rc = cli_fail("wanted 1 argument (<workspace>), got %zu", c.res.nargs);
        goto out;
    }
    if (cli_require_session(&c) < 0 || (w = fetch_workspace(&c, c.res.args[0])) == NULL)
        goto out;
    const char *owner = json_string_value(json_object_get(w, "owner_name"));
    const char *name = json_string_value(json_object_get(w, "name"));
    const char *used = json_string_value(json_object_get(w, "last_used_at"));
    int64_t used_ms = 0;
    if (used && time_parse_rfc3339(used, &used_ms) < 0)
        used_ms = 0;
    double days = used_ms > 0 ? (double)(time_now_ms() - used_ms) / 86400000.0 : 0;
    fprintf(stderr, "%s/%s was last used %.0f days ago\n", owner, name, days < 0 ? 0 : days);
    if (cli_confirm(yes, "Confirm delete workspace?", "no") != 0)
        goto out;
    char *path =
        xasprintf("/api/v2/workspaces/%s/builds", json_string_value(json_object_get(w, "id")));
    json_t *body = json_pack("{s:s}", "transition", "delete");
    int api = cli_api(&c, "POST", path, body, &resp, NULL);
    json_decref(body);
    free(path);
    if (api < 0)
        goto out;
    char when[64];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(when, sizeof(when), "%b %e %H:%M:%S", &tm); /* Go's time.Stamp */
    printf("\n%s/%s has been deleted at %s!\n", owner, name, when);
    rc = 0;
out:
    json_decref(w);
    json_decref(resp);
    cli_fini(&c);
    return rc;
}
