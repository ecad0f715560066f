#include "http/serveropts.h"
#include "http/realip.h"
#include "apphost/apphost.h"
#include "base/log.h"
#include "base/util.h"
#include "http/url.h"

#include <stdio.h>
#include <string.h>

static const char *const client_auth_values[] = {
    "none", "request", "require-any", "verify-if-given", "require-and-verify", NULL};
static const char *const tls_versions[] = {"tls10", "tls11", "tls12", "tls13", NULL};
static const char *const samesite_values[] = {"lax", "none", NULL};

size_t
serveropts_table(struct serveropts *o, struct conf_opt *out)
{
    const struct conf_opt t[SERVEROPTS_COUNT] = {
        {.flag = "access-url",
         .env = "CODER_ACCESS_URL",
         .yaml = "networking.accessURL",
         .group = "Networking",
         .type = CONF_STRING,
         .dest = &o->access_url,
         .help = "The URL that users will use to access the Coder deployment."},
        {.flag = "wildcard-access-url",
         .env = "CODER_WILDCARD_ACCESS_URL",
         .yaml = "networking.wildcardAccessURL",
         .group = "Networking",
         .type = CONF_STRING,
         .dest = &o->wildcard_access_url,
         .help = "Specifies the wildcard hostname to use for workspace applications in the form "
                 "\"*.example.com\"."},
        {.flag = "http-address",
         .env = "CODER_HTTP_ADDRESS",
         .yaml = "networking.http.httpAddress",
         .group = "Networking / HTTP",
         .def = "127.0.0.1:3000",
         .type = CONF_STRING,
         .dest = &o->http_address,
         .help = "HTTP bind address of the server. Unset to disable the HTTP endpoint."},
        {.flag = "tls-enable",
         .env = "CODER_TLS_ENABLE",
         .yaml = "networking.tls.enable",
         .group = "Networking / TLS",
         .type = CONF_BOOL,
         .dest = &o->tls_enable,
         .help = "Whether TLS will be enabled."},
        {.flag = "tls-address",
         .env = "CODER_TLS_ADDRESS",
         .yaml = "networking.tls.address",
         .group = "Networking / TLS",
         .def = "127.0.0.1:3443",
         .type = CONF_STRING,
         .dest = &o->tls_address,
         .help = "HTTPS bind address of the server."},
        {.flag = "tls-cert-file",
         .env = "CODER_TLS_CERT_FILE",
         .yaml = "networking.tls.certFiles",
         .group = "Networking / TLS",
         .type = CONF_STRING_ARRAY,
         .dest = &o->tls_cert_files,
         .help = "Path to each certificate for TLS. It requires a PEM-encoded file. To configure "
                 "the listener to use a CA certificate, concatenate the primary certificate and "
                 "the chain certificates together. The primary certificate should appear first "
                 "in the combined file."},
        {.flag = "tls-key-file",
         .env = "CODER_TLS_KEY_FILE",
         .yaml = "networking.tls.keyFiles",
         .group = "Networking / TLS",
         .type = CONF_STRING_ARRAY,
         .dest = &o->tls_key_files,
         .help = "Paths to the private keys for each of the certificates. It requires a "
                 "PEM-encoded file."},
        {.flag = "tls-min-version",
         .env = "CODER_TLS_MIN_VERSION",
         .yaml = "networking.tls.minVersion",
         .group = "Networking / TLS",
         .def = "tls12",
         .type = CONF_ENUM,
         .enum_values = tls_versions,
         .dest = &o->tls_min_version,
         .help = "Minimum supported version of TLS. Accepted values are \"tls10\", \"tls11\", "
                 "\"tls12\" or \"tls13\"."},
        {.flag = "tls-client-auth",
         .env = "CODER_TLS_CLIENT_AUTH",
         .yaml = "networking.tls.clientAuth",
         .group = "Networking / TLS",
         .def = "none",
         .type = CONF_ENUM,
         .enum_values = client_auth_values,
         .dest = &o->tls_client_auth,
         .help = "Policy the server will follow for TLS Client Authentication. Accepted values "
                 "are \"none\", \"request\", \"require-any\", \"verify-if-given\", or "
                 "\"require-and-verify\"."},
        {.flag = "tls-client-ca-file",
         .env = "CODER_TLS_CLIENT_CA_FILE",
         .yaml = "networking.tls.clientCAFile",
         .group = "Networking / TLS",
         .type = CONF_STRING,
         .dest = &o->tls_client_ca_file,
         .help = "PEM-encoded Certificate Authority file used for checking the authenticity of "
                 "client."},
        {.flag = "tls-client-cert-file",
         .env = "CODER_TLS_CLIENT_CERT_FILE",
         .yaml = "networking.tls.clientCertFile",
         .group = "Networking / TLS",
         .type = CONF_STRING,
         .dest = &o->tls_client_cert_file,
         .help = "Path to certificate for client TLS authentication. It requires a PEM-encoded "
                 "file."},
        {.flag = "tls-client-key-file",
         .env = "CODER_TLS_CLIENT_KEY_FILE",
         .yaml = "networking.tls.clientKeyFile",
         .group = "Networking / TLS",
         .type = CONF_STRING,
         .dest = &o->tls_client_key_file,
         .help = "Path to key for client TLS authentication. It requires a PEM-encoded file."},
        {.flag = "tls-ciphers",
         .env = "CODER_TLS_CIPHERS",
         .yaml = "networking.tls.tlsCiphers",
         .group = "Networking / TLS",
         .type = CONF_STRING_ARRAY,
         .dest = &o->tls_ciphers,
         .help = "Specify specific TLS ciphers that allowed to be used."},
        {.flag = "tls-allow-insecure-ciphers",
         .env = "CODER_TLS_ALLOW_INSECURE_CIPHERS",
         .yaml = "networking.tls.tlsAllowInsecureCiphers",
         .group = "Networking / TLS",
         .type = CONF_BOOL,
         .dest = &o->tls_allow_insecure_ciphers,
         .help = "By default, only ciphers marked as 'secure' are allowed to be used."},
        {.flag = "strict-transport-security",
         .env = "CODER_STRICT_TRANSPORT_SECURITY",
         .yaml = "networking.tls.strictTransportSecurity",
         .group = "Networking / TLS",
         .def = "0",
         .type = CONF_INT,
         .dest = &o->hsts_max_age,
         .help = "Controls if the 'Strict-Transport-Security' header is set on all static file "
                 "responses. This header should only be set if the server is accessed via HTTPS. "
                 "This value is the MaxAge in seconds of the header."},
        {.flag = "strict-transport-security-options",
         .env = "CODER_STRICT_TRANSPORT_SECURITY_OPTIONS",
         .yaml = "networking.tls.strictTransportSecurityOptions",
         .group = "Networking / TLS",
         .type = CONF_STRING_ARRAY,
         .dest = &o->hsts_options,
         .help = "Two optional fields can be set in the Strict-Transport-Security header; "
                 "'includeSubDomains' and 'preload'. The 'strict-transport-security' flag must "
                 "be set to a non-zero value for these options to be used."},
        {.flag = "prometheus-enable",
         .env = "CODER_PROMETHEUS_ENABLE",
         .yaml = "introspection.prometheus.enable",
         .group = "Introspection / Prometheus",
         .type = CONF_BOOL,
         .dest = &o->prometheus_enable,
         .help = "Serve prometheus metrics on the address defined by prometheus address."},
        {.flag = "prometheus-address",
         .env = "CODER_PROMETHEUS_ADDRESS",
         .yaml = "introspection.prometheus.address",
         .group = "Introspection / Prometheus",
         .def = "127.0.0.1:2112",
         .type = CONF_STRING,
         .dest = &o->prometheus_address,
         .help = "The bind address to serve prometheus metrics."},
        {.flag = "log-human",
         .env = "CODER_LOGGING_HUMAN",
         .yaml = "introspection.logging.humanPath",
         .group = "Introspection / Logging",
         .def = "/dev/stderr",
         .type = CONF_STRING,
         .dest = &o->log_human,
         .help = "Output human-readable logs to a given file."},
        {.flag = "log-json",
         .env = "CODER_LOGGING_JSON",
         .yaml = "introspection.logging.jsonPath",
         .group = "Introspection / Logging",
         .type = CONF_STRING,
         .dest = &o->log_json,
         .help = "Output JSON logs to a given file."},
        {.flag = "log-stackdriver",
         .env = "CODER_LOGGING_STACKDRIVER",
         .yaml = "introspection.logging.stackdriverPath",
         .group = "Introspection / Logging",
         .type = CONF_STRING,
         .dest = &o->log_stackdriver,
         .help = "Output Stackdriver compatible logs to a given file."},
        {.flag = "proxy-trusted-headers",
         .env = "CODER_PROXY_TRUSTED_HEADERS",
         .yaml = "networking.proxyTrustedHeaders",
         .group = "Networking",
         .type = CONF_STRING_ARRAY,
         .dest = &o->proxy_trusted_headers,
         .help = "Headers to trust for forwarding IP addresses. e.g. Cf-Connecting-Ip, "
                 "True-Client-Ip, X-Forwarded-For."},
        {.flag = "proxy-trusted-origins",
         .env = "CODER_PROXY_TRUSTED_ORIGINS",
         .yaml = "networking.proxyTrustedOrigins",
         .group = "Networking",
         .type = CONF_STRING_ARRAY,
         .dest = &o->proxy_trusted_origins,
         .help = "Origin addresses to respect \"proxy-trusted-headers\". e.g. 192.168.1.0/24."},
        {.flag = "secure-auth-cookie",
         .env = "CODER_SECURE_AUTH_COOKIE",
         .yaml = "networking.secureAuthCookie",
         .group = "Networking",
         .type = CONF_BOOL,
         .dest = &o->secure_auth_cookie,
         .help = "Controls if the 'Secure' property is set on browser session cookies."},
        {.flag = "max-agent-tunnels",
         .env = "CODER_MAX_AGENT_TUNNELS",
         .yaml = "networking.maxAgentTunnels",
         .group = "Networking",
         .def = "10000",
         .type = CONF_INT,
         .dest = &o->max_agent_tunnels,
         .help = "How many workspace agents may hold a tunnel to this region at once; more are "
                 "refused with 429 and try another region or later (docs/TUNNEL.md §6)."},
        {.flag = "samesite-auth-cookie",
         .env = "CODER_SAMESITE_AUTH_COOKIE",
         .yaml = "networking.sameSiteAuthCookie",
         .group = "Networking",
         .def = "lax",
         .type = CONF_ENUM,
         .enum_values = samesite_values,
         .dest = &o->samesite_auth_cookie,
         .help = "Controls the 'SameSite' property is set on browser session cookies."},
        {.flag = "config",
         .shorthand = 'c',
         .env = "CODER_CONFIG_PATH",
         .group = "Config",
         .type = CONF_STRING,
         .type_label = "yaml-config-path", /* serpent's name for it */
         .dest = &o->config_path,
         .help = "Specify a YAML file to load configuration from."},
    };
    memcpy(out, t, sizeof(t));
    return SERVEROPTS_COUNT;
}

int
serveropts_validate(struct serveropts *o, char **err)
{
    if (o->max_agent_tunnels < 1 || o->max_agent_tunnels > 1000000) {
        *err = xstrdup("--max-agent-tunnels must be between 1 and 1000000");
        return -1;
    }
    o->realip = realip_new(&o->proxy_trusted_headers, &o->proxy_trusted_origins, err);
    if (*err)
        return -1;
    if (o->access_url && *o->access_url) {
        struct url u;
        if (url_parse(o->access_url, &u) < 0 ||
            (strcmp(u.scheme, "http") != 0 && strcmp(u.scheme, "https") != 0)) {
            url_free(&u);
            *err = xstrdup("access-url must include a scheme (e.g. 'http://' or 'https://)");
            return -1;
        }
        url_free(&u);
        /* Keep it without a trailing slash: paths are appended to it. */
        size_t n = strlen(o->access_url);
        while (n > 0 && o->access_url[n - 1] == '/')
            o->access_url[--n] = '\0';
    }
    if (o->wildcard_access_url && *o->wildcard_access_url) {
        struct apphost_pattern p;
        char *perr = NULL;
        if (apphost_pattern_compile(o->wildcard_access_url, &p, &perr) < 0) {
            *err = xasprintf("Wildcard URL is invalid. \"%s\": %s", o->wildcard_access_url,
                             perr ? perr : "invalid");
            free(perr);
            return -1;
        }
        apphost_pattern_free(&p);
    }
    if ((o->http_address == NULL || *o->http_address == '\0') && !o->tls_enable) {
        *err = xstrdup("TLS is disabled. Enable with --tls-enable or specify a HTTP address");
        return -1;
    }
    if (o->tls_enable && o->tls_cert_files.n != o->tls_key_files.n) {
        /* Coder's words (cli/server.go loadCertificates). Neither: self-signed (net/tls.c). */
        *err = xstrdup("--tls-cert-file and --tls-key-file must be used the same amount of times");
        return -1;
    }
    struct buf b;
    buf_init(&b);
    for (size_t i = 0; i < o->hsts_options.n; i++) {
        const char *v = o->hsts_options.v[i];
        if (!str_eq_ci(v, "includeSubDomains") && !str_eq_ci(v, "preload")) {
            *err = xasprintf("hsts: invalid option: %s. Must be \"preload\" and/or "
                             "\"includeSubDomains\"",
                             v);
            buf_fini(&b);
            return -1;
        }
        if (b.len)
            buf_puts(&b, "; ");
        buf_puts(&b, str_eq_ci(v, "preload") ? "preload" : "includeSubDomains");
    }
    o->hsts_header_options = buf_steal(&b);
    return 0;
}

static char *
listener_url(const char *scheme, const char *bound)
{
    return xasprintf("%s://%s", scheme, bound);
}

int
serveropts_listen(struct serveropts *o, struct http_server *srv, char **err)
{
    char bound[128];
    if (o->http_address && *o->http_address) {
        if (http_server_listen(srv, o->http_address, NULL, bound, sizeof(bound), err) < 0)
            return -1;
        o->http_url = listener_url("http", bound);
        printf("Started HTTP listener at %s\n", o->http_url);
    }
    if (o->tls_enable) {
        struct buf ciphers;
        buf_init(&ciphers);
        for (size_t i = 0; i < o->tls_ciphers.n; i++) {
            if (i)
                buf_putc(&ciphers, ',');
            buf_puts(&ciphers, o->tls_ciphers.v[i]);
        }
        struct tls_server_opts t = {
            .cert_files = (const char *const *)o->tls_cert_files.v,
            .key_files = (const char *const *)o->tls_key_files.v,
            .ncerts = o->tls_cert_files.n,
            .min_version = o->tls_min_version,
            .client_auth = o->tls_client_auth,
            .client_ca_file = o->tls_client_ca_file,
            .ciphers = ciphers.len ? ciphers.data : NULL,
            .allow_insecure_ciphers = o->tls_allow_insecure_ciphers,
            .alpn = "\x02h2\x08http/1.1", /* HTTP/2 for clients that choose it */
        };
        o->tls = tls_ctx_new_server(&t, err);
        buf_fini(&ciphers);
        if (o->tls == NULL)
            return -1;
        if (http_server_listen(srv, o->tls_address, o->tls, bound, sizeof(bound), err) < 0)
            return -1;
        o->tls_url = listener_url("https", bound);
        printf("Started TLS/HTTPS listener at %s\n", o->tls_url);
    }
    fflush(stdout);
    return 0;
}

int
serveropts_log_setup(struct serveropts *o, bool verbose, char **err)
{
    const char *failed = "";
    int rc = log_setup_sinks(verbose ? LOG_DEBUG : LOG_INFO, o->log_human, o->log_json,
                             o->log_stackdriver, &failed);
    if (rc < 0) {
        *err = xasprintf("open log file \"%s\": %s", failed, strerror(-rc));
        return -1;
    }
    return 0;
}

void
serveropts_fini(struct serveropts *o)
{
    tls_ctx_free(o->tls);
    o->tls = NULL;
    realip_free(o->realip);
    o->realip = NULL;
    free(o->http_url);
    free(o->tls_url);
    free(o->hsts_header_options);
    o->http_url = o->tls_url = o->hsts_header_options = NULL;
}
