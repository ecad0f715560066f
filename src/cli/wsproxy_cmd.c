/* `coder wsproxy create|ls|edit|delete|regenerate-token`: proxy administration for Owners. */
#include "base/util.h"
#include "cli.h"
#include "commands.h"

#include <stdio.h>
#include <string.h>

static const char *const output_formats[] = {"text", "json", "table", NULL};
static const char *const ls_formats[] = {"table", "json", "text", NULL};

/* Table columns of a WorkspaceProxy (Coder's table tags), as -c names them; the update
 * responses of create and regenerate-token add "proxy token". */
#define PROXY_COLUMNS                                                                              \
    "id", "name", "display name", "icon url", "healthy", "url", "wildcard hostname",               \
        "derp enabled", "derp only", "proxy status", "proxy report", "proxy checked at",           \
        "created at", "updated at", "deleted", "version"
static const char *const proxy_columns[] = {PROXY_COLUMNS, NULL};
static const char *const update_columns[] = {PROXY_COLUMNS, "proxy token", NULL};

/* -c, --column: which of known to show, def when not given (Coder's table formatter). */
#define COLUMN_OPT(ptr, known, def_)                                                               \
    {                                                                                              \
        .flag = "column", .shorthand = 'c', .type = CONF_STRING_ARRAY, .enum_values = (known),     \
        .def = (def_), .dest = (ptr), .help = "Columns to display in table output."                \
    }

static char *
json_cell(json_t *v)
{
    if (v == NULL || json_is_null(v))
        return xstrdup("");
    if (json_is_string(v))
        return xstrdup(json_string_value(v));
    if (json_is_true(v))
        return xstrdup("true");
    if (json_is_false(v))
        return xstrdup("false");
    return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
}

static char *
proxy_cell(json_t *px, const char *token, const char *col)
{
    json_t *status = json_object_get(px, "status");
    if (strcmp(col, "proxy token") == 0)
        return xstrdup(token ? token : "");
    if (strcmp(col, "url") == 0)
        return json_cell(json_object_get(px, "path_app_url"));
    if (strcmp(col, "icon url") == 0)
        return json_cell(json_object_get(px, "icon_url"));
    if (strcmp(col, "proxy status") == 0)
        return json_cell(json_object_get(status, "status"));
    if (strcmp(col, "proxy report") == 0)
        return json_cell(json_object_get(status, "report"));
    if (strcmp(col, "proxy checked at") == 0)
        return json_cell(json_object_get(status, "checked_at"));
    char key[64];
    snprintf(key, sizeof(key), "%s", col);
    for (char *p = key; *p; p++)
        if (*p == ' ')
            *p = '_';
    return json_cell(json_object_get(px, key));
}

/* Prints proxies (array of WorkspaceProxy, each optionally with a token) as a table. */
static int
print_table(json_t *proxies, const char *token, const struct conf_strv *cols,
            const char *const *known)
{
    char **names = NULL;
    int n = cli_parse_columns(cols, "", known, &names);
    if (n < 0)
        return 1;
    struct cli_table t;
    cli_table_init(&t, (const char *const *)names, (size_t)n);
    size_t i;
    json_t *px;
    json_array_foreach(proxies, i, px)
    {
        char **cells = xcalloc((size_t)n, sizeof(char *));
        for (int k = 0; k < n; k++)
            cells[k] = proxy_cell(px, token, names[k]);
        cli_table_add(&t, (const char *const *)cells);
        for (int k = 0; k < n; k++)
            free(cells[k]);
        free(cells);
    }
    cli_table_print(&t);
    cli_table_fini(&t);
    for (int k = 0; k < n; k++)
        free(names[k]);
    free(names);
    return 0;
}

struct update_opts {
    char *name, *display_name, *icon;
    bool no_prompt, only_token, yes;
    char *output;
    struct conf_strv columns;
};

static void
print_start_command(struct cli *c, const char *token)
{
    printf("\nStart the proxy by running:\n");
    printf("CODER_PROXY_SESSION_TOKEN=%s coder wsproxy server --primary-access-url %s "
           "--http-address=0.0.0.0:3001\n",
           token, c->url);
}

/* Output of create and regenerate-token: the update response in the chosen format. */
static int
print_update(struct cli *c, struct update_opts *o, json_t *resp, bool created)
{
    const char *token = json_string_value(json_object_get(resp, "proxy_token"));
    json_t *px = json_object_get(resp, "proxy");
    const char *name = json_string_value(json_object_get(px, "name"));
    if (o->only_token) {
        printf("%s\n", token ? token : "");
        return 0;
    }
    if (strcmp(o->output, "json") == 0) {
        cli_print_json(resp);
        return 0;
    }
    if (strcmp(o->output, "table") == 0) {
        json_t *arr = json_pack("[O]", px);
        int rc = print_table(arr, token, &o->columns, update_columns);
        json_decref(arr);
        return rc;
    }
    if (created) {
        printf("Workspace Proxy \"%s\" created successfully. Save this token, it will not be "
               "shown again.\n",
               name);
        printf("Token: %s\n", token);
    } else {
        printf("Workspace Proxy \"%s\" updated successfully.\n", name);
        printf("—————————————————————————————————————————————————\n");
        printf("Save this authentication token, it will not be shown again.\n");
        printf("Token: %s\n", token);
    }
    print_start_command(c, token);
    return 0;
}

#define BAD_ICON "icon must be a relative path to an emoji or a publicly hosted image URL"

static bool
icon_ok(const char *icon)
{
    return str_has_prefix(icon, "/emojis/") || str_has_prefix(icon, "http");
}

static const char *
check_icon(const char *answer, void *arg)
{
    (void)arg;
    return icon_ok(answer) ? NULL : BAD_ICON;
}

static bool
empty(const char *s)
{
    return s == NULL || *s == '\0';
}

/* Coder's create prompts for what the flags left out (unless --no-prompt); the answers may
 * come from a pipe as well as from a terminal. */
static int
ask_missing(struct update_opts *o)
{
    if (empty(o->name) && cli_prompt_set(&o->name, "Proxy Name:", NULL, false, NULL) < 0)
        return -1;
    if (empty(o->display_name) &&
        cli_prompt_set(&o->display_name, "Display Name:", o->name, false, NULL) < 0)
        return -1;
    if (empty(o->icon) &&
        cli_prompt_set(&o->icon, "Icon URL:", "/emojis/1f5fa.png", false, check_icon) < 0)
        return -1;
    return 0;
}

int
cmd_wsproxy_create(int argc, char **argv)
{
    struct update_opts o = {0};
    const struct conf_opt opts[] = {
        {.flag = "name",
         .type = CONF_STRING,
         .dest = &o.name,
         .help = "Name of the proxy. This is used to identify the proxy."},
        {.flag = "display-name",
         .type = CONF_STRING,
         .dest = &o.display_name,
         .help = "Display name of the proxy. If omitted, the name is reused as the display name."},
        {.flag = "icon",
         .type = CONF_STRING,
         .dest = &o.icon,
         .help = "Display icon of the proxy."},
        {.flag = "no-prompt",
         .type = CONF_BOOL,
         .dest = &o.no_prompt,
         .help = "Disable all input prompting, and fail if any required flags are missing."},
        {.flag = "only-token",
         .type = CONF_BOOL,
         .dest = &o.only_token,
         .help = "Only print the token. This is useful for scripting."},
        {.flag = "output",
         .shorthand = 'o',
         .type = CONF_ENUM,
         .enum_values = output_formats,
         .def = "text",
         .dest = &o.output,
         .help = "Output format."},
        COLUMN_OPT(&o.columns, update_columns, "name,url,proxy token"),
    };
    struct cli c = {0};
    int r = cli_parse(&c, "coder wsproxy create [flags]", "Create a workspace proxy", opts,
                      ARRAY_LEN(opts), argc, argv);
    if (r <= 0) {
        cli_fini(&c);
        return r < 0;
    }
    int rc = 1;
    json_t *resp = NULL;
    /* Coder checks --icon as the flag is parsed, before anything else. */
    if (o.icon && *o.icon && !icon_ok(o.icon)) {
        cli_fail("%s", BAD_ICON);
        goto out;
    }
    if (cli_require_session(&c) < 0 || (!o.no_prompt && ask_missing(&o) < 0))
        goto out;
    if (o.name == NULL || *o.name == '\0') {
        cli_fail("proxy name is required");
        goto out;
    }
    json_t *body = json_pack("{s:s, s:s, s:s}", "name", o.name, "display_name",
                             o.display_name && *o.display_name ? o.display_name : o.name, "icon",
                             o.icon ? o.icon : "");
    int api = cli_api(&c, "POST", "/api/v2/workspaceproxies", body, &resp, NULL);
    json_decref(body);
    if (api < 0)
        goto out;
    rc = print_update(&c, &o, resp, true);
out:
    json_decref(resp);
    cli_fini(&c);
    return rc;
}

static int
print_text_list(json_t *regions)
{
    printf("Workspace Proxies:\n");
    size_t i;
    json_t *px;
    json_array_foreach(regions, i, px)
    {
        json_t *status = json_object_get(px, "status");
        json_t *report = json_object_get(status, "report");
        printf("%zu: %s %s %s", i, json_string_value(json_object_get(px, "name")),
               json_string_value(json_object_get(px, "path_app_url")),
               json_string_value(json_object_get(status, "status")));
        size_t k;
        json_t *m;
        json_array_foreach(json_object_get(report, "errors"), k, m)
            printf("\n\tErr: %s", json_string_value(m));
        json_array_foreach(json_object_get(report, "warnings"), k, m)
            printf("\n\tWarn: %s", json_string_value(m));
        printf("\n");
    }
    return 0;
}

int
cmd_wsproxy_ls(int argc, char **argv)
{
    struct update_opts o = {0};
    const struct conf_opt opts[] = {
        {.flag = "output",
         .shorthand = 'o',
         .type = CONF_ENUM,
         .enum_values = ls_formats,
         .def = "table",
         .dest = &o.output,
         .help = "Output format."},
        COLUMN_OPT(&o.columns, proxy_columns, "name,url,proxy status"),
    };
    struct cli c = {0};
    int r = cli_parse(&c, "coder wsproxy ls [flags]", "List all workspace proxies", opts,
                      ARRAY_LEN(opts), argc, argv);
    if (r <= 0) {
        cli_fini(&c);
        return r < 0;
    }
    int rc = 1;
    json_t *resp = NULL;
    if (cli_require_session(&c) < 0 ||
        cli_api(&c, "GET", "/api/v2/workspaceproxies", NULL, &resp, NULL) < 0)
        goto out;
    json_t *regions = json_object_get(resp, "regions");
    if (strcmp(o.output, "json") == 0) {
        cli_print_json(regions);
        rc = 0;
    } else if (strcmp(o.output, "text") == 0) {
        rc = print_text_list(regions);
    } else {
        rc = print_table(regions, NULL, &o.columns, proxy_columns);
    }
out:
    json_decref(resp);
    cli_fini(&c);
    return rc;
}

/* Fetches a proxy by name or id; prints the error and returns NULL if it fails. */
static json_t *
fetch_proxy(struct cli *c, const char *arg)
{
    char *path = xasprintf("/api/v2/workspaceproxies/%s", arg);
    json_t *px = NULL;
    int rc = cli_api(c, "GET", path, NULL, &px, NULL);
    free(path);
    return rc < 0 ? NULL : px;
}

static int
one_arg(struct cli *c, const char *usage)
{
    if (c->res.nargs != 1)
        return cli_fail("wanted 1 argument (%s), got %zu", usage, c->res.nargs);
    for (const char *p = c->res.args[0]; *p; p++) {
        if (*p == '/' || *p == '?' || *p == '#' || *p == '%' || (unsigned char)*p < 0x20)
            return cli_fail("invalid workspace proxy name or id \"%s\"", c->res.args[0]);
    }
    return 0;
}

int
cmd_wsproxy_edit(int argc, char **argv)
{
    struct update_opts o = {0};
    const struct conf_opt opts[] = {
        {.flag = "name",
         .type = CONF_STRING,
         .dest = &o.name,
         .help = "(Optional) Name of the proxy. This is used to identify the proxy."},
        {.flag = "display-name",
         .type = CONF_STRING,
         .dest = &o.display_name,
         .help =
             "(Optional) Display name of the proxy. A more human friendly name to be displayed."},
        {.flag = "icon",
         .type = CONF_STRING,
         .dest = &o.icon,
         .help = "(Optional) Display icon of the proxy."},
        {.flag = "output",
         .shorthand = 'o',
         .type = CONF_ENUM,
         .enum_values = output_formats,
         .def = "text",
         .dest = &o.output,
         .help = "Output format."},
        COLUMN_OPT(&o.columns, proxy_columns, "name,url"),
    };
    struct cli c = {0};
    int r = cli_parse(&c, "coder wsproxy edit [flags] <name|id>", "Edit a workspace proxy", opts,
                      ARRAY_LEN(opts), argc, argv);
    if (r <= 0) {
        cli_fini(&c);
        return r < 0;
    }
    int rc = 1;
    json_t *px = NULL, *resp = NULL;
    if (one_arg(&c, "<name|id>") != 0 || cli_require_session(&c) < 0)
        goto out;
    if (!o.name && !o.display_name && !o.icon) {
        rc = cli_fail("specify at least one field to update");
        goto out;
    }
    if (o.icon && *o.icon && !icon_ok(o.icon)) {
        rc = cli_fail("%s", BAD_ICON);
        goto out;
    }
    if ((px = fetch_proxy(&c, c.res.args[0])) == NULL)
        goto out;
    const char *id = json_string_value(json_object_get(px, "id"));
    json_t *body = json_pack(
        "{s:s, s:s, s:s, s:s}", "id", id, "name",
        o.name ? o.name : json_string_value(json_object_get(px, "name")), "display_name",
        o.display_name ? o.display_name : json_string_value(json_object_get(px, "display_name")),
        "icon", o.icon ? o.icon : json_string_value(json_object_get(px, "icon_url")));
    char *path = xasprintf("/api/v2/workspaceproxies/%s", id);
    int api = cli_api(&c, "PATCH", path, body, &resp, NULL);
    free(path);
    json_decref(body);
    if (api < 0)
        goto out;
    json_t *upd = json_object_get(resp, "proxy");
    if (strcmp(o.output, "json") == 0) {
        cli_print_json(upd);
        rc = 0;
    } else if (strcmp(o.output, "table") == 0) {
        json_t *arr = json_pack("[O]", upd);
        rc = print_table(arr, NULL, &o.columns, proxy_columns);
        json_decref(arr);
    } else {
        printf("Workspace Proxy \"%s\" updated successfully.\n",
               json_string_value(json_object_get(upd, "name")));
        rc = 0;
    }
out:
    json_decref(px);
    json_decref(resp);
    cli_fini(&c);
    return rc;
}

int
cmd_wsproxy_delete(int argc, char **argv)
{
    struct update_opts o = {0};
    const struct conf_opt opts[] = {
        CLI_OPT_YES(&o.yes),
    };
    struct cli c = {0};
    int r = cli_parse(&c, "coder wsproxy delete [flags] <name|id>", "Delete a workspace proxy",
                      opts, ARRAY_LEN(opts), argc, argv);
    if (r <= 0) {
        cli_fini(&c);
        return r < 0;
    }
    int rc = 1;
    json_t *px = NULL, *resp = NULL;
    if (one_arg(&c, "<name|id>") != 0 || cli_require_session(&c) < 0)
        goto out;
    if ((px = fetch_proxy(&c, c.res.args[0])) == NULL)
        goto out;
    char *q = xasprintf("Delete this workspace proxy: %s?",
                        json_string_value(json_object_get(px, "display_name")));
    int confirmed = cli_confirm(o.yes, q, "no");
    free(q);
    if (confirmed != 0)
        goto out;
    char *path =
        xasprintf("/api/v2/workspaceproxies/%s", json_string_value(json_object_get(px, "id")));
    int api = cli_api(&c, "DELETE", path, NULL, &resp, NULL);
    free(path);
    if (api < 0)
        goto out;
    printf("Workspace proxy \"%s\" deleted successfully\n", c.res.args[0]);
    rc = 0;
out:
    json_decref(px);
    json_decref(resp);
    cli_fini(&c);
    return rc;
}

int
cmd_wsproxy_regenerate_token(int argc, char **argv)
{
    struct update_opts o = {0};
    const struct conf_opt opts[] = {
        {.flag = "only-token",
         .type = CONF_BOOL,
         .dest = &o.only_token,
         .help = "Only print the token. This is useful for scripting."},
        {.flag = "output",
         .shorthand = 'o',
         .type = CONF_ENUM,
         .enum_values = output_formats,
         .def = "text",
         .dest = &o.output,
         .help = "Output format."},
        COLUMN_OPT(&o.columns, update_columns, "name,url,proxy token"),
    };
    struct cli c = {0};
    int r = cli_parse(&c, "coder wsproxy regenerate-token [flags] <name|id>",
                      "Regenerate a workspace proxy authentication token. This will invalidate "
                      "the existing authentication token.",
                      opts, ARRAY_LEN(opts), argc, argv);
    if (r <= 0) {
        cli_fini(&c);
        return r < 0;
    }
    int rc = 1;
    json_t *px = NULL, *resp = NULL;
    if (one_arg(&c, "<name|id>") != 0 || cli_require_session(&c) < 0)
        goto out;
    if ((px = fetch_proxy(&c, c.res.args[0])) == NULL)
        goto out;
    const char *id = json_string_value(json_object_get(px, "id"));
    json_t *body =
        json_pack("{s:s, s:O, s:O, s:O, s:b}", "id", id, "name", json_object_get(px, "name"),
                  "display_name", json_object_get(px, "display_name"), "icon",
                  json_object_get(px, "icon_url"), "regenerate_token", 1);
    char *path = xasprintf("/api/v2/workspaceproxies/%s", id);
    int api = cli_api(&c, "PATCH", path, body, &resp, NULL);
    free(path);
    json_decref(body);
    if (api < 0)
        goto out;
    rc = print_update(&c, &o, resp, false);
out:
    json_decref(px);
    json_decref(resp);
    cli_fini(&c);
    return rc;
}
