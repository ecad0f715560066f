/* The option table at work: defaults, then the YAML file, then the environment, then flags,
 * each layer overwriting what the one below set. Values are checked as they are applied, so an
 * error names the layer it came from (flag, variable or file key). */
#include "conf/conf.h"
#include "base/buf.h"
#include "base/timeutil.h"
#include "base/util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define CONF_MAX_VALUE (64 * 1024)
#define CONF_MAX_ENTRIES 1024
#define CONF_MAX_FILE (1024 * 1024)
#define HELP_WIDTH 80

enum source { SRC_DEFAULT, SRC_YAML, SRC_ENV, SRC_FLAG };

static const char *const source_names[] = {"default", "yaml", "env", "flag"};

/* Where each option's value came from, per parsed table (a command parses once). */
struct sources {
    const struct conf_opt *opts;
    enum source *src;
    struct sources *next;
};

static struct sources *all_sources;

static enum source *
sources_for(const struct conf_cmd *cmd, bool create)
{
    for (struct sources *s = all_sources; s; s = s->next) {
        if (s->opts == cmd->opts)
            return s->src;
    }
    if (!create)
        return NULL;
    struct sources *s = xcalloc(1, sizeof(*s));
    s->opts = cmd->opts;
    s->src = xcalloc(cmd->nopts ? cmd->nopts : 1, sizeof(*s->src));
    s->next = all_sources;
    all_sources = s;
    return s->src;
}

static void
sources_drop(const struct conf_cmd *cmd)
{
    for (struct sources **p = &all_sources; *p; p = &(*p)->next) {
        if ((*p)->opts == cmd->opts) {
            struct sources *s = *p;
            *p = s->next;
            free(s->src);
            free(s);
            return;
        }
    }
}

/* How an error names where a value came from. */
struct origin {
    enum source src;
    const char *file; /* for SRC_YAML */
};

static char *
origin_name(const struct conf_opt *o, const struct origin *from)
{
    switch (from->src) {
    case SRC_FLAG:
        return xasprintf("flag --%s", o->flag);
    case SRC_ENV:
        return xasprintf("$%s", o->env);
    case SRC_YAML:
        return xasprintf("%s in config file \"%s\"", o->yaml, from->file);
    default:
        return xasprintf("default of --%s", o->flag);
    }
}

static void
strv_clear(struct conf_strv *v)
{
    for (size_t i = 0; i < v->n; i++)
        free(v->v[i]);
    free(v->v);
    v->v = NULL;
    v->n = 0;
}

static bool
enum_has(const char *const *values, const char *s)
{
    for (size_t i = 0; values[i]; i++) {
        if (strcmp(values[i], s) == 0)
            return true;
    }
    return false;
}

static char *
enum_list(const char *const *values, const char *sep)
{
    struct buf b;
    buf_init(&b);
    for (size_t i = 0; values[i]; i++)
        buf_printf(&b, "%s%s", i ? sep : "", values[i]);
    return buf_steal(&b);
}

/* Go's strconv.ParseBool. */
static int
parse_bool(const char *s, bool *out)
{
    static const char *const t[] = {"1", "t", "T", "TRUE", "true", "True", NULL};
    static const char *const f[] = {"0", "f", "F", "FALSE", "false", "False", NULL};
    if (enum_has(t, s))
        *out = true;
    else if (enum_has(f, s))
        *out = false;
    else
        return -1;
    return 0;
}

static int
parse_int(const char *s, int64_t *out)
{
    if (*s == '\0')
        return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

static int
check_member(const struct conf_opt *o, const char *v, const struct origin *from, char **err)
{
    if (!o->enum_values || enum_has(o->enum_values, v))
        return 0;
    char *where = origin_name(o, from);
    char *list = enum_list(o->enum_values, ", ");
    *err = xasprintf("invalid value \"%s\" for %s: must be one of: %s", v, where, list);
    free(where);
    free(list);
    return -1;
}

/* Adds the comma-separated members of s (or s whole when split is false) to v. */
static int
strv_add(const struct conf_opt *o, struct conf_strv *v, const char *s, bool split,
         const struct origin *from, char **err)
{
    const char *p = s;
    for (;;) {
        const char *comma = split ? strchr(p, ',') : NULL;
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (v->n >= CONF_MAX_ENTRIES) {
            char *where = origin_name(o, from);
            *err = xasprintf("too many values for %s (at most %d)", where, CONF_MAX_ENTRIES);
            free(where);
            return -1;
        }
        char *raw = xstrndup(p, len);
        char *item = split ? str_trim_dup(raw) : xstrdup(raw);
        free(raw);
        if (*item == '\0' && split) {
            free(item);
        } else {
            if (check_member(o, item, from, err) < 0) {
                free(item);
                return -1;
            }
            v->v = xrealloc(v->v, (v->n + 1) * sizeof(*v->v));
            v->v[v->n++] = item;
        }
        if (!comma)
            return 0;
        p = comma + 1;
    }
}

/* Applies text to an option's destination. For string arrays, append adds to the values the
 * same layer already set (a repeated flag) instead of replacing them. */
static int
set_value(const struct conf_opt *o, const char *text, const struct origin *from, bool append,
          char **err)
{
    if (strlen(text) > CONF_MAX_VALUE) {
        char *where = origin_name(o, from);
        *err = xasprintf("value for %s is too long (at most %d bytes)", where, CONF_MAX_VALUE);
        free(where);
        return -1;
    }
    const char *why = NULL;
    switch (o->type) {
    case CONF_STRING:
        str_replace((char **)o->dest, *text ? text : NULL);
        return 0;
    case CONF_ENUM:
        if (check_member(o, text, from, err) < 0)
            return -1;
        str_replace((char **)o->dest, text);
        return 0;
    case CONF_BOOL:
        if (parse_bool(text, (bool *)o->dest) == 0)
            return 0;
        why = "must be true or false";
        break;
    case CONF_INT:
        if (parse_int(text, (int64_t *)o->dest) == 0)
            return 0;
        why = "must be an integer";
        break;
    case CONF_DURATION:
        if (duration_parse(text, (int64_t *)o->dest) == 0)
            return 0;
        why = "must be a duration such as \"30s\", \"5m\" or \"1h30m\"";
        break;
    case CONF_STRING_ARRAY: {
        struct conf_strv *v = o->dest;
        if (!append)
            strv_clear(v);
        return strv_add(o, v, text, !o->whole, from, err);
    }
    }
    char *where = origin_name(o, from);
    *err = xasprintf("invalid value \"%s\" for %s: %s", text, where, why);
    free(where);
    return -1;
}

static const struct conf_opt *
find_long(const struct conf_cmd *cmd, const char *name, size_t len, size_t *idx)
{
    for (size_t i = 0; i < cmd->nopts; i++) {
        const char *f = cmd->opts[i].flag;
        if (f && strlen(f) == len && memcmp(f, name, len) == 0) {
            *idx = i;
            return &cmd->opts[i];
        }
    }
    return NULL;
}

static const struct conf_opt *
find_short(const struct conf_cmd *cmd, char c, size_t *idx)
{
    for (size_t i = 0; i < cmd->nopts; i++) {
        if (cmd->opts[i].shorthand == c) {
            *idx = i;
            return &cmd->opts[i];
        }
    }
    return NULL;
}

/* One flag occurrence from the command line, applied after the lower layers. */
struct flagval {
    size_t idx;
    const char *value; /* borrowed from argv, or a literal */
};

struct scan {
    struct flagval *flags;
    size_t nflags;
};

static void
scan_add(struct scan *s, size_t idx, const char *value)
{
    s->flags = xrealloc(s->flags, (s->nflags + 1) * sizeof(*s->flags));
    s->flags[s->nflags++] = (struct flagval){idx, value};
}

/* Splits argv into flag occurrences and positional arguments (pflag's grammar: --name=value,
 * --name value, -x value, -xvalue; booleans take a value only after '='). */
static int
scan_args(const struct conf_cmd *cmd, int argc, char **argv, struct scan *s,
          struct conf_result *res, char **err)
{
    res->args = xcalloc((size_t)argc + 1, sizeof(*res->args));
    bool only_args = false;
    for (int i = 0; i < argc; i++) {
        char *a = argv[i];
        if (only_args || a[0] != '-' || a[1] == '\0') {
            res->args[res->nargs++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_args = true;
            continue;
        }
        const struct conf_opt *o;
        size_t idx;
        const char *value = NULL;
        char *shown;
        if (a[1] == '-') {
            const char *name = a + 2;
            const char *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            o = find_long(cmd, name, len, &idx);
            if (!o) {
                if (len == 4 && memcmp(name, "help", 4) == 0) {
                    res->help = true;
                    continue;
                }
                if (cmd->yaml_config && len == 12 && memcmp(name, "write-config", 12) == 0) {
                    res->write_config = true;
                    continue;
                }
                *err = xasprintf("unknown flag: --%.*s", (int)len, name);
                return -1;
            }
            if (eq)
                value = eq + 1;
            shown = xasprintf("--%s", o->flag);
        } else {
            o = find_short(cmd, a[1], &idx);
            if (!o) {
                if (a[1] == 'h' && a[2] == '\0') {
                    res->help = true;
                    continue;
                }
                *err = xasprintf("unknown shorthand flag: '%c' in %s", a[1], a);
                return -1;
            }
            if (a[2] == '=')
                value = a + 3;
            else if (a[2] != '\0')
                value = a + 2;
            shown = xasprintf("-%c", o->shorthand);
        }
        if (!value) {
            if (o->type == CONF_BOOL) {
                value = "true";
            } else if (i + 1 < argc) {
                value = argv[++i];
            } else {
                *err = xasprintf("flag needs an argument: %s", shown);
                free(shown);
                return -1;
            }
        }
        free(shown);
        scan_add(s, idx, value);
    }
    return 0;
}

static void
set_default(const struct conf_opt *o)
{
    switch (o->type) {
    case CONF_STRING:
    case CONF_ENUM:
        *(char **)o->dest = o->def && *o->def ? xstrdup(o->def) : NULL;
        break;
    case CONF_BOOL:
        *(bool *)o->dest = false;
        if (o->def)
            parse_bool(o->def, (bool *)o->dest);
        break;
    case CONF_INT:
        *(int64_t *)o->dest = 0;
        if (o->def)
            parse_int(o->def, (int64_t *)o->dest);
        break;
    case CONF_DURATION:
        *(int64_t *)o->dest = 0;
        if (o->def)
            duration_parse(o->def, (int64_t *)o->dest);
        break;
    case CONF_STRING_ARRAY: {
        struct conf_strv *v = o->dest;
        v->v = NULL;
        v->n = 0;
        if (o->def && *o->def) {
            char *ignored = NULL;
            struct origin from = {SRC_DEFAULT, NULL};
            if (strv_add(o, v, o->def, true, &from, &ignored) < 0)
                free(ignored);
        }
        break;
    }
    }
}

/* --- YAML file ---------------------------------------------------------------------------- */

static yaml_node_t *
yaml_lookup(yaml_document_t *doc, yaml_node_t *node, const char *path)
{
    while (node && *path) {
        if (node->type != YAML_MAPPING_NODE)
            return NULL;
        const char *dot = strchr(path, '.');
        size_t len = dot ? (size_t)(dot - path) : strlen(path);
        yaml_node_t *next = NULL;
        for (yaml_node_pair_t *p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top;
             p++) {
            yaml_node_t *k = yaml_document_get_node(doc, p->key);
            if (k && k->type == YAML_SCALAR_NODE && k->data.scalar.length == len &&
                memcmp(k->data.scalar.value, path, len) == 0) {
                next = yaml_document_get_node(doc, p->value);
            }
        }
        node = next;
        path = dot ? dot + 1 : "";
    }
    return node;
}

static bool
yaml_is_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *v = (const char *)n->data.scalar.value;
    return *v == '\0' || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 || strcmp(v, "Null") == 0 ||
           strcmp(v, "NULL") == 0;
}

static int
yaml_apply(const struct conf_opt *o, yaml_document_t *doc, yaml_node_t *n,
           const struct origin *from, char **err)
{
    if (yaml_is_null(n))
        return 0; /* an empty key keeps the default */
    if (n->type == YAML_SCALAR_NODE) {
        if (memchr(n->data.scalar.value, '\0', n->data.scalar.length)) {
            char *where = origin_name(o, from);
            *err = xasprintf("invalid value for %s: contains a NUL byte", where);
            free(where);
            return -1;
        }
        return set_value(o, (const char *)n->data.scalar.value, from, false, err);
    }
    if (n->type == YAML_SEQUENCE_NODE && o->type == CONF_STRING_ARRAY) {
        struct conf_strv *v = o->dest;
        strv_clear(v);
        for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
             it++) {
            yaml_node_t *item = yaml_document_get_node(doc, *it);
            if (!item || item->type != YAML_SCALAR_NODE) {
                char *where = origin_name(o, from);
                *err = xasprintf("invalid value for %s: list items must be strings", where);
                free(where);
                return -1;
            }
            const char *s = (const char *)item->data.scalar.value;
            if (strlen(s) > CONF_MAX_VALUE) {
                char *where = origin_name(o, from);
                *err =
                    xasprintf("value for %s is too long (at most %d bytes)", where, CONF_MAX_VALUE);
                free(where);
                return -1;
            }
            if (strv_add(o, v, s, false, from, err) < 0)
                return -1;
        }
        return 0;
    }
    char *where = origin_name(o, from);
    *err = xasprintf("invalid value for %s: must be %s", where,
                     o->type == CONF_STRING_ARRAY ? "a string or a list of strings" : "a scalar");
    free(where);
    return -1;
}

/* What a dotted YAML key names: an option (1), a group of options (2), or nothing (0). */
static int
yaml_key_kind(const struct conf_cmd *cmd, const char *key)
{
    size_t len = strlen(key);
    int kind = 0;
    for (size_t i = 0; i < cmd->nopts; i++) {
        const char *y = cmd->opts[i].yaml;
        if (y && strcmp(y, key) == 0)
            return 1;
        if (y && strncmp(y, key, len) == 0 && y[len] == '.')
            kind = 2;
    }
    return kind;
}

/* The error for the first key under mapping node n (at dotted path prefix) that is neither an
 * option nor a group of options, as Coder's serpent refuses them: a misspelt key must not be
 * ignored. The walk descends only into groups, so its depth is that of the option names. */
static char *
yaml_unknown_key(const struct conf_cmd *cmd, yaml_document_t *doc, yaml_node_t *n,
                 const char *prefix, const char *file)
{
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key);
        yaml_node_t *v = yaml_document_get_node(doc, p->value);
        if (!k || !v)
            continue;
        const char *dot = *prefix ? "." : "";
        char *key = k->type == YAML_SCALAR_NODE
                        ? xasprintf("%s%s%.*s", prefix, dot, (int)k->data.scalar.length,
                                    (const char *)k->data.scalar.value)
                        : xasprintf("%s%s(a %s key)", prefix, dot,
                                    k->type == YAML_MAPPING_NODE ? "mapping" : "list");
        int kind = k->type == YAML_SCALAR_NODE ? yaml_key_kind(cmd, key) : 0;
        char *e = NULL;
        if (kind == 0)
            e = xasprintf("config file \"%s\": unknown option \"%s\"", file, key);
        else if (kind == 2 && v->type == YAML_MAPPING_NODE)
            e = yaml_unknown_key(cmd, doc, v, key, file);
        else if (kind == 2 && !yaml_is_null(v)) /* an empty group is no error */
            e = xasprintf("invalid value for %s in config file \"%s\": must be a mapping of "
                          "options",
                          key, file);
        free(key);
        if (e)
            return e;
    }
    return NULL;
}

static int
load_yaml(const struct conf_cmd *cmd, const char *path, enum source *src, char **err)
{
    char *data;
    size_t len;
    int rc = file_read_all(path, CONF_MAX_FILE, &data, &len);
    if (rc == -EFBIG) {
        *err = xasprintf("config file \"%s\" is larger than %d bytes", path, CONF_MAX_FILE);
        return -1;
    }
    if (rc < 0) {
        *err = xasprintf("read config file \"%s\": %s", path, strerror(-rc));
        return -1;
    }
    yaml_parser_t parser;
    yaml_document_t doc;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_string(&parser, (const unsigned char *)data, len);
    if (!yaml_parser_load(&parser, &doc)) {
        *err = xasprintf("parse config file \"%s\": %s at line %zu column %zu", path,
                         parser.problem ? parser.problem : "invalid YAML",
                         parser.problem_mark.line + 1, parser.problem_mark.column + 1);
        yaml_parser_delete(&parser);
        free(data);
        return -1;
    }
    rc = 0;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root && !yaml_is_null(root) && root->type != YAML_MAPPING_NODE) {
        *err =
            xasprintf("parse config file \"%s\": the document must be a mapping of options", path);
        rc = -1;
    }
    char *unknown = rc == 0 && root && root->type == YAML_MAPPING_NODE
                        ? yaml_unknown_key(cmd, &doc, root, "", path)
                        : NULL;
    if (unknown) {
        *err = unknown;
        rc = -1;
    }
    struct origin from = {SRC_YAML, path};
    for (size_t i = 0; rc == 0 && root && root->type == YAML_MAPPING_NODE && i < cmd->nopts; i++) {
        const struct conf_opt *o = &cmd->opts[i];
        if (!o->yaml)
            continue;
        yaml_node_t *n = yaml_lookup(&doc, root, o->yaml);
        if (!n)
            continue;
        if (yaml_apply(o, &doc, n, &from, err) < 0)
            rc = -1;
        else
            src[i] = SRC_YAML;
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    free(data);
    return rc;
}

/* --- parse -------------------------------------------------------------------------------- */

int
conf_parse(const struct conf_cmd *cmd, int argc, char **argv, struct conf_result *res, char **err)
{
    memset(res, 0, sizeof(*res));
    *err = NULL;
    enum source *src = sources_for(cmd, true);
    struct scan s = {0};
    int rc = -1;
    for (size_t i = 0; i < cmd->nopts; i++) {
        set_default(&cmd->opts[i]);
        src[i] = SRC_DEFAULT;
    }
    if (scan_args(cmd, argc, argv, &s, res, err) < 0)
        goto out;
    if (res->help)
        goto ok;

    /* The config file's name comes from the layers above it. */
    size_t cfg_idx;
    if (cmd->yaml_config && find_long(cmd, "config", 6, &cfg_idx)) {
        const struct conf_opt *co = &cmd->opts[cfg_idx];
        const char *path = NULL;
        for (size_t i = 0; i < s.nflags; i++) {
            if (s.flags[i].idx == cfg_idx)
                path = s.flags[i].value;
        }
        if (!path && co->env)
            path = getenv(co->env);
        if (!path)
            path = co->def;
        if (path && *path) {
            if (load_yaml(cmd, path, src, err) < 0)
                goto out;
            /* Coder's words for it (CODER-COMPAT part 2 §2). */
            fprintf(stderr, "YAML support is experimental and offers no compatibility "
                            "guarantees.\n");
        }
    }

    for (size_t i = 0; i < cmd->nopts; i++) {
        const struct conf_opt *o = &cmd->opts[i];
        const char *v = o->env ? getenv(o->env) : NULL;
        if (!v)
            continue;
        if (*v == '\0' && o->type != CONF_STRING && o->type != CONF_STRING_ARRAY)
            continue; /* an empty variable is "not set" for typed options */
        struct origin from = {SRC_ENV, NULL};
        if (set_value(o, v, &from, false, err) < 0)
            goto out;
        src[i] = SRC_ENV;
    }

    for (size_t i = 0; i < s.nflags; i++) {
        size_t idx = s.flags[i].idx;
        const struct conf_opt *o = &cmd->opts[idx];
        struct origin from = {SRC_FLAG, NULL};
        bool again = src[idx] == SRC_FLAG;
        if (set_value(o, s.flags[i].value, &from, again, err) < 0)
            goto out;
        src[idx] = SRC_FLAG;
    }
ok:
    rc = 0;
out:
    free(s.flags);
    return rc;
}

void
conf_free_values(const struct conf_cmd *cmd, struct conf_result *res)
{
    for (size_t i = 0; i < cmd->nopts; i++) {
        const struct conf_opt *o = &cmd->opts[i];
        switch (o->type) {
        case CONF_STRING:
        case CONF_ENUM:
            free(*(char **)o->dest);
            *(char **)o->dest = NULL;
            break;
        case CONF_STRING_ARRAY:
            strv_clear(o->dest);
            break;
        default:
            break;
        }
    }
    sources_drop(cmd);
    if (res) {
        free(res->args);
        memset(res, 0, sizeof(*res));
    }
}

bool
conf_print_requested(const struct conf_cmd *cmd, const struct conf_result *res)
{
    if (!res->help && !res->write_config)
        return false;
    char *s = res->help ? conf_help(cmd) : conf_write_yaml(cmd);
    fputs(s, stdout);
    free(s);
    return true;
}

const char *
conf_source(const struct conf_cmd *cmd, const char *flag)
{
    enum source *src = sources_for(cmd, false);
    size_t idx;
    if (!src || !find_long(cmd, flag, strlen(flag), &idx))
        return NULL;
    return source_names[src[idx]];
}

/* --- help --------------------------------------------------------------------------------- */

static void
wrap(struct buf *b, const char *text, int indent, int width)
{
    const char *p = text;
    while (*p) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        buf_printf(b, "%*s", indent, "");
        int col = indent;
        bool first = true;
        while (*p && *p != '\n') {
            const char *w = p;
            while (*p && *p != ' ' && *p != '\n')
                p++;
            int wl = (int)(p - w);
            if (!first && col + 1 + wl > width) {
                p = w; /* the word starts the next line */
                break;
            }
            if (!first) {
                buf_putc(b, ' ');
                col++;
            }
            buf_append(b, w, (size_t)wl);
            col += wl;
            first = false;
            while (*p == ' ')
                p++;
        }
        if (*p == '\n')
            p++;
        buf_putc(b, '\n');
    }
}

static const char *
type_name(const struct conf_opt *o, char **owned)
{
    *owned = NULL;
    if (o->type_label)
        return o->type_label;
    switch (o->type) {
    case CONF_STRING:
        return "string";
    case CONF_BOOL:
        return "bool";
    case CONF_INT:
        return "int";
    case CONF_DURATION:
        return "duration";
    case CONF_STRING_ARRAY:
        if (o->enum_values) {
            char *l = enum_list(o->enum_values, "|");
            *owned = xasprintf("[%s]", l);
            free(l);
            return *owned;
        }
        return "string-array";
    case CONF_ENUM:
        return *owned = enum_list(o->enum_values, "|");
    }
    return "";
}

static void
help_option(struct buf *b, const struct conf_opt *o)
{
    if (o->shorthand)
        buf_printf(b, "  -%c, --%s", o->shorthand, o->flag);
    else
        buf_printf(b, "      --%s", o->flag);
    char *owned;
    const char *t = type_name(o, &owned);
    buf_printf(b, " %s", t);
    free(owned);
    if (o->env)
        buf_printf(b, ", $%s", o->env);
    if (o->def && *o->def)
        buf_printf(b, " (default: %s)", o->def);
    buf_putc(b, '\n');
    if (o->help)
        wrap(b, o->help, 10, HELP_WIDTH);
    buf_putc(b, '\n');
}

static int
cmp_opt(const void *a, const void *b)
{
    const struct conf_opt *x = *(const struct conf_opt *const *)a;
    const struct conf_opt *y = *(const struct conf_opt *const *)b;
    return strcmp(x->flag, y->flag);
}

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* --write-config is parsed here rather than declared by each command; it is listed beside
 * the option that names the config file, as Coder's help does. */
static const struct conf_opt write_config_opt = {
    .flag = "write-config",
    .type = CONF_BOOL,
    .help = "Write out the current server config as YAML to stdout.",
};

static bool
in_group(const struct conf_opt *o, const char *group)
{
    return group ? o->group && strcmp(o->group, group) == 0 : o->group == NULL;
}

static void
help_group(struct buf *b, const struct conf_cmd *cmd, const char *group)
{
    const struct conf_opt **list = xcalloc(cmd->nopts + 2, sizeof(*list));
    size_t n = 0;
    for (size_t i = 0; i < cmd->nopts; i++) {
        const struct conf_opt *o = &cmd->opts[i];
        if (cmd->yaml_config && o->flag && strcmp(o->flag, "config") == 0 && in_group(o, group))
            list[n++] = &write_config_opt;
        if (o->hidden || !o->flag)
            continue;
        if (in_group(o, group))
            list[n++] = o;
    }
    if (n) {
        qsort(list, n, sizeof(*list), cmp_opt);
        char *title = xstrdup(group ? group : "");
        for (char *p = title; *p; p++) {
            if (*p >= 'a' && *p <= 'z')
                *p = (char)(*p - 'a' + 'A');
        }
        buf_printf(b, "%s%sOPTIONS:\n", title, group ? " " : "");
        free(title);
        if (group && strcmp(group, "Global") == 0)
            buf_puts(b, "Global options are applied to all commands. They can be set using "
                        "environment variables or flags.\n\n");
        for (size_t i = 0; i < n; i++)
            help_option(b, list[i]);
    }
    free(list);
}

char *
conf_help(const struct conf_cmd *cmd)
{
    struct buf b;
    buf_init(&b);
    buf_printf(&b, "coder %s\n\nUSAGE:\n  %s\n\n", CODER_VERSION, cmd->usage);
    if (cmd->short_desc)
        buf_printf(&b, "  %s\n\n", cmd->short_desc);
    help_group(&b, cmd, NULL);
    /* Named groups in alphabetical order, "Global" last as Coder prints it. */
    const char **groups = xcalloc(cmd->nopts + 1, sizeof(*groups));
    size_t ng = 0;
    for (size_t i = 0; i < cmd->nopts; i++) {
        const char *g = cmd->opts[i].group;
        if (!g || strcmp(g, "Global") == 0)
            continue;
        bool seen = false;
        for (size_t j = 0; j < ng && !seen; j++)
            seen = strcmp(groups[j], g) == 0;
        if (!seen)
            groups[ng++] = g;
    }
    qsort(groups, ng, sizeof(*groups), cmp_str);
    for (size_t i = 0; i < ng; i++)
        help_group(&b, cmd, groups[i]);
    free(groups);
    help_group(&b, cmd, "Global");
    /* One trailing newline, not a blank line. */
    while (b.len >= 2 && b.data[b.len - 1] == '\n' && b.data[b.len - 2] == '\n')
        b.data[--b.len] = '\0';
    return buf_steal(&b);
}

/* --- write-config ------------------------------------------------------------------------- */

static void
yaml_value(struct buf *b, const struct conf_opt *o, int indent)
{
    char tmp[64];
    switch (o->type) {
    case CONF_STRING:
    case CONF_ENUM: {
        const char *s = *(char **)o->dest;
        buf_putc(b, ' ');
        buf_put_json_string(b, s ? s : "");
        buf_putc(b, '\n');
        break;
    }
    case CONF_BOOL:
        buf_printf(b, " %s\n", *(bool *)o->dest ? "true" : "false");
        break;
    case CONF_INT:
        buf_printf(b, " %" PRId64 "\n", *(int64_t *)o->dest);
        break;
    case CONF_DURATION:
        duration_format(*(int64_t *)o->dest, tmp, sizeof(tmp));
        buf_printf(b, " %s\n", tmp);
        break;
    case CONF_STRING_ARRAY: {
        const struct conf_strv *v = o->dest;
        if (v->n == 0) {
            buf_puts(b, " []\n");
            break;
        }
        buf_putc(b, '\n');
        for (size_t i = 0; i < v->n; i++) {
            buf_printf(b, "%*s- ", indent, "");
            buf_put_json_string(b, v->v[i]);
            buf_putc(b, '\n');
        }
        break;
    }
    }
}

/* The segment of path at depth d (length in *len), or NULL when the path is shorter. */
static const char *
segment(const char *path, int d, size_t *len)
{
    const char *p = path;
    for (int i = 0; i < d; i++) {
        p = strchr(p, '.');
        if (!p)
            return NULL;
        p++;
    }
    const char *dot = strchr(p, '.');
    *len = dot ? (size_t)(dot - p) : strlen(p);
    return p;
}

static bool
same_prefix(const char *a, const char *b, int d)
{
    for (int i = 0; i <= d; i++) {
        size_t la, lb;
        const char *sa = segment(a, i, &la), *sb = segment(b, i, &lb);
        if (!sa || !sb || la != lb || memcmp(sa, sb, la) != 0)
            return false;
    }
    return true;
}

/* Writes the keys under the mapping that options[idx..] share at depth d, in the order in
 * which the table first names them. */
static void
yaml_level(struct buf *b, const struct conf_cmd *cmd, const char *prefix_of, int d)
{
    bool *done = xcalloc(cmd->nopts + 1, sizeof(*done));
    for (size_t i = 0; i < cmd->nopts; i++) {
        const struct conf_opt *o = &cmd->opts[i];
        if (!o->yaml || done[i] || (prefix_of && !same_prefix(o->yaml, prefix_of, d - 1)))
            continue;
        size_t len;
        const char *seg = segment(o->yaml, d, &len);
        if (!seg)
            continue;
        bool leaf = seg[len] == '\0';
        if (leaf) {
            if (o->help) {
                struct buf c;
                buf_init(&c);
                wrap(&c, o->help, 0, HELP_WIDTH - 2 * d - 2);
                for (char *line = c.data; line && *line;) {
                    char *nl = strchr(line, '\n');
                    buf_printf(b, "%*s# %.*s\n", 2 * d, "", (int)(nl - line), line);
                    line = nl + 1;
                }
                buf_fini(&c);
            }
            buf_printf(b, "%*s%.*s:", 2 * d, "", (int)len, seg);
            yaml_value(b, o, 2 * d);
            done[i] = true;
            continue;
        }
        buf_printf(b, "%*s%.*s:\n", 2 * d, "", (int)len, seg);
        yaml_level(b, cmd, o->yaml, d + 1);
        for (size_t j = i; j < cmd->nopts; j++) {
            if (cmd->opts[j].yaml && same_prefix(cmd->opts[j].yaml, o->yaml, d))
                done[j] = true;
        }
    }
    free(done);
}

char *
conf_write_yaml(const struct conf_cmd *cmd)
{
    struct buf b;
    buf_init(&b);
    yaml_level(&b, cmd, NULL, 0);
    return buf_steal(&b);
}
