/* coder port-forward <workspace> --tcp [ip:]local[-end][:remote[-end]]: local TCP listeners
 * whose connections become byte streams to 127.0.0.1:remote in the workspace, through a
 * region (GET /api/v2/workspaceagents/{id}/port-forward, Upgrade: coder-tcp): the healthy
 * region with the lowest /latency-check time, or the one --proxy names. */
#include "base/timeutil.h"
#include "base/util.h"
#include "http/client.h"
#include "cli.h"
#include "commands.h"
#include "http/upgrade.h"
#include "net/stream.h"
#include "net/tls.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define MAX_FORWARDS 256
#define LATENCY_TIMEOUT_MS 2000

struct forward {
    char ip[64]; /* "" = 127.0.0.1 and [::1] */
    int local, remote;
};

struct listener {
    uv_tcp_t tcp;
    struct pf *pf;
    int remote;
    struct listener *next;
};

/* A local connection: waiting for its upgrade, then spliced to the workspace end. */
struct conn {
    struct pf *pf;
    struct net_stream *local;
    struct http_upgrade *up; /* while upgrading */
    int remote;
    struct conn *prev, *next;
};

struct pf {
    uv_loop_t *loop;
    struct conn *conns; /* every local connection still open */
    bool stopping;
    const char *url;
    char *auth;
    char agent_id[37];
    struct tls_ctx *tls;
    struct listener *listeners;
    uv_signal_t sigint, sigterm;
};

/* ---- the spec grammar ---- */

static int
parse_range(const char *s, size_t n, int *lo, int *hi)
{
    char buf[32];
    if (n == 0 || n >= sizeof(buf))
        return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    char *dash = strchr(buf, '-'), *end;
    long a = strtol(buf, &end, 10);
    if (end == buf || (dash ? end != dash : *end != '\0'))
        return -1;
    long b = a;
    if (dash) {
        b = strtol(dash + 1, &end, 10);
        if (end == dash + 1 || *end != '\0')
            return -1;
    }
    if (a < 1 || b < a || b > 65535)
        return -1;
    *lo = (int)a;
    *hi = (int)b;
    return 0;
}

/* Adds the forwards of one spec; prints the error and returns -1 when it is invalid. */
static int
parse_spec(const char *spec, struct forward *out, size_t *n)
{
    char ip[64] = "";
    const char *rest = spec;
    if (spec[0] == '[') { /* [ipv6]:... */
        const char *close = strchr(spec, ']');
        if (!close || close[1] != ':' || (size_t)(close - spec - 1) >= sizeof(ip))
            goto bad;
        snprintf(ip, sizeof(ip), "%.*s", (int)(close - spec - 1), spec + 1);
        rest = close + 2;
    } else {
        /* An IPv4 address has dots before its first colon. */
        const char *colon = strchr(spec, ':');
        if (colon && memchr(spec, '.', (size_t)(colon - spec))) {
            if ((size_t)(colon - spec) >= sizeof(ip))
                goto bad;
            snprintf(ip, sizeof(ip), "%.*s", (int)(colon - spec), spec);
            rest = colon + 1;
        }
    }
    const char *colon = strchr(rest, ':');
    int llo, lhi, rlo, rhi;
    if (parse_range(rest, colon ? (size_t)(colon - rest) : strlen(rest), &llo, &lhi) < 0)
        goto bad;
    if (colon) {
        if (parse_range(colon + 1, strlen(colon + 1), &rlo, &rhi) < 0)
            goto bad;
    } else {
        rlo = llo;
        rhi = lhi;
    }
    if (rhi - rlo != lhi - llo)
        goto bad;
    for (int p = llo; p <= lhi; p++) {
        for (size_t i = 0; i < *n; i++) {
            if (out[i].local == p && strcmp(out[i].ip, ip) == 0) {
                cli_fail("local tcp host:%s port:%d is specified twice", ip[0] ? ip : "127.0.0.1",
                         p);
                return -1;
            }
        }
        if (*n >= MAX_FORWARDS) {
            cli_fail("too many port-forwards (at most %d)", MAX_FORWARDS);
            return -1;
        }
        snprintf(out[*n].ip, sizeof(out[*n].ip), "%s", ip);
        out[*n].local = p;
        out[*n].remote = rlo + (p - llo);
        (*n)++;
    }
    return 0;
bad:
    cli_fail("invalid port specification \"%s\": want [ip:]local[-end][:remote[-end]] with "
             "ports 1-65535",
             spec);
    return -1;
}

/* ---- connections ---- */

static void
conn_free(void *arg)
{
    struct conn *k = arg;
    struct pf *pf = k->pf;
    if (k->prev)
        k->prev->next = k->next;
    else
        pf->conns = k->next;
    if (k->next)
        k->next->prev = k->prev;
    free(k);
}

static void
on_upgraded(struct net_stream *st, const struct buf *early, int status, const char *err, void *arg)
{
    (void)status;
    struct conn *k = arg;
    k->up = NULL;
    if (!st) {
        fprintf(stderr, "Failed to dial 'tcp://127.0.0.1:%d' in workspace: %s\n", k->remote,
                err && *err ? err : "unknown error");
        net_stream_close(k->local); /* waiting_close frees k */
        return;
    }
    if (early->len)
        net_stream_write(k->local, early->data, early->len);
    net_stream_splice(k->local, st, conn_free, k);
}

/* The local connection closed before it was spliced. */
static void
waiting_close(struct net_stream *s, const char *why, void *arg)
{
    (void)s;
    (void)why;
    struct conn *k = arg;
    if (k->up)
        http_upgrade_cancel(k->up);
    conn_free(k);
}

static const struct net_stream_cbs waiting_cbs = {NULL, NULL, NULL, NULL, waiting_close};

static void
on_conn(uv_stream_t *server, int status)
{
    struct listener *l = server->data;
    struct pf *pf = l->pf;
    if (status < 0 || pf->stopping)
        return;
    struct conn *k = xcalloc(1, sizeof(*k));
    k->pf = pf;
    k->remote = l->remote;
    k->local = net_stream_accept(server, NULL, &waiting_cbs, k);
    if (!k->local) {
        free(k);
        return;
    }
    k->next = pf->conns;
    if (pf->conns)
        pf->conns->prev = k;
    pf->conns = k;
    net_stream_pause(k->local); /* nothing flows until the workspace end is up */
    char path[128];
    snprintf(path, sizeof(path), "/api/v2/workspaceagents/%s/port-forward?port=%d", pf->agent_id,
             l->remote);
    const char *headers[] = {pf->auth, NULL};
    char *err = NULL;
    k->up = http_upgrade_dial(pf->loop, pf->url, path, "coder-tcp", headers, pf->tls, 10000,
                              on_upgraded, k, &err);
    if (!k->up) {
        fprintf(stderr, "Failed to dial 'tcp://127.0.0.1:%d' in workspace: %s\n", l->remote, err);
        free(err);
        net_stream_close(k->local);
    }
}

static int
listen_on(struct pf *pf, const char *ip, int local, int remote)
{
    struct sockaddr_storage ss;
    int rc = strchr(ip, ':') ? uv_ip6_addr(ip, local, (struct sockaddr_in6 *)&ss)
                             : uv_ip4_addr(ip, local, (struct sockaddr_in *)&ss);
    if (rc < 0)
        return rc;
    struct listener *l = xcalloc(1, sizeof(*l));
    l->pf = pf;
    l->remote = remote;
    uv_tcp_init(pf->loop, &l->tcp);
    l->tcp.data = l;
    l->next = pf->listeners;
    pf->listeners = l;
    if ((rc = uv_tcp_bind(&l->tcp, (struct sockaddr *)&ss, 0)) < 0 ||
        (rc = uv_listen((uv_stream_t *)&l->tcp, 128, on_conn)) < 0)
        return rc;
    fprintf(stderr,
            "Forwarding 'tcp://%s%s%s:%d' locally to 'tcp://127.0.0.1:%d' in the workspace\n",
            strchr(ip, ':') ? "[" : "", ip, strchr(ip, ':') ? "]" : "", local, remote);
    return 0;
}

/* ---- choosing the region ---- */

/* Milliseconds for one GET <url>/latency-check, or -1 when it failed. */
static int64_t
latency(const char *url)
{
    char *u = xasprintf("%s/latency-check", url);
    struct http_client_req req = {.method = "GET", .url = u, .timeout_ms = LATENCY_TIMEOUT_MS};
    struct http_client_resp resp;
    http_client_resp_init(&resp);
    int64_t t0 = time_mono_ms();
    int rc = http_client_do(&req, &resp);
    int64_t took = time_mono_ms() - t0;
    bool ok = rc == 0 && resp.status == 200;
    http_client_resp_fini(&resp);
    free(u);
    return ok ? took : -1;
}

/* The URL of the region to go through (a new string): the one named (the primary is
 * "primary"), else the healthy one answering /latency-check fastest (the best of two tries, so
 * a cold connection does not decide). NULL after printing an error. */
static char *
choose_region(struct cli *c, const char *want)
{
    json_t *j = NULL;
    if (cli_api(c, "GET", "/api/v2/regions", NULL, &j, NULL) < 0)
        return NULL;
    json_t *regions = json_object_get(j, "regions");
    char *best = NULL;
    int64_t best_ms = -1;
    size_t i;
    json_t *r;
    json_array_foreach(regions, i, r)
    {
        const char *name = json_string_value(json_object_get(r, "name"));
        const char *url = json_string_value(json_object_get(r, "path_app_url"));
        bool healthy = json_is_true(json_object_get(r, "healthy"));
        if (!name || !url || !*url)
            continue;
        if (want) {
            if (!str_eq(name, want))
                continue;
            if (!healthy)
                cli_fail("proxy \"%s\" is not healthy; pick another with --proxy, or leave it "
                         "out to use the fastest healthy region",
                         want);
            else
                best = xstrdup(url);
            json_decref(j);
            return best;
        }
        if (!healthy)
            continue;
        int64_t a = latency(url), b = latency(url);
        int64_t ms = a < 0 ? b : (b < 0 || a < b ? a : b);
        if (c->g.verbose)
            fprintf(stderr, "region %s (%s): %s%lld ms\n", name, url, ms < 0 ? "unreachable, " : "",
                    (long long)ms);
        if (ms >= 0 && (best_ms < 0 || ms < best_ms)) {
            free(best);
            best = xstrdup(url);
            best_ms = ms;
        }
    }
    json_decref(j);
    if (want)
        cli_fail("proxy \"%s\" not found; `coder wsproxy ls` lists them", want);
    else if (!best)
        best = xstrdup(c->url); /* nothing answered: the deployment itself */
    return best;
}

static void
close_all(struct pf *pf)
{
    pf->stopping = true;
    for (struct conn *k = pf->conns; k; k = k->next)
        net_stream_close(k->local); /* a spliced one closes its workspace end too */
    for (struct listener *l = pf->listeners; l; l = l->next)
        uv_close((uv_handle_t *)&l->tcp, (uv_close_cb)NULL);
    uv_close((uv_handle_t *)&pf->sigint, NULL);
    uv_close((uv_handle_t *)&pf->sigterm, NULL);
}

static void
on_signal(uv_signal_t *s, int signum)
{
    (void)signum;
    struct pf *pf = s->data;
    fprintf(stderr, "\nReceived signal, closing all listeners and active connections\n");
    close_all(pf); /* the loop ends once everything closed */
}

int
cmd_port_forward(int argc, char **argv)
{
    struct conf_strv tcp = {0}, udp = {0};
    bool disable_autostart = false;
    char *proxy = NULL, *region = NULL;
    const struct conf_opt opts[] = {
        {.flag = "tcp",
         .shorthand = 'p',
         .env = "CODER_PORT_FORWARD_TCP",
         .type = CONF_STRING_ARRAY,
         .dest = &tcp,
         .help = "Forward TCP port(s) from the workspace to the local machine: "
                 "[ip:]local[-end][:remote[-end]]."},
        {.flag = "udp",
         .env = "CODER_PORT_FORWARD_UDP",
         .type = CONF_STRING_ARRAY,
         .dest = &udp,
         .help = "Forward UDP port(s): not supported by this deployment's tunnel."},
        {.flag = "proxy",
         .env = "CODER_PORT_FORWARD_PROXY",
         .type = CONF_STRING,
         .dest = &proxy,
         .help = "The region to forward through (a workspace proxy's name, or \"primary\"); "
                 "by default the healthy region with the lowest latency."},
        {.flag = "disable-autostart",
         .env = "CODER_SSH_DISABLE_AUTOSTART",
         .type = CONF_BOOL,
         .dest = &disable_autostart,
         .help = "Disable starting the workspace automatically when connecting."},
    };
    struct cli c = {0};
    int r = cli_parse(&c, "coder port-forward [flags] <workspace>",
                      "Forward ports from a workspace to the local machine.", opts, ARRAY_LEN(opts),
                      argc, argv);
    if (r <= 0) {
        cli_fini(&c);
        return r < 0;
    }
    int rc = 1;
    struct forward *fw = xcalloc(MAX_FORWARDS, sizeof(*fw));
    size_t nfw = 0;
    json_t *w = NULL;
    struct pf pf = {0};
    uv_loop_t loop;
    bool loop_open = false;
    if (c.res.nargs != 1) {
        cli_fail("wanted 1 argument (<workspace>), got %zu", c.res.nargs);
        goto out;
    }
    if (udp.n) {
        cli_fail("--udp: UDP forwarding is not supported; the agent tunnel carries TCP only");
        goto out;
    }
    for (size_t i = 0; i < tcp.n; i++) {
        if (parse_spec(tcp.v[i], fw, &nfw) < 0)
            goto out;
    }
    if (nfw == 0) {
        cli_fail("no port-forwards requested");
        goto out;
    }
    if (cli_require_session(&c) < 0)
        goto out;
    const char *arg = c.res.args[0];
    const char *slash = strchr(arg, '/');
    char *path =
        slash ? xasprintf("/api/v2/users/%.*s/workspace/%s", (int)(slash - arg), arg, slash + 1)
              : xasprintf("/api/v2/users/me/workspace/%s", arg);
    int api = cli_api(&c, "GET", path, NULL, &w, NULL);
    free(path);
    if (api < 0)
        goto out;
    json_t *agents = json_object_get(
        json_array_get(json_object_get(json_object_get(w, "latest_build"), "resources"), 0),
        "agents");
    const char *agent_id = json_string_value(json_object_get(json_array_get(agents, 0), "id"));
    if (!agent_id) {
        cli_fail("workspace must be in start transition to port-forward");
        goto out;
    }
    snprintf(pf.agent_id, sizeof(pf.agent_id), "%s", agent_id);
    region = choose_region(&c, proxy && *proxy ? proxy : NULL);
    if (!region)
        goto out;
    if (c.g.verbose)
        fprintf(stderr, "forwarding through %s\n", region);
    signal(SIGPIPE, SIG_IGN);
    uv_loop_init(&loop);
    loop_open = true;
    pf.loop = &loop;
    pf.url = region;
    pf.auth = xasprintf("Coder-Session-Token: %s", c.token);
    struct tls_client_opts to = {0};
    char *err = NULL;
    pf.tls = tls_ctx_new_client(&to, &err);
    if (!pf.tls) {
        cli_fail("%s", err);
        free(err);
        goto out;
    }
    uv_signal_init(&loop, &pf.sigint);
    uv_signal_init(&loop, &pf.sigterm);
    pf.sigint.data = pf.sigterm.data = &pf;
    uv_signal_start(&pf.sigint, on_signal, SIGINT);
    uv_signal_start(&pf.sigterm, on_signal, SIGTERM);
    for (size_t i = 0; i < nfw; i++) {
        int lr;
        if (fw[i].ip[0]) {
            lr = listen_on(&pf, fw[i].ip, fw[i].local, fw[i].remote);
        } else {
            lr = listen_on(&pf, "127.0.0.1", fw[i].local, fw[i].remote);
            (void)listen_on(&pf, "::1", fw[i].local, fw[i].remote); /* best effort */
        }
        if (lr < 0) {
            cli_fail("listen on %s:%d: %s", fw[i].ip[0] ? fw[i].ip : "127.0.0.1", fw[i].local,
                     uv_strerror(lr));
            close_all(&pf);
            goto out;
        }
    }
    fprintf(stderr, "Ready!\n");
    uv_run(&loop, UV_RUN_DEFAULT);
    rc = 0;
out:
    if (loop_open) {
        uv_run(&loop, UV_RUN_DEFAULT); /* closing handles */
        for (struct listener *l = pf.listeners, *next; l; l = next) {
            next = l->next;
            free(l);
        }
        uv_loop_close(&loop);
    }
    tls_ctx_free(pf.tls);
    free(pf.auth);
    free(region);
    json_decref(w);
    free(fw);
    cli_fini(&c);
    return rc;
}
