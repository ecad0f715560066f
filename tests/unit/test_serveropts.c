/* The options `coder server` and `coder wsproxy server` share (http/serveropts.c): Coder's
 * names and defaults, the checks that refuse a configuration with Coder's words, and the
 * listeners they open (TLS with a self-signed certificate when none is given). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/util.h"
#include "http/serveropts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct parsed {
    struct serveropts o;
    struct conf_opt t[SERVEROPTS_COUNT];
    struct conf_cmd cmd;
    struct conf_result res;
};

/* Parses argv (NULL-terminated) with an environment free of CODER_ variables. Returns the
 * conf_parse result; *err is set on failure. */
static int
parse(struct parsed *p, const char *const *argv, char **err)
{
    memset(p, 0, sizeof(*p));
    size_t n = serveropts_table(&p->o, p->t);
    assert_int_equal(n, SERVEROPTS_COUNT);
    for (size_t i = 0; i < n; i++) {
        if (p->t[i].env)
            unsetenv(p->t[i].env);
    }
    p->cmd = (struct conf_cmd){.usage = "coder test [flags]", .opts = p->t, .nopts = n};
    int argc = 0;
    while (argv && argv[argc])
        argc++;
    *err = NULL;
    return conf_parse(&p->cmd, argc, (char **)argv, &p->res, err);
}

static void
done(struct parsed *p)
{
    serveropts_fini(&p->o);
    conf_free_values(&p->cmd, &p->res);
}

/* Parses and validates; returns validate's error (caller frees) or NULL. */
static char *
validate(const char *const *argv, struct parsed *p)
{
    char *err = NULL;
    assert_int_equal(parse(p, argv, &err), 0);
    if (serveropts_validate(&p->o, &err) < 0) {
        assert_non_null(err);
        return err;
    }
    assert_null(err);
    return NULL;
}

static void
test_table_names_and_defaults(void **state)
{
    struct parsed p;
    char *err;
    assert_int_equal(parse(&p, NULL, &err), 0);
    /* Coder's defaults (CODER-COMPAT part 1 §1.6, part 2 §2). */
    assert_string_equal(p.o.http_address, "127.0.0.1:3000");
    assert_string_equal(p.o.tls_address, "127.0.0.1:3443");
    assert_false(p.o.tls_enable);
    assert_string_equal(p.o.tls_min_version, "tls12");
    assert_string_equal(p.o.tls_client_auth, "none");
    assert_string_equal(p.o.samesite_auth_cookie, "lax");
    assert_string_equal(p.o.prometheus_address, "127.0.0.1:2112");
    assert_false(p.o.prometheus_enable);
    assert_string_equal(p.o.log_human, "/dev/stderr");
    assert_int_equal(p.o.hsts_max_age, 0);
    assert_int_equal(p.o.tls_cert_files.n, 0);
    /* Every option has Coder's flag, variable and YAML key; none twice. */
    static const char *const want[][3] = {
        {"tls-cert-file", "CODER_TLS_CERT_FILE", "networking.tls.certFiles"},
        {"tls-key-file", "CODER_TLS_KEY_FILE", "networking.tls.keyFiles"},
        {"tls-enable", "CODER_TLS_ENABLE", "networking.tls.enable"},
        {"http-address", "CODER_HTTP_ADDRESS", "networking.http.httpAddress"},
        {"log-human", "CODER_LOGGING_HUMAN", "introspection.logging.humanPath"},
        {"strict-transport-security", "CODER_STRICT_TRANSPORT_SECURITY",
         "networking.tls.strictTransportSecurity"},
        {"proxy-trusted-origins", "CODER_PROXY_TRUSTED_ORIGINS", "networking.proxyTrustedOrigins"},
    };
    for (size_t w = 0; w < ARRAY_LEN(want); w++) {
        size_t found = 0;
        for (size_t i = 0; i < SERVEROPTS_COUNT; i++) {
            if (str_eq(p.t[i].flag, want[w][0])) {
                found++;
                assert_string_equal(p.t[i].env, want[w][1]);
                assert_string_equal(p.t[i].yaml, want[w][2]);
            }
        }
        assert_int_equal(found, 1);
    }
    for (size_t i = 0; i < SERVEROPTS_COUNT; i++) {
        assert_non_null(p.t[i].help);
        for (size_t j = i + 1; j < SERVEROPTS_COUNT; j++) {
            assert_string_not_equal(p.t[i].flag, p.t[j].flag);
            if (p.t[i].env && p.t[j].env)
                assert_string_not_equal(p.t[i].env, p.t[j].env);
        }
    }
    done(&p);
}

static void
test_enums_refuse_other_values(void **state)
{
    struct parsed p;
    char *err;
    const char *v[] = {"--tls-min-version", "tls14", NULL};
    assert_int_equal(parse(&p, v, &err), -1);
    assert_non_null(strstr(err, "tls14"));
    free(err);
    done(&p);
    const char *a[] = {"--tls-client-auth", "optional", NULL};
    assert_int_equal(parse(&p, a, &err), -1);
    assert_non_null(strstr(err, "optional"));
    free(err);
    done(&p);
    const char *s[] = {"--samesite-auth-cookie", "strict", NULL};
    assert_int_equal(parse(&p, s, &err), -1);
    free(err);
    done(&p);
}

static void
test_validate_access_url(void **state)
{
    struct parsed p;
    static const char *const bad[] = {"example.com", "ftp://example.com", "//example.com",
                                      "http//x"};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        const char *v[] = {"--access-url", bad[i], NULL};
        char *err = validate(v, &p);
        assert_non_null(err);
        assert_string_equal(err, "access-url must include a scheme (e.g. 'http://' or 'https://)");
        free(err);
        done(&p);
    }
    /* Trailing slashes go: paths are appended to it. */
    const char *v[] = {"--access-url", "https://coder.example.com///", NULL};
    assert_null(validate(v, &p));
    assert_string_equal(p.o.access_url, "https://coder.example.com");
    done(&p);
}

static void
test_validate_wildcard(void **state)
{
    struct parsed p;
    const char *bad[] = {"--wildcard-access-url", "apps.example.com", NULL};
    char *err = validate(bad, &p);
    assert_non_null(err);
    assert_true(str_has_prefix(err, "Wildcard URL is invalid. \"apps.example.com\": "));
    free(err);
    done(&p);
    const char *ok[] = {"--wildcard-access-url", "*.apps.example.com:8443", NULL};
    assert_null(validate(ok, &p));
    done(&p);
}

static void
test_validate_listeners_and_tls_pairs(void **state)
{
    struct parsed p;
    const char *none[] = {"--http-address", "", NULL};
    char *err = validate(none, &p);
    assert_string_equal(err, "TLS is disabled. Enable with --tls-enable or specify a HTTP address");
    free(err);
    done(&p);
    /* TLS alone is enough, with or without a certificate (a self-signed one is made). */
    const char *tls_only[] = {"--http-address", "", "--tls-enable", NULL};
    assert_null(validate(tls_only, &p));
    done(&p);
    /* A key without its certificate, or one pair short: Coder's words. */
    static const char *const key_only[] = {"--tls-enable", "--tls-key-file", "k.pem", NULL};
    static const char *const cert_only[] = {"--tls-enable", "--tls-cert-file", "c.pem", NULL};
    static const char *const short_one[] = {"--tls-enable",   "--tls-cert-file", "a.pem,b.pem",
                                            "--tls-key-file", "a.key",           NULL};
    static const char *const *const mismatched[] = {key_only, cert_only, short_one};
    for (size_t i = 0; i < ARRAY_LEN(mismatched); i++) {
        err = validate(mismatched[i], &p);
        assert_non_null(err);
        assert_string_equal(err,
                            "--tls-cert-file and --tls-key-file must be used the same amount of "
                            "times");
        free(err);
        done(&p);
    }
    /* Without --tls-enable the files are not used, so not checked. */
    const char *off[] = {"--tls-key-file", "k.pem", NULL};
    assert_null(validate(off, &p));
    done(&p);
}

static void
test_validate_hsts_options(void **state)
{
    struct parsed p;
    const char *v[] = {"--strict-transport-security-options", "PRELOAD,includesubdomains", NULL};
    assert_null(validate(v, &p));
    assert_string_equal(p.o.hsts_header_options, "preload; includeSubDomains");
    done(&p);
    const char *bad[] = {"--strict-transport-security-options", "includeSubDomains,max-age=1",
                         NULL};
    char *err = validate(bad, &p);
    assert_string_equal(err, "hsts: invalid option: max-age=1. Must be \"preload\" and/or "
                             "\"includeSubDomains\"");
    free(err);
    done(&p);
    assert_null(validate(NULL, &p));
    assert_string_equal(p.o.hsts_header_options, "");
    done(&p);
}

static void
test_validate_limits_and_origins(void **state)
{
    struct parsed p;
    static const char *const out_of_range[] = {"0", "-1", "1000001"};
    for (size_t i = 0; i < ARRAY_LEN(out_of_range); i++) {
        const char *v[] = {"--max-agent-tunnels", out_of_range[i], NULL};
        char *err = validate(v, &p);
        assert_string_equal(err, "--max-agent-tunnels must be between 1 and 1000000");
        free(err);
        done(&p);
    }
    const char *edge[] = {"--max-agent-tunnels", "1000000", NULL};
    assert_null(validate(edge, &p));
    done(&p);
    const char *cidr[] = {"--proxy-trusted-headers", "X-Forwarded-For", "--proxy-trusted-origins",
                          "10.0.0.0/33", NULL};
    char *err = validate(cidr, &p);
    assert_string_equal(err, "parse proxy trusted origins: invalid CIDR address: 10.0.0.0/33");
    free(err);
    done(&p);
    const char *ok[] = {"--proxy-trusted-headers", "X-Forwarded-For", "--proxy-trusted-origins",
                        "10.0.0.0/8", NULL};
    assert_null(validate(ok, &p));
    assert_non_null(p.o.realip);
    done(&p);
}

static void
on_shutdown(void *arg)
{
    *(bool *)arg = true;
}

/* Opens the listeners of argv on a loop that is never run until the shutdown. */
static int
listen_with(const char *const *argv, struct parsed *p, char **err)
{
    assert_null(validate(argv, p));
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct http_server_opts so = {0};
    struct http_server *srv = http_server_new(&loop, &so);
    int rc = serveropts_listen(&p->o, srv, err);
    bool down = false;
    http_server_shutdown(srv, 0, on_shutdown, &down);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_true(down);
    http_server_free(srv);
    assert_int_equal(uv_loop_close(&loop), 0);
    return rc;
}

static void
test_listen_tls_without_certificate(void **state)
{
    struct parsed p;
    char *err = NULL;
    const char *v[] = {"--http-address", "127.0.0.1:0", "--tls-enable",
                       "--tls-address",  "127.0.0.1:0", NULL};
    assert_int_equal(listen_with(v, &p, &err), 0);
    assert_null(err);
    assert_non_null(p.o.tls); /* self-signed, made in memory */
    assert_true(str_has_prefix(p.o.http_url, "http://127.0.0.1:"));
    assert_true(str_has_prefix(p.o.tls_url, "https://127.0.0.1:"));
    assert_string_not_equal(p.o.tls_url + 8, "127.0.0.1:0"); /* the bound port */
    done(&p);
    assert_null(p.o.tls);
}

static void
test_listen_refuses_bad_tls(void **state)
{
    struct parsed p;
    char *err = NULL;
    const char *missing[] = {"--http-address",        "",
                             "--tls-enable",          "--tls-address",
                             "127.0.0.1:0",           "--tls-cert-file",
                             "/nonexistent/cert.pem", "--tls-key-file",
                             "/nonexistent/key.pem",  NULL};
    assert_int_equal(listen_with(missing, &p, &err), -1);
    assert_true(str_has_prefix(err, "load TLS certificate \"/nonexistent/cert.pem\": "));
    assert_null(strchr(err, '\n'));
    free(err);
    assert_null(p.o.tls_url);
    done(&p);
    err = NULL;
    const char *ciphers[] = {
        "--http-address", "",  "--tls-enable", "--tls-address", "127.0.0.1:0", "--tls-ciphers",
        "NOT_A_CIPHER",   NULL};
    assert_int_equal(listen_with(ciphers, &p, &err), -1);
    assert_string_equal(err, "invalid --tls-ciphers \"NOT_A_CIPHER\"");
    free(err);
    done(&p);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_names_and_defaults),
        cmocka_unit_test(test_enums_refuse_other_values),
        cmocka_unit_test(test_validate_access_url),
        cmocka_unit_test(test_validate_wildcard),
        cmocka_unit_test(test_validate_listeners_and_tls_pairs),
        cmocka_unit_test(test_validate_hsts_options),
        cmocka_unit_test(test_validate_limits_and_origins),
        cmocka_unit_test(test_listen_tls_without_certificate),
        cmocka_unit_test(test_listen_refuses_bad_tls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
