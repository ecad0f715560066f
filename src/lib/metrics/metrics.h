/* A small Prometheus client: a registry of metric families (counters, gauges, histograms, each
 * with a fixed list of label names) rendered in the text exposition format 0.0.4, as Go's
 * client_golang renders it (families sorted by name, label pairs sorted by name, series sorted
 * by label values, numbers in Go's shortest 'g' form).
 *
 * Label values may come from peers, so each family holds at most METRICS_MAX_SERIES series;
 * observations for new series beyond that, and label values that are too long, are dropped and
 * counted in metrics_dropped_observations_total{metric="<family>"}.
 *
 * Thread-safe: one mutex per registry guards every update and the rendering. */
#ifndef METRICS_METRICS_H
#define METRICS_METRICS_H

#include <stddef.h>

#define METRICS_MAX_SERIES 10000
/* Longest label value kept, in bytes; longer values are dropped, not truncated, so two distinct
 * peers' values never merge into one series. */
#define METRICS_MAX_LABEL_VALUE 1024
#define METRICS_MAX_LABELS 16
#define METRICS_MAX_BUCKETS 64

struct metrics_registry;
struct metrics_family;

/* Scrape-time callback: returns the current value, or NaN to leave the metric out of this
 * scrape. It runs with the registry locked, so it must not call into the registry. */
typedef double (*metrics_value_fn)(void *arg);

/* Creates an empty registry (which already holds the internal dropped-observations counter). */
struct metrics_registry *metrics_registry_new(void);
/* Frees the registry and every family in it. Accepts NULL. */
void metrics_registry_free(struct metrics_registry *reg);

/* Each constructor registers a family owned by reg and returns it, or returns NULL (and logs)
 * when the name or a label name is invalid, the name is already registered, or nlabels is above
 * METRICS_MAX_LABELS; every operation below accepts a NULL family and does nothing. The strings
 * are copied. */
struct metrics_family *metrics_counter_new(struct metrics_registry *reg, const char *name,
                                           const char *help, size_t nlabels,
                                           const char *const *labelnames);
struct metrics_family *metrics_gauge_new(struct metrics_registry *reg, const char *name,
                                         const char *help, size_t nlabels,
                                         const char *const *labelnames);
/* buckets: upper bounds, strictly increasing, at most METRICS_MAX_BUCKETS; a final +Inf is
 * optional (it is always rendered). */
struct metrics_family *metrics_histogram_new(struct metrics_registry *reg, const char *name,
                                             const char *help, size_t nlabels,
                                             const char *const *labelnames, const double *buckets,
                                             size_t nbuckets);
/* Unlabelled gauge / counter whose value fn(arg) returns at each rendering. */
struct metrics_family *metrics_gauge_func_new(struct metrics_registry *reg, const char *name,
                                              const char *help, metrics_value_fn fn, void *arg);
struct metrics_family *metrics_counter_func_new(struct metrics_registry *reg, const char *name,
                                                const char *help, metrics_value_fn fn, void *arg);

/* Sets the most series the family keeps (default METRICS_MAX_SERIES). */
void metrics_family_set_max_series(struct metrics_family *fam, size_t max);

/* labelvalues holds one string per label name declared at creation (NULL when there are none);
 * a NULL entry counts as "". The series is created on first use. Each returns 0, -EINVAL for a
 * wrong kind of family or a negative counter increment, or -ENOSPC when the observation was
 * dropped (series limit or over-long label value). */
int metrics_counter_add(struct metrics_family *fam, const char *const *labelvalues, double v);
int metrics_gauge_set(struct metrics_family *fam, const char *const *labelvalues, double v);
int metrics_gauge_add(struct metrics_family *fam, const char *const *labelvalues, double v);
int metrics_histogram_observe(struct metrics_family *fam, const char *const *labelvalues, double v);
/* Forgets one series (e.g. a deleted proxy's gauge). Returns 0, or -ENOENT if it did not exist. */
int metrics_series_remove(struct metrics_family *fam, const char *const *labelvalues);

/* Renders every family in the text exposition format (version 0.0.4). As in client_golang, an
 * unlabelled family shows from its creation (at zero) while a labelled one shows only once it
 * has a series. The caller frees the result. */
char *metrics_registry_render(struct metrics_registry *reg);

/* Content-Type of the rendered text. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Registers the standard process_* metrics of client_golang's process collector (CPU, memory,
 * file descriptors, start time), read from /proc/self at each rendering. Returns 0, or -errno
 * if a family could not be registered. Linux only. */
int metrics_process_register(struct metrics_registry *reg);

#endif
