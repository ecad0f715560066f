/* The registry, its series tables and the text exposition renderer. */
#include "metrics/metrics.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/log.h"
#include "base/util.h"

enum metrics_type { METRICS_COUNTER, METRICS_GAUGE, METRICS_HISTOGRAM };

struct metrics_series {
    struct metrics_series *hnext;
    uint64_t hash;
    char **values;
    double value; /* counter or gauge */
    double sum;   /* histogram */
    uint64_t count;
    uint64_t *counts; /* per bucket, not cumulative; the last one is +Inf */
};

struct metrics_family {
    struct metrics_registry *reg;
    enum metrics_type type;
    char *name;
    char *help;
    size_t nlabels;
    char **labelnames;
    size_t *order; /* label indexes sorted by name: the order labels are rendered in */
    double *bounds;
    size_t nbounds;
    metrics_value_fn fn;
    void *fn_arg;
    struct metrics_series **slots;
    size_t nslots;
    size_t nseries;
    size_t max_series;
};

struct metrics_registry {
    pthread_mutex_t mu;
    struct metrics_family **fams;
    size_t nfams;
    size_t capfams;
    struct metrics_family *dropped;
};

/* client_golang's DefBuckets, used when a histogram is created without bounds. */
static const double default_buckets[] = {.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10};

static bool
name_valid(const char *s, bool label)
{
    if (s == NULL || *s == '\0')
        return false;
    if (label && s[0] == '_' && s[1] == '_')
        return false; /* reserved for Prometheus itself */
    for (size_t i = 0; s[i]; i++) {
        char c = s[i];
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        bool ok = alpha || (i > 0 && c >= '0' && c <= '9') || (!label && c == ':');
        if (!ok)
            return false;
    }
    return true;
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 if it is not valid. Rejects
 * overlong forms, surrogates and code points above U+10FFFF. */
static size_t
utf8_seq_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

static bool
utf8_valid(const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        size_t l = utf8_seq_len((const unsigned char *)s + i, n - i);
        if (l == 0)
            return false;
        i += l;
    }
    return true;
}

/* The exposition format requires UTF-8 and peers may send anything, so invalid bytes become
 * U+FFFD rather than breaking the whole scrape. */
static char *
utf8_sanitize(const char *s)
{
    struct buf b;
    size_t n = strlen(s);
    buf_init(&b);
    for (size_t i = 0; i < n;) {
        size_t l = utf8_seq_len((const unsigned char *)s + i, n - i);
        if (l == 0) {
            buf_puts(&b, "\xef\xbf\xbd");
            i++;
        } else {
            buf_append(&b, s + i, l);
            i += l;
        }
    }
    return buf_steal(&b);
}

static uint64_t
values_hash(const char *const *values, size_t n)
{
    uint64_t h = 14695981039346656037ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        for (const unsigned char *p = (const unsigned char *)values[i]; *p; p++) {
            h ^= *p;
            h *= 1099511628211ULL;
        }
        h ^= 0xff; /* never inside valid UTF-8, so ("a","b") and ("ab","") differ */
        h *= 1099511628211ULL;
    }
    return h;
}

static bool
values_equal(char *const *a, const char *const *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(a[i], b[i]) != 0)
            return false;
    }
    return true;
}

static void
series_free(struct metrics_series *s, size_t nlabels)
{
    for (size_t i = 0; i < nlabels; i++)
        free(s->values[i]);
    free(s->values);
    free(s->counts);
    free(s);
}

static void
family_free(struct metrics_family *f)
{
    for (size_t i = 0; i < f->nslots; i++) {
        struct metrics_series *s = f->slots[i], *next;
        for (; s; s = next) {
            next = s->hnext;
            series_free(s, f->nlabels);
        }
    }
    for (size_t i = 0; i < f->nlabels; i++)
        free(f->labelnames[i]);
    free(f->labelnames);
    free(f->order);
    free(f->bounds);
    free(f->slots);
    free(f->name);
    free(f->help);
    free(f);
}

static void
family_grow(struct metrics_family *f)
{
    size_t n = f->nslots ? f->nslots * 2 : 16;
    struct metrics_series **slots = xcalloc(n, sizeof(*slots));
    for (size_t i = 0; i < f->nslots; i++) {
        struct metrics_series *s = f->slots[i], *next;
        for (; s; s = next) {
            next = s->hnext;
            s->hnext = slots[s->hash & (n - 1)];
            slots[s->hash & (n - 1)] = s;
        }
    }
    free(f->slots);
    f->slots = slots;
    f->nslots = n;
}

enum { OP_COUNTER_ADD, OP_GAUGE_SET, OP_GAUGE_ADD, OP_OBSERVE };

static int family_update_locked(struct metrics_family *f, const char *const *labelvalues, int op,
                                double v);

static void
dropped_count_locked(struct metrics_family *f)
{
    struct metrics_registry *reg = f->reg;
    if (reg->dropped == NULL || f == reg->dropped)
        return;
    const char *labels[] = {f->name};
    family_update_locked(reg->dropped, labels, OP_COUNTER_ADD, 1);
}

/* Finds the series for labelvalues, creating it when create is set. Returns NULL when it does
 * not exist (and create is off) or must be dropped (*err set). */
static struct metrics_series *
series_lookup_locked(struct metrics_family *f, const char *const *labelvalues, bool create,
                     int *err)
{
    const char *vals[METRICS_MAX_LABELS];
    char *fixed[METRICS_MAX_LABELS] = {0};
    struct metrics_series *s = NULL;
    *err = 0;
    for (size_t i = 0; i < f->nlabels; i++) {
        const char *v = labelvalues && labelvalues[i] ? labelvalues[i] : "";
        if (strnlen(v, METRICS_MAX_LABEL_VALUE + 1) > METRICS_MAX_LABEL_VALUE) {
            *err = -ENOSPC;
            goto out;
        }
        if (!utf8_valid(v))
            v = fixed[i] = utf8_sanitize(v);
        vals[i] = v;
    }
    uint64_t h = values_hash(vals, f->nlabels);
    if (f->nslots > 0) {
        for (s = f->slots[h & (f->nslots - 1)]; s; s = s->hnext) {
            if (s->hash == h && values_equal(s->values, vals, f->nlabels))
                goto out;
        }
    }
    if (!create) {
        *err = -ENOENT;
        goto out;
    }
    if (f->nseries >= f->max_series) {
        *err = -ENOSPC;
        goto out;
    }
    if (f->nseries * 4 >= f->nslots * 3)
        family_grow(f);
    s = xcalloc(1, sizeof(*s));
    s->hash = h;
    s->values = xcalloc(f->nlabels ? f->nlabels : 1, sizeof(char *));
    for (size_t i = 0; i < f->nlabels; i++)
        s->values[i] = xstrdup(vals[i]);
    if (f->type == METRICS_HISTOGRAM)
        s->counts = xcalloc(f->nbounds + 1, sizeof(uint64_t));
    s->hnext = f->slots[h & (f->nslots - 1)];
    f->slots[h & (f->nslots - 1)] = s;
    f->nseries++;
out:
    for (size_t i = 0; i < f->nlabels; i++)
        free(fixed[i]);
    return s;
}

static int
family_update_locked(struct metrics_family *f, const char *const *labelvalues, int op, double v)
{
    static const enum metrics_type want[] = {
        [OP_COUNTER_ADD] = METRICS_COUNTER,
        [OP_GAUGE_SET] = METRICS_GAUGE,
        [OP_GAUGE_ADD] = METRICS_GAUGE,
        [OP_OBSERVE] = METRICS_HISTOGRAM,
    };
    int err;
    if (f->type != want[op] || f->fn != NULL)
        return -EINVAL;
    if (op == OP_COUNTER_ADD && !(v >= 0))
        return -EINVAL; /* counters only go up; NaN is refused too */
    struct metrics_series *s = series_lookup_locked(f, labelvalues, true, &err);
    if (s == NULL) {
        dropped_count_locked(f);
        return err;
    }
    switch (op) {
    case OP_COUNTER_ADD:
    case OP_GAUGE_ADD:
        s->value += v;
        break;
    case OP_GAUGE_SET:
        s->value = v;
        break;
    case OP_OBSERVE: {
        /* First bucket whose bound is >= v; NaN lands only in +Inf, as in client_golang. */
        size_t i = 0;
        while (i < f->nbounds && !(v <= f->bounds[i]))
            i++;
        s->counts[i]++;
        s->count++;
        s->sum += v;
        break;
    }
    }
    return 0;
}

static int
family_update(struct metrics_family *f, const char *const *labelvalues, int op, double v)
{
    if (f == NULL)
        return 0;
    pthread_mutex_lock(&f->reg->mu);
    int rc = family_update_locked(f, labelvalues, op, v);
    pthread_mutex_unlock(&f->reg->mu);
    return rc;
}

int
metrics_counter_add(struct metrics_family *fam, const char *const *labelvalues, double v)
{
    return family_update(fam, labelvalues, OP_COUNTER_ADD, v);
}

int
metrics_gauge_set(struct metrics_family *fam, const char *const *labelvalues, double v)
{
    return family_update(fam, labelvalues, OP_GAUGE_SET, v);
}

int
metrics_gauge_add(struct metrics_family *fam, const char *const *labelvalues, double v)
{
    return family_update(fam, labelvalues, OP_GAUGE_ADD, v);
}

int
metrics_histogram_observe(struct metrics_family *fam, const char *const *labelvalues, double v)
{
    return family_update(fam, labelvalues, OP_OBSERVE, v);
}

int
metrics_series_remove(struct metrics_family *fam, const char *const *labelvalues)
{
    int err;
    if (fam == NULL)
        return -ENOENT;
    pthread_mutex_lock(&fam->reg->mu);
    struct metrics_series *s = series_lookup_locked(fam, labelvalues, false, &err);
    if (s != NULL) {
        struct metrics_series **pp = &fam->slots[s->hash & (fam->nslots - 1)];
        while (*pp != s)
            pp = &(*pp)->hnext;
        *pp = s->hnext;
        series_free(s, fam->nlabels);
        fam->nseries--;
    }
    pthread_mutex_unlock(&fam->reg->mu);
    return s ? 0 : -ENOENT;
}

void
metrics_family_set_max_series(struct metrics_family *fam, size_t max)
{
    if (fam == NULL)
        return;
    pthread_mutex_lock(&fam->reg->mu);
    fam->max_series = max;
    pthread_mutex_unlock(&fam->reg->mu);
}

static int
cmp_label_index(const void *a, const void *b, void *arg)
{
    char **names = arg;
    return strcmp(names[*(const size_t *)a], names[*(const size_t *)b]);
}

static bool
buckets_valid(const double *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (isnan(b[i]) || (i > 0 && !(b[i] > b[i - 1])))
            return false;
    }
    return true;
}

/* Validates a definition and builds the family, not yet registered. */
static struct metrics_family *
family_create(struct metrics_registry *reg, enum metrics_type type, const char *name,
              const char *help, size_t nlabels, const char *const *labelnames,
              const double *buckets, size_t nbuckets)
{
    struct metrics_family *f = NULL;
    if (reg == NULL || !name_valid(name, false) || nlabels > METRICS_MAX_LABELS ||
        (nlabels > 0 && labelnames == NULL))
        goto bad;
    for (size_t i = 0; i < nlabels; i++) {
        if (!name_valid(labelnames[i], true) ||
            (type == METRICS_HISTOGRAM && strcmp(labelnames[i], "le") == 0))
            goto bad;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(labelnames[i], labelnames[j]) == 0)
                goto bad;
        }
    }
    if (type == METRICS_HISTOGRAM) {
        if (buckets == NULL || nbuckets == 0) {
            buckets = default_buckets;
            nbuckets = ARRAY_LEN(default_buckets);
        }
        if (nbuckets > 0 && isinf(buckets[nbuckets - 1]) && buckets[nbuckets - 1] > 0)
            nbuckets--; /* +Inf is implicit */
        if (nbuckets > METRICS_MAX_BUCKETS || !buckets_valid(buckets, nbuckets))
            goto bad;
    }
    f = xcalloc(1, sizeof(*f));
    f->reg = reg;
    f->type = type;
    f->name = xstrdup(name);
    f->help = xstrdup(help ? help : "");
    f->nlabels = nlabels;
    f->labelnames = xcalloc(nlabels ? nlabels : 1, sizeof(char *));
    f->order = xcalloc(nlabels ? nlabels : 1, sizeof(size_t));
    for (size_t i = 0; i < nlabels; i++) {
        f->labelnames[i] = xstrdup(labelnames[i]);
        f->order[i] = i;
    }
    qsort_r(f->order, nlabels, sizeof(size_t), cmp_label_index, f->labelnames);
    if (type == METRICS_HISTOGRAM && nbuckets > 0) {
        f->bounds = xmalloc(nbuckets * sizeof(double));
        memcpy(f->bounds, buckets, nbuckets * sizeof(double));
        f->nbounds = nbuckets;
    }
    f->max_series = METRICS_MAX_SERIES;
    return f;
bad:
    log_error("metrics: invalid definition of %s", name ? name : "(null)");
    return NULL;
}

/* Adds f to its registry unless the name is taken (then frees f and returns NULL). */
static struct metrics_family *
family_insert(struct metrics_family *f)
{
    struct metrics_registry *reg = f->reg;
    int err;
    pthread_mutex_lock(&reg->mu);
    for (size_t i = 0; i < reg->nfams; i++) {
        if (strcmp(reg->fams[i]->name, f->name) == 0) {
            pthread_mutex_unlock(&reg->mu);
            log_error("metrics: %s is already registered", f->name);
            family_free(f);
            return NULL;
        }
    }
    if (reg->nfams == reg->capfams) {
        reg->capfams = reg->capfams ? reg->capfams * 2 : 16;
        reg->fams = xrealloc(reg->fams, reg->capfams * sizeof(*reg->fams));
    }
    reg->fams[reg->nfams++] = f;
    /* An unlabelled metric exists from the start, at zero, as in client_golang: a scraper sees
     * "0 health checks so far" rather than nothing. */
    if (f->nlabels == 0 && f->fn == NULL)
        series_lookup_locked(f, NULL, true, &err);
    pthread_mutex_unlock(&reg->mu);
    return f;
}

static struct metrics_family *
family_register(struct metrics_registry *reg, enum metrics_type type, const char *name,
                const char *help, size_t nlabels, const char *const *labelnames,
                const double *buckets, size_t nbuckets)
{
    struct metrics_family *f =
        family_create(reg, type, name, help, nlabels, labelnames, buckets, nbuckets);
    return f ? family_insert(f) : NULL;
}

struct metrics_family *
metrics_counter_new(struct metrics_registry *reg, const char *name, const char *help,
                    size_t nlabels, const char *const *labelnames)
{
    return family_register(reg, METRICS_COUNTER, name, help, nlabels, labelnames, NULL, 0);
}

struct metrics_family *
metrics_gauge_new(struct metrics_registry *reg, const char *name, const char *help, size_t nlabels,
                  const char *const *labelnames)
{
    return family_register(reg, METRICS_GAUGE, name, help, nlabels, labelnames, NULL, 0);
}

struct metrics_family *
metrics_histogram_new(struct metrics_registry *reg, const char *name, const char *help,
                      size_t nlabels, const char *const *labelnames, const double *buckets,
                      size_t nbuckets)
{
    return family_register(reg, METRICS_HISTOGRAM, name, help, nlabels, labelnames, buckets,
                           nbuckets);
}

static struct metrics_family *
func_register(struct metrics_registry *reg, enum metrics_type type, const char *name,
              const char *help, metrics_value_fn fn, void *arg)
{
    if (fn == NULL)
        return NULL;
    struct metrics_family *f = family_create(reg, type, name, help, 0, NULL, NULL, 0);
    if (f == NULL)
        return NULL;
    f->fn = fn;
    f->fn_arg = arg;
    return family_insert(f);
}

struct metrics_family *
metrics_gauge_func_new(struct metrics_registry *reg, const char *name, const char *help,
                       metrics_value_fn fn, void *arg)
{
    return func_register(reg, METRICS_GAUGE, name, help, fn, arg);
}

struct metrics_family *
metrics_counter_func_new(struct metrics_registry *reg, const char *name, const char *help,
                         metrics_value_fn fn, void *arg)
{
    return func_register(reg, METRICS_COUNTER, name, help, fn, arg);
}

struct metrics_registry *
metrics_registry_new(void)
{
    struct metrics_registry *reg = xcalloc(1, sizeof(*reg));
    static const char *const metric_label[] = {"metric"};
    pthread_mutex_init(&reg->mu, NULL);
    reg->dropped = metrics_counter_new(reg, "metrics_dropped_observations_total",
                                       "Observations dropped because their metric had too many "
                                       "series or a label value was too long.",
                                       1, metric_label);
    return reg;
}

void
metrics_registry_free(struct metrics_registry *reg)
{
    if (reg == NULL)
        return;
    for (size_t i = 0; i < reg->nfams; i++)
        family_free(reg->fams[i]);
    free(reg->fams);
    pthread_mutex_destroy(&reg->mu);
    free(reg);
}

/* Go's strconv.FormatFloat(v, 'g', -1, 64), which client_golang uses: the shortest digits that
 * read back as v, in exponent form when the exponent is below -4 or at least 6. out holds at
 * least 32 bytes. */
static void
double_format(double v, char *out, size_t n)
{
    int digits, exp;
    if (isnan(v)) {
        snprintf(out, n, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(out, n, "%s", v > 0 ? "+Inf" : "-Inf");
        return;
    }
    if (v == 0) {
        snprintf(out, n, "0");
        return;
    }
    for (digits = 1; digits < 17; digits++) {
        snprintf(out, n, "%.*e", digits - 1, v);
        if (strtod(out, NULL) == v)
            break;
    }
    snprintf(out, n, "%.*e", digits - 1, v);
    exp = atoi(strchr(out, 'e') + 1);
    if (exp >= -4 && exp < 6) {
        int decimals = digits - (exp + 1);
        snprintf(out, n, "%.*f", decimals > 0 ? decimals : 0, v);
    }
}

static void
put_double(struct buf *b, double v)
{
    char tmp[32];
    double_format(v, tmp, sizeof(tmp));
    buf_puts(b, tmp);
}

static void
put_escaped(struct buf *b, const char *s, bool quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            buf_puts(b, "\\\\");
        else if (*s == '\n')
            buf_puts(b, "\\n");
        else if (*s == '"' && quote)
            buf_puts(b, "\\\"");
        else
            buf_putc(b, *s);
    }
}

/* Writes "name{labels}" with an optional extra label (le) after the sorted ones. */
static void
put_series_name(struct buf *b, const struct metrics_family *f, const char *suffix,
                char *const *values, const char *le)
{
    buf_puts(b, f->name);
    buf_puts(b, suffix);
    if (f->nlabels == 0 && le == NULL)
        return;
    buf_putc(b, '{');
    for (size_t i = 0; i < f->nlabels; i++) {
        size_t k = f->order[i];
        buf_printf(b, "%s%s=\"", i ? "," : "", f->labelnames[k]);
        put_escaped(b, values[k], true);
        buf_putc(b, '"');
    }
    if (le != NULL)
        buf_printf(b, "%sle=\"%s\"", f->nlabels ? "," : "", le);
    buf_putc(b, '}');
}

static void
render_series(struct buf *b, const struct metrics_family *f, const struct metrics_series *s)
{
    if (f->type != METRICS_HISTOGRAM) {
        put_series_name(b, f, "", s->values, NULL);
        buf_putc(b, ' ');
        put_double(b, s->value);
        buf_putc(b, '\n');
        return;
    }
    uint64_t cum = 0;
    for (size_t i = 0; i <= f->nbounds; i++) {
        char le[32];
        double_format(i < f->nbounds ? f->bounds[i] : INFINITY, le, sizeof(le));
        cum += s->counts[i];
        put_series_name(b, f, "_bucket", s->values, le);
        buf_printf(b, " %llu\n", (unsigned long long)cum);
    }
    put_series_name(b, f, "_sum", s->values, NULL);
    buf_putc(b, ' ');
    put_double(b, s->sum);
    buf_putc(b, '\n');
    put_series_name(b, f, "_count", s->values, NULL);
    buf_printf(b, " %llu\n", (unsigned long long)s->count);
}

static int
cmp_series(const void *a, const void *b, void *arg)
{
    const struct metrics_family *f = arg;
    const struct metrics_series *x = *(struct metrics_series *const *)a;
    const struct metrics_series *y = *(struct metrics_series *const *)b;
    for (size_t i = 0; i < f->nlabels; i++) {
        int c = strcmp(x->values[f->order[i]], y->values[f->order[i]]);
        if (c != 0)
            return c;
    }
    return 0;
}

static int
cmp_family(const void *a, const void *b)
{
    const struct metrics_family *x = *(struct metrics_family *const *)a;
    const struct metrics_family *y = *(struct metrics_family *const *)b;
    return strcmp(x->name, y->name);
}

static void
render_header(struct buf *b, const struct metrics_family *f)
{
    static const char *const type_names[] = {"counter", "gauge", "histogram"};
    if (f->help[0] != '\0') {
        buf_printf(b, "# HELP %s ", f->name);
        put_escaped(b, f->help, false);
        buf_putc(b, '\n');
    }
    buf_printf(b, "# TYPE %s %s\n", f->name, type_names[f->type]);
}

static void
render_family(struct buf *b, struct metrics_family *f)
{
    if (f->fn != NULL) {
        double v = f->fn(f->fn_arg);
        if (isnan(v))
            return;
        render_header(b, f);
        buf_printf(b, "%s ", f->name);
        put_double(b, v);
        buf_putc(b, '\n');
        return;
    }
    if (f->nseries == 0)
        return;
    struct metrics_series **all = xmalloc(f->nseries * sizeof(*all));
    size_t n = 0;
    for (size_t i = 0; i < f->nslots; i++) {
        for (struct metrics_series *s = f->slots[i]; s; s = s->hnext)
            all[n++] = s;
    }
    qsort_r(all, n, sizeof(*all), cmp_series, f);
    render_header(b, f);
    for (size_t i = 0; i < n; i++)
        render_series(b, f, all[i]);
    free(all);
}

char *
metrics_registry_render(struct metrics_registry *reg)
{
    struct buf b;
    buf_init(&b);
    pthread_mutex_lock(&reg->mu);
    struct metrics_family **sorted = xmalloc((reg->nfams ? reg->nfams : 1) * sizeof(*sorted));
    if (reg->nfams > 0)
        memcpy(sorted, reg->fams, reg->nfams * sizeof(*sorted));
    qsort(sorted, reg->nfams, sizeof(*sorted), cmp_family);
    for (size_t i = 0; i < reg->nfams; i++)
        render_family(&b, sorted[i]);
    pthread_mutex_unlock(&reg->mu);
    free(sorted);
    return buf_steal(&b);
}
