/* The option table: precedence of default < YAML < environment < flag, the flag grammar, the
 * errors a user sees for bad values, --help and a --write-config file that loads back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/util.h"
#include "conf/conf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const auth_modes[] = {"none", "request", "require-and-verify", NULL};

struct vals {
    char *addr;
    bool tls;
    int64_t n;
    int64_t interval;
    struct conf_strv certs;
    struct conf_strv specs;
    char *auth;
    char *config;
    char *output;
};

static struct vals v;

static const struct conf_opt opts[] = {
    {.flag = "http-address",
     .env = "TCONF_HTTP_ADDRESS",
     .yaml = "networking.http.httpAddress",
     .group = "Networking / HTTP",
     .def = "127.0.0.1:3000",
     .help = "HTTP bind address of the server.",
     .type = CONF_STRING,
     .dest = &v.addr},
    {.flag = "tls-enable",
     .env = "TCONF_TLS_ENABLE",
     .yaml = "networking.tls.enable",
     .help = "Whether TLS will be enabled.",
     .type = CONF_BOOL,
     .dest = &v.tls},
    {.flag = "count",
     .env = "TCONF_COUNT",
     .yaml = "count",
     .def = "3",
     .type = CONF_INT,
     .dest = &v.n},
    {.flag = "interval",
     .env = "TCONF_INTERVAL",
     .yaml = "networking.interval",
     .def = "1m0s",
     .type = CONF_DURATION,
     .dest = &v.interval},
    {.flag = "tls-cert-file",
     .env = "TCONF_TLS_CERT_FILE",
     .yaml = "networking.tls.certFiles",
     .type = CONF_STRING_ARRAY,
     .dest = &v.certs},
    {.flag = "tls-client-auth",
     .env = "TCONF_TLS_CLIENT_AUTH",
     .yaml = "networking.tls.clientAuth",
     .def = "none",
     .type = CONF_ENUM,
     .dest = &v.auth,
     .enum_values = auth_modes},
    {.flag = "spec",
     .env = "TCONF_SPEC",
     .type = CONF_STRING_ARRAY,
     .whole = true,
     .dest = &v.specs},
    {.flag = "config",
     .shorthand = 'c',
     .env = "TCONF_CONFIG_PATH",
     .type = CONF_STRING,
     .type_label = "yaml-config-path",
     .dest = &v.config},
    {.flag = "output",
     .shorthand = 'o',
     .def = "table",
     .type = CONF_STRING,
     .dest = &v.output,
     .hidden = true},
};

static const struct conf_cmd cmd = {.usage = "coder test [flags]",
                                    .short_desc = "Test things",
                                    .opts = opts,
                                    .nopts = sizeof(opts) / sizeof(opts[0]),
                                    .yaml_config = true};

static void
clear_env(void)
{
    for (size_t i = 0; i < cmd.nopts; i++)
        unsetenv(opts[i].env ? opts[i].env : "TCONF_NONE");
}

static int
parse(struct conf_result *res, char **err, int argc, ...)
{
    static char *argv[32];
    va_list ap;
    va_start(ap, argc);
    for (int i = 0; i < argc; i++)
        argv[i] = va_arg(ap, char *);
    va_end(ap);
    return conf_parse(&cmd, argc, argv, res, err);
}

static char *
write_tmp(const char *text)
{
    char *path = xstrdup("/tmp/test_conf_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void
test_defaults(void **state)
{
    (void)state;
    clear_env();
    struct conf_result res;
    char *err = NULL;
    assert_int_equal(parse(&res, &err, 0), 0);
    assert_string_equal(v.addr, "127.0.0.1:3000");
    assert_false(v.tls);
    assert_int_equal(v.n, 3);
    assert_int_equal(v.interval, 60000);
    assert_int_equal(v.certs.n, 0);
    assert_string_equal(v.auth, "none");
    assert_null(v.config);
    assert_string_equal(conf_source(&cmd, "http-address"), "default");
    conf_free_values(&cmd, &res);
}

static void
test_flag_grammar(void **state)
{
    (void)state;
    clear_env();
    struct conf_result res;
    char *err = NULL;
    assert_int_equal(parse(&res, &err, 10, "pos1", "--http-address", "0.0.0.0:80", "--tls-enable",
                           "--count=7", "-o", "json", "--tls-cert-file=a.pem,b.pem", "--",
                           "--not-a-flag"),
                     0);
    assert_string_equal(v.addr, "0.0.0.0:80");
    assert_true(v.tls);
    assert_int_equal(v.n, 7);
    assert_string_equal(v.output, "json");
    assert_int_equal(v.certs.n, 2);
    assert_string_equal(v.certs.v[1], "b.pem");
    assert_int_equal(res.nargs, 2);
    assert_string_equal(res.args[0], "pos1");
    assert_string_equal(res.args[1], "--not-a-flag");
    assert_string_equal(conf_source(&cmd, "count"), "flag");
    conf_free_values(&cmd, &res);

    /* Booleans take a value only after '='; a repeated array flag appends. */
    assert_int_equal(
        parse(&res, &err, 5, "--tls-enable=false", "--tls-cert-file", "x", "--tls-cert-file", "y"),
        0);
    assert_false(v.tls);
    assert_int_equal(v.certs.n, 2);
    assert_string_equal(v.certs.v[0], "x");
    conf_free_values(&cmd, &res);

    /* A "whole" array keeps commas inside each value. */
    assert_int_equal(parse(&res, &err, 3, "--spec", "a=b,c", "--spec=d,e"), 0);
    assert_int_equal(v.specs.n, 2);
    assert_string_equal(v.specs.v[0], "a=b,c");
    assert_string_equal(v.specs.v[1], "d,e");
    conf_free_values(&cmd, &res);

    assert_int_equal(parse(&res, &err, 1, "-ojson"), 0);
    assert_string_equal(v.output, "json");
    conf_free_values(&cmd, &res);

    assert_int_equal(parse(&res, &err, 1, "-h"), 0);
    assert_true(res.help);
    conf_free_values(&cmd, &res);
    assert_int_equal(parse(&res, &err, 1, "--write-config"), 0);
    assert_true(res.write_config);
    conf_free_values(&cmd, &res);
}

static void
expect_error(const char *want, int argc, char *a0, char *a1)
{
    struct conf_result res;
    char *err = NULL;
    int rc = argc == 1 ? parse(&res, &err, 1, a0) : parse(&res, &err, 2, a0, a1);
    assert_int_equal(rc, -1);
    assert_non_null(err);
    if (strcmp(err, want) != 0)
        fail_msg("got error \"%s\", want \"%s\"", err, want);
    assert_null(strchr(err, '\n'));
    free(err);
    conf_free_values(&cmd, &res);
}

static void
test_errors(void **state)
{
    (void)state;
    clear_env();
    expect_error("unknown flag: --foo", 1, "--foo", NULL);
    expect_error("unknown flag: --foo", 1, "--foo=bar", NULL);
    expect_error("unknown shorthand flag: 'z' in -z", 1, "-z", NULL);
    expect_error("flag needs an argument: --http-address", 1, "--http-address", NULL);
    expect_error("invalid value \"tls9\" for flag --tls-client-auth: must be one of: none, "
                 "request, require-and-verify",
                 2, "--tls-client-auth", "tls9");
    expect_error("invalid value \"maybe\" for flag --tls-enable: must be true or false", 1,
                 "--tls-enable=maybe", NULL);
    expect_error("invalid value \"3x\" for flag --count: must be an integer", 2, "--count", "3x");
    expect_error("invalid value \"soon\" for flag --interval: must be a duration such as \"30s\", "
                 "\"5m\" or \"1h30m\"",
                 2, "--interval", "soon");

    setenv("TCONF_COUNT", "many", 1);
    expect_error("invalid value \"many\" for $TCONF_COUNT: must be an integer", 1, "pos", NULL);
    clear_env();

    char *big = xmalloc(70000);
    memset(big, 'a', 69999);
    big[69999] = '\0';
    expect_error("value for flag --http-address is too long (at most 65536 bytes)", 2,
                 "--http-address", big);
    free(big);
}

static void
test_precedence(void **state)
{
    (void)state;
    clear_env();
    char *path = write_tmp("networking:\n"
                           "  http:\n"
                           "    httpAddress: 10.0.0.1:1\n"
                           "  tls:\n"
                           "    enable: true\n"
                           "    certFiles: [one.pem, two.pem]\n"
                           "  interval: 5s\n"
                           "count: 11\n");
    struct conf_result res;
    char *err = NULL;
    setenv("TCONF_CONFIG_PATH", path, 1);
    assert_int_equal(parse(&res, &err, 0), 0);
    assert_string_equal(v.addr, "10.0.0.1:1");
    assert_true(v.tls);
    assert_int_equal(v.interval, 5000);
    assert_int_equal(v.n, 11);
    assert_int_equal(v.certs.n, 2);
    assert_string_equal(v.certs.v[1], "two.pem");
    assert_string_equal(conf_source(&cmd, "count"), "yaml");
    conf_free_values(&cmd, &res);

    /* The environment beats the file; a flag beats both. */
    setenv("TCONF_HTTP_ADDRESS", "10.0.0.2:2", 1);
    setenv("TCONF_COUNT", "12", 1);
    assert_int_equal(parse(&res, &err, 2, "--count", "13"), 0);
    assert_string_equal(v.addr, "10.0.0.2:2");
    assert_string_equal(conf_source(&cmd, "http-address"), "env");
    assert_int_equal(v.n, 13);
    conf_free_values(&cmd, &res);

    /* A flag naming the file beats the variable. */
    clear_env();
    setenv("TCONF_CONFIG_PATH", "/nonexistent/config.yaml", 1);
    assert_int_equal(parse(&res, &err, 2, "-c", path), 0);
    assert_int_equal(v.n, 11);
    conf_free_values(&cmd, &res);
    clear_env();
    unlink(path);
    free(path);
}

static void
test_yaml_errors(void **state)
{
    (void)state;
    clear_env();
    struct {
        const char *text, *want;
    } cases[] = {
        {"count: [1, 2]\n", "invalid value for count in config file \"%s\": must be a scalar"},
        {"networking:\n  tls:\n    clientAuth: bogus\n",
         "invalid value \"bogus\" for networking.tls.clientAuth in config file \"%s\": must be one "
         "of: none, request, require-and-verify"},
        {"a: [\n", NULL},
        {"- just\n- a list\n",
         "parse config file \"%s\": the document must be a mapping of options"},
        /* Keys that are no option are refused, as Coder does: a typo must not go unnoticed. */
        {"count: 1\nunknownKey: x\n", "config file \"%s\": unknown option \"unknownKey\""},
        {"networking:\n  tls:\n    enable: true\n    enabel: true\n",
         "config file \"%s\": unknown option \"networking.tls.enabel\""},
        {"networking:\n  http:\n    httpAddress:\n      nested: 1\n",
         "invalid value for networking.http.httpAddress in config file \"%s\": must be a scalar"},
        {"networking: 5\n",
         "invalid value for networking in config file \"%s\": must be a mapping of options"},
        {"? [a, b]\n: 1\n", "config file \"%s\": unknown option \"(a list key)\""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *path = write_tmp(cases[i].text);
        struct conf_result res;
        char *err = NULL;
        assert_int_equal(parse(&res, &err, 2, "--config", path), -1);
        assert_non_null(err);
        assert_null(strchr(err, '\n'));
        if (cases[i].want) {
            char *want = xasprintf(cases[i].want, path);
            assert_string_equal(err, want);
            free(want);
        } else {
            assert_non_null(strstr(err, "parse config file"));
        }
        free(err);
        conf_free_values(&cmd, &res);
        unlink(path);
        free(path);
    }
    struct conf_result res;
    char *err = NULL;
    assert_int_equal(parse(&res, &err, 2, "--config", "/nonexistent/x.yaml"), -1);
    assert_string_equal(err, "read config file \"/nonexistent/x.yaml\": No such file or directory");
    free(err);
    conf_free_values(&cmd, &res);
}

static void
test_write_config_round_trip(void **state)
{
    (void)state;
    clear_env();
    struct conf_result res;
    char *err = NULL;
    assert_int_equal(parse(&res, &err, 9, "--http-address", "a \"quoted\"\\value: #x",
                           "--tls-enable", "--tls-cert-file", "c1.pem", "--tls-cert-file",
                           "c,2.pem", "--interval=90s", "--count=-4"),
                     0);
    /* A comma inside one flag value splits; build the odd value through YAML instead. */
    char *yaml = conf_write_yaml(&cmd);
    assert_non_null(strstr(yaml, "# HTTP bind address of the server.\n"));
    assert_non_null(strstr(yaml, "networking:\n  http:\n    # HTTP"));
    conf_free_values(&cmd, &res);

    char *path = write_tmp(yaml);
    assert_int_equal(parse(&res, &err, 2, "--config", path), 0);
    assert_string_equal(v.addr, "a \"quoted\"\\value: #x");
    assert_true(v.tls);
    assert_int_equal(v.certs.n, 3);
    assert_string_equal(v.certs.v[2], "2.pem");
    assert_int_equal(v.interval, 90000);
    assert_int_equal(v.n, -4);
    char *again = conf_write_yaml(&cmd);
    assert_string_equal(yaml, again);
    free(again);
    free(yaml);
    conf_free_values(&cmd, &res);
    unlink(path);
    free(path);
}

static void
test_help(void **state)
{
    (void)state;
    char *h = conf_help(&cmd);
    assert_non_null(strstr(h, "USAGE:\n  coder test [flags]\n\n  Test things\n"));
    assert_non_null(strstr(h, "NETWORKING / HTTP OPTIONS:\n      --http-address string, "
                              "$TCONF_HTTP_ADDRESS (default: 127.0.0.1:3000)\n          HTTP "
                              "bind address of the server.\n"));
    assert_non_null(strstr(h, "  -c, --config yaml-config-path, $TCONF_CONFIG_PATH\n"));
    assert_non_null(strstr(h, "--tls-client-auth none|request|require-and-verify"));
    assert_null(strstr(h, "--output")); /* hidden */
    /* Ungrouped options come before the groups. */
    assert_true(strstr(h, "OPTIONS:\n") < strstr(h, "NETWORKING / HTTP OPTIONS:"));
    free(h);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),    cmocka_unit_test(test_flag_grammar),
        cmocka_unit_test(test_errors),      cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_yaml_errors), cmocka_unit_test(test_write_config_round_trip),
        cmocka_unit_test(test_help),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
