/* Coder's HTTP API metrics (coderd_api_*), shared by the primary and the proxy. The path label
 * is the matched route pattern, never the raw path, so label cardinality stays bounded. */
#ifndef HTTP_APIMETRICS_H
#define HTTP_APIMETRICS_H

#include "http/server.h"

struct metrics_registry;
struct api_metrics;

struct api_metrics *api_metrics_new(struct metrics_registry *reg);
void api_metrics_free(struct api_metrics *m);
/* A routed exchange begins: concurrent_requests goes up (the server's on_routed hook). */
void api_metrics_begin(struct api_metrics *m, const struct http_exchange *ex);
/* Records one finished exchange: requests_processed_total, request_latencies_seconds, and
 * concurrent_requests back down for a routed one (the server's on_done hook). */
void api_metrics_end(struct api_metrics *m, const struct http_exchange *ex);
/* ex switched protocols onto st (a WebSocket, an agent tunnel, a port forward):
 * coderd_api_concurrent_websockets goes up until st ends, then websocket_durations_seconds
 * records how long it lived (the server's on_upgrade hook). */
void api_metrics_upgraded(struct api_metrics *m, const struct http_exchange *ex,
                          struct net_stream *st);

#endif
