/* The options `coder server` and `coder wsproxy server` share (Coder's DeploymentValues for
 * networking, TLS, Prometheus and logging), declared once, and the start-up of listeners
 * from them. */
#ifndef HTTP_SERVEROPTS_H
#define HTTP_SERVEROPTS_H

#include "conf/conf.h"
#include "http/server.h"
#include "net/tls.h"

struct serveropts {
    char *access_url;
    char *wildcard_access_url;
    char *http_address;
    bool tls_enable;
    char *tls_address;
    struct conf_strv tls_cert_files;
    struct conf_strv tls_key_files;
    char *tls_min_version;
    char *tls_client_auth;
    char *tls_client_ca_file;
    char *tls_client_cert_file;
    char *tls_client_key_file;
    struct conf_strv tls_ciphers;
    bool tls_allow_insecure_ciphers;
    int64_t hsts_max_age;
    struct conf_strv hsts_options;
    bool prometheus_enable;
    char *prometheus_address;
    char *log_human;
    char *log_json;
    char *log_stackdriver;
    struct conf_strv proxy_trusted_headers;
    struct conf_strv proxy_trusted_origins;
    bool secure_auth_cookie;
    char *samesite_auth_cookie;
    int64_t max_agent_tunnels;
    char *config_path;
    struct realip *realip; /* from proxy_trusted_*, by serveropts_validate (NULL: none) */
    /* Filled by serveropts_listen: */
    struct tls_ctx *tls;
    char *http_url;            /* "http://127.0.0.1:3000" or NULL */
    char *tls_url;             /* "https://127.0.0.1:3443" or NULL */
    char *hsts_header_options; /* joined "includeSubDomains; preload" */
};

/* Appends the shared option declarations (bound to o) to out, which must have room for
 * SERVEROPTS_COUNT entries. Returns the number appended. */
#define SERVEROPTS_COUNT 27
size_t serveropts_table(struct serveropts *o, struct conf_opt *out);
/* Validates the parsed values (access URL, wildcard, TLS settings). Returns 0 or -1 with *err. */
int serveropts_validate(struct serveropts *o, char **err);
/* Opens the HTTP and TLS listeners on srv, printing Coder's "Started HTTP listener at ..."
 * lines to stdout, and sets o->tls, o->http_url, o->tls_url. Returns 0 or -1 with *err. */
int serveropts_listen(struct serveropts *o, struct http_server *srv, char **err);
/* Sets up logging from --log-human (and -v). Returns 0 or -1 with *err. */
int serveropts_log_setup(struct serveropts *o, bool verbose, char **err);
/* Frees what serveropts_listen made (not the parsed values). */
void serveropts_fini(struct serveropts *o);

#endif
