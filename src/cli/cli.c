#include "cli.h"
#include "base/util.h"
#include "http/client.h"
#include "http/headers.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

int
cli_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = xvasprintf(fmt, ap);
    va_end(ap);
    /* One line, always: fold any line breaks a server message carried. */
    for (char *p = msg; *p; p++) {
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    }
    fprintf(stderr, "error: %s\n", msg);
    free(msg);
    return 1;
}

int
cli_parse(struct cli *c, const char *usage, const char *desc, const struct conf_opt *opts,
          size_t nopts, int argc, char **argv)
{
    size_t n;
    char *err = NULL;
    c->all = global_opts_append(opts, nopts, &c->g, &n);
    c->cmd = (struct conf_cmd){.usage = usage, .short_desc = desc, .opts = c->all, .nopts = n};
    if (conf_parse(&c->cmd, argc, argv, &c->res, &err) < 0) {
        cli_fail("%s", err);
        free(err);
        return -1;
    }
    if (conf_print_requested(&c->cmd, &c->res))
        return 0;
    c->config_dir = global_config_dir(&c->g);
    if (headers_build(&c->g.headers, c->g.header_command, &c->headers, &err) < 0) {
        cli_fail("%s", err);
        free(err);
        return -1;
    }
    return 1;
}

void
cli_fini(struct cli *c)
{
    conf_free_values(&c->cmd, &c->res);
    free(c->all);
    free(c->config_dir);
    free(c->url);
    free(c->token);
    headers_free(c->headers);
}

char *
cli_config_read(struct cli *c, const char *name)
{
    char *path = xasprintf("%s/%s", c->config_dir, name);
    char *data = NULL;
    int rc = file_read_all(path, 64 * 1024, &data, NULL);
    free(path);
    if (rc < 0)
        return NULL;
    char *t = str_trim_dup(data);
    free(data);
    if (*t == '\0') {
        free(t);
        return NULL;
    }
    return t;
}

int
cli_config_write(struct cli *c, const char *name, const char *value)
{
    if (dir_make_all(c->config_dir, 0750) < 0)
        return -1;
    char *path = xasprintf("%s/%s", c->config_dir, name);
    int rc = file_write_atomic(path, value, strlen(value), 0600);
    free(path);
    return rc;
}

void
cli_config_remove(struct cli *c, const char *name)
{
    char *path = xasprintf("%s/%s", c->config_dir, name);
    unlink(path);
    free(path);
}

static char *
trim_url(const char *u)
{
    char *s = xstrdup(u);
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '/')
        s[--n] = '\0';
    return s;
}

int
cli_require_session(struct cli *c)
{
    if (c->url == NULL) {
        if (c->g.url && *c->g.url)
            c->url = trim_url(c->g.url);
        else {
            char *u = cli_config_read(c, "url");
            if (u) {
                c->url = trim_url(u);
                free(u);
            }
        }
    }
    if (c->token == NULL) {
        if (c->g.token && *c->g.token)
            c->token = xstrdup(c->g.token);
        else
            c->token = cli_config_read(c, "session");
    }
    if (c->url == NULL || c->token == NULL) {
        cli_fail("You are not logged in. Try logging in using 'coder login <url>'.");
        return -1;
    }
    return 0;
}

int
cli_api_raw(struct cli *c, const char *method, const char *path, json_t *body, json_t **out,
            long *status, char **err, bool *is_coder)
{
    char *url = xasprintf("%s%s", c->url, path);
    char *payload = body ? json_dumps(body, JSON_COMPACT) : NULL;
    char *tok = c->token ? xasprintf("Coder-Session-Token: %s", c->token) : NULL;
    const char *mine[] = {"Accept: application/json", "User-Agent: coder-cli/" CODER_VERSION,
                          payload ? "Content-Type: application/json" : NULL, NULL, NULL};
    if (tok)
        mine[payload ? 3 : 2] = tok;
    char **hdrs = headers_concat((char *const *)mine, (const char *const *)c->headers);
    struct http_client_req req = {.method = method,
                                  .url = url,
                                  .headers = (const char *const *)hdrs,
                                  .body = payload,
                                  .body_len = payload ? strlen(payload) : 0,
                                  .timeout_ms = 30000};
    struct http_client_resp resp;
    http_client_resp_init(&resp);
    int rc = http_client_do(&req, &resp);
    *out = NULL;
    if (rc < 0) {
        *err = xstrdup(resp.error ? resp.error : "request failed");
    } else {
        *status = resp.status;
        if (is_coder)
            *is_coder = http_client_resp_header(&resp, "X-Coder-Build-Version") != NULL;
        if (resp.body.len)
            *out = json_loadb(resp.body.data, resp.body.len, 0, NULL);
    }
    http_client_resp_fini(&resp);
    headers_free(hdrs);
    free(tok);
    free(payload);
    free(url);
    return rc;
}

int
cli_api(struct cli *c, const char *method, const char *path, json_t *body, json_t **out,
        long *status)
{
    char *err = NULL;
    long st = 0;
    json_t *j = NULL;
    if (cli_api_raw(c, method, path, body, &j, &st, &err, NULL) < 0) {
        cli_fail("%s", err);
        free(err);
        return -1;
    }
    if (st >= 200 && st < 300) {
        *out = j;
        if (status)
            *status = st;
        return 0;
    }
    char *msg = cli_api_error(st, j);
    cli_fail("%s", msg);
    free(msg);
    json_decref(j);
    return -1;
}

/* Starts the next part of a one-line message: what came before is closed with a full stop
 * unless it ends with punctuation already. */
static void
next_part(struct buf *b)
{
    if (b->len == 0)
        return;
    if (!strchr(".!?:", b->data[b->len - 1]))
        buf_putc(b, '.');
    buf_putc(b, ' ');
}

char *
cli_api_error(long status, json_t *body)
{
    const char *msg = json_string_value(json_object_get(body, "message"));
    const char *detail = json_string_value(json_object_get(body, "detail"));
    json_t *vals = json_object_get(body, "validations");
    /* A 401 carries codersdk's helper, and then Coder leaves the detail out. */
    const char *helper = status == 401 ? "Try logging in using 'coder login'." : NULL;
    struct buf b;
    buf_init(&b);
    if (msg && *msg)
        buf_puts(&b, msg);
    else
        buf_printf(&b, "unexpected status code %ld, response has no message", status);
    size_t nvals = json_array_size(vals);
    if (nvals) {
        next_part(&b);
        buf_printf(&b, "%zu validation error(s) found:", nvals);
        size_t i;
        json_t *v;
        json_array_foreach(vals, i, v)
        {
            const char *field = json_string_value(json_object_get(v, "field"));
            const char *why = json_string_value(json_object_get(v, "detail"));
            buf_printf(&b, "%s %s: %s", i ? ";" : "", field ? field : "", why ? why : "");
        }
    }
    if (helper || (detail && *detail)) {
        next_part(&b);
        if (helper)
            buf_printf(&b, "Suggestion: %s", helper);
        else
            buf_puts(&b, detail);
    }
    return buf_steal(&b);
}

bool
cli_stdin_is_tty(const struct cli *c)
{
    return c->g.force_tty || isatty(STDIN_FILENO);
}

/* Reads one line from stdin; returns it trimmed (new string), or NULL at end of input. Bytes
 * past the buffer on an over-long line are dropped. */
static char *
read_answer(bool secret)
{
    struct termios old, quiet;
    bool tty = isatty(STDIN_FILENO);
    bool hidden = secret && tty && tcgetattr(STDIN_FILENO, &old) == 0;
    if (hidden) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
    }
    char line[1024];
    char *got = fgets(line, sizeof(line), stdin);
    if (got && !strchr(line, '\n')) {
        int ch;
        while ((ch = getchar()) != EOF && ch != '\n')
            ;
    }
    if (hidden)
        tcsetattr(STDIN_FILENO, TCSANOW, &old);
    /* A terminal echoes the Enter that ends the answer. Without one (piped stdin, hidden
     * input, end of input) end the prompt's line here, so what follows starts on its own
     * line; Coder leaves it glued to the prompt. */
    if (!tty || hidden || !got)
        fputc('\n', stdout);
    fflush(stdout);
    return got ? str_trim_dup(line) : NULL;
}

char *
cli_prompt(const char *question, const char *def, bool secret)
{
    if (def && *def)
        printf("> %s (%s) ", question, def);
    else
        printf("> %s ", question);
    fflush(stdout);
    char *t = read_answer(secret);
    if (t && *t == '\0' && def) {
        free(t);
        return xstrdup(def);
    }
    return t;
}

char *
cli_prompt_checked(const char *question, const char *def, bool secret, cli_prompt_check check,
                   void *arg)
{
    for (;;) {
        char *a = cli_prompt(question, def, secret);
        if (a == NULL)
            return NULL;
        const char *why = check(a, arg);
        if (why == NULL)
            return a;
        printf("%s\n", why);
        free(a);
    }
}

void
cli_table_init(struct cli_table *t, const char *const *head, size_t ncols)
{
    memset(t, 0, sizeof(*t));
    t->ncols = ncols;
    t->head = xcalloc(ncols, sizeof(char *));
    for (size_t i = 0; i < ncols; i++) {
        t->head[i] = str_lower(xstrdup(head[i]));
        for (char *p = t->head[i]; *p; p++)
            *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
    }
}

void
cli_table_add(struct cli_table *t, const char *const *cells)
{
    t->rows = xrealloc(t->rows, (t->nrows + 1) * sizeof(*t->rows));
    char **row = xcalloc(t->ncols, sizeof(char *));
    for (size_t i = 0; i < t->ncols; i++)
        row[i] = xstrdup(cells[i] ? cells[i] : "");
    t->rows[t->nrows++] = row;
}

static void
print_row(char *const *cells, const size_t *width, size_t ncols)
{
    struct buf b;
    buf_init(&b);
    for (size_t i = 0; i < ncols; i++) {
        buf_puts(&b, cells[i]);
        if (i + 1 < ncols)
            buf_printf(&b, "%*s", (int)(width[i] - strlen(cells[i]) + 2), "");
    }
    while (b.len > 0 && b.data[b.len - 1] == ' ')
        b.data[--b.len] = '\0';
    printf("%s\n", b.data ? b.data : "");
    buf_fini(&b);
}

void
cli_table_print(const struct cli_table *t)
{
    size_t *width = xcalloc(t->ncols, sizeof(size_t));
    for (size_t i = 0; i < t->ncols; i++) {
        width[i] = strlen(t->head[i]);
        for (size_t r = 0; r < t->nrows; r++) {
            size_t n = strlen(t->rows[r][i]);
            if (n > width[i])
                width[i] = n;
        }
    }
    print_row(t->head, width, t->ncols);
    for (size_t r = 0; r < t->nrows; r++)
        print_row(t->rows[r], width, t->ncols);
    free(width);
}

void
cli_table_fini(struct cli_table *t)
{
    for (size_t r = 0; r < t->nrows; r++) {
        for (size_t i = 0; i < t->ncols; i++)
            free(t->rows[r][i]);
        free(t->rows[r]);
    }
    free(t->rows);
    for (size_t i = 0; i < t->ncols; i++)
        free(t->head[i]);
    free(t->head);
}

void
cli_print_json(json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    printf("%s\n", s ? s : "null");
    free(s);
}

int
cli_parse_columns(const struct conf_strv *cols, const char *def, const char *const *known_cols,
                  char ***out)
{
    char *joined = NULL;
    struct buf b;
    buf_init(&b);
    for (size_t i = 0; i < cols->n; i++) {
        if (b.len)
            buf_putc(&b, ',');
        buf_puts(&b, cols->v[i]);
    }
    joined = b.len ? buf_steal(&b) : xstrdup(def);
    buf_fini(&b);
    char **v = NULL;
    int n = 0;
    char *save = NULL;
    for (char *t = strtok_r(joined, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char *col = str_lower(str_trim_dup(t));
        bool known = false;
        for (size_t i = 0; known_cols[i]; i++)
            known |= strcmp(known_cols[i], col) == 0;
        if (!known) {
            cli_fail("unknown column \"%s\"", col);
            free(col);
            for (int i = 0; i < n; i++)
                free(v[i]);
            free(v);
            free(joined);
            return -1;
        }
        v = xrealloc(v, (size_t)(n + 1) * sizeof(char *));
        v[n++] = col;
    }
    free(joined);
    *out = v;
    return n;
}

void
cli_columns_free(char **v, int n)
{
    for (int i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

int
cli_prompt_set(char **dest, const char *question, const char *def, bool secret,
               cli_prompt_check check)
{
    char *v = check ? cli_prompt_checked(question, def, secret, check, NULL)
                    : cli_prompt(question, def, secret);
    if (v == NULL) {
        cli_fail("no answer to \"%s\": end of input", question);
        return -1;
    }
    free(*dest);
    *dest = v;
    return 0;
}

int
cli_ask_yes(const char *question, const char *def)
{
    /* Coder's cliui.Prompt with IsConfirm: "(yes/no)" after the question, and an empty
     * answer takes the default. */
    char *q = xasprintf("%s (yes/no)", question);
    char *a = cli_prompt(q, NULL, false);
    free(q);
    if (a == NULL)
        return -1;
    const char *answer = *a ? a : def;
    int yes = str_eq_ci(answer, "yes") || str_eq_ci(answer, "y");
    free(a);
    return yes;
}

int
cli_confirm(bool yes, const char *question, const char *def)
{
    if (yes)
        return 0;
    switch (cli_ask_yes(question, def)) {
    case 1:
        return 0;
    case 0:
        return cli_fail("canceled");
    default:
        return cli_fail("canceled: no answer on standard input (pass --yes to skip the prompt)");
    }
}
