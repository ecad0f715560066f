#include "http/headers.h"
#include "base/buf.h"
#include "base/util.h"

#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/wait.h>

#define MAX_HEADERS 64
#define MAX_COMMAND_OUTPUT (64 * 1024)

static int
add_kv(char ***v, size_t *n, const char *line, char **err)
{
    const char *eq = strchr(line, '=');
    if (eq == NULL || eq == line) {
        *err = xasprintf("split header \"%s\" had less than two parts", line);
        return -1;
    }
    for (const char *p = line; *p; p++) {
        if (*p == '\r' || *p == '\n') {
            *err = xstrdup("header values must not contain line breaks");
            return -1;
        }
    }
    if (*n + 1 >= MAX_HEADERS) {
        *err = xasprintf("too many headers (limit %d)", MAX_HEADERS);
        return -1;
    }
    *v = xrealloc(*v, (*n + 2) * sizeof(char *));
    (*v)[(*n)++] = xasprintf("%.*s: %s", (int)(eq - line), line, eq + 1);
    (*v)[*n] = NULL;
    return 0;
}

int
headers_build(const struct conf_strv *kv, const char *command, char ***out, char **err)
{
    char **v = xcalloc(1, sizeof(char *));
    size_t n = 0;
    for (size_t i = 0; kv && i < kv->n; i++) {
        if (add_kv(&v, &n, kv->v[i], err) < 0)
            goto fail;
    }
    if (command && *command) {
        FILE *f = popen(command, "r");
        if (f == NULL) {
            *err = xasprintf("failed to run header command \"%s\"", command);
            goto fail;
        }
        struct buf b;
        buf_init(&b);
        char chunk[4096];
        size_t r;
        while ((r = fread(chunk, 1, sizeof(chunk), f)) > 0 && b.len < MAX_COMMAND_OUTPUT)
            buf_append(&b, chunk, r);
        int status = pclose(f);
        if (status != 0 || b.len >= MAX_COMMAND_OUTPUT) {
            *err = xasprintf("failed to run header command \"%s\": exit status %d", command,
                             WIFEXITED(status) ? WEXITSTATUS(status) : -1);
            buf_fini(&b);
            goto fail;
        }
        char *save = NULL;
        for (char *line = strtok_r(b.data ? b.data : "", "\n", &save); line;
             line = strtok_r(NULL, "\n", &save)) {
            char *t = str_trim_dup(line);
            int rc = *t ? add_kv(&v, &n, t, err) : 0;
            free(t);
            if (rc < 0) {
                buf_fini(&b);
                goto fail;
            }
        }
        buf_fini(&b);
    }
    *out = v;
    return 0;
fail:
    headers_free(v);
    return -1;
}

void
headers_free(char **h)
{
    for (size_t i = 0; h && h[i]; i++)
        free(h[i]);
    free(h);
}

char **
headers_concat(char *const *a, const char *const *extra)
{
    size_t na = 0, ne = 0;
    while (a && a[na])
        na++;
    while (extra && extra[ne])
        ne++;
    char **v = xcalloc(na + ne + 1, sizeof(char *));
    for (size_t i = 0; i < na; i++)
        v[i] = xstrdup(a[i]);
    for (size_t i = 0; i < ne; i++)
        v[na + i] = xstrdup(extra[i]);
    return v;
}
