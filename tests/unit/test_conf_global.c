/* The options every command takes (conf/global.c): Coder's root flags and variables, and where
 * the config directory is. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/util.h"
#include "conf/global.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const global_env[] = {"CODER_URL",
                                         "CODER_SESSION_TOKEN",
                                         "CODER_CONFIG_DIR",
                                         "CODER_HEADER",
                                         "CODER_HEADER_COMMAND",
                                         "CODER_VERBOSE",
                                         "CODER_FORCE_TTY",
                                         "CODER_NO_VERSION_WARNING",
                                         "CODER_NO_FEATURE_WARNING",
                                         "CODER_DISABLE_DIRECT_CONNECTIONS"};

static int
clear_env(void **state)
{
    for (size_t i = 0; i < ARRAY_LEN(global_env); i++)
        unsetenv(global_env[i]);
    unsetenv("XDG_CONFIG_HOME");
    return 0;
}

struct parsed {
    struct global_opts g;
    char *name;
    struct conf_opt *all;
    size_t n;
    struct conf_cmd cmd;
    struct conf_result res;
};

/* A command with one option of its own (--name), and the globals after it. */
static int
parse(struct parsed *p, const char *const *argv, char **err)
{
    memset(p, 0, sizeof(*p));
    const struct conf_opt own[] = {
        {.flag = "name", .env = "CODER_TEST_NAME", .type = CONF_STRING, .dest = &p->name}};
    p->all = global_opts_append(own, 1, &p->g, &p->n);
    p->cmd = (struct conf_cmd){.usage = "coder test", .opts = p->all, .nopts = p->n};
    int argc = 0;
    while (argv && argv[argc])
        argc++;
    *err = NULL;
    return conf_parse(&p->cmd, argc, (char **)argv, &p->res, err);
}

static void
done(struct parsed *p)
{
    conf_free_values(&p->cmd, &p->res);
    free(p->all);
}

static const struct conf_opt *
find(const struct parsed *p, const char *flag)
{
    for (size_t i = 0; i < p->n; i++) {
        if (str_eq(p->all[i].flag, flag))
            return &p->all[i];
    }
    return NULL;
}

static void
test_table(void **state)
{
    struct parsed p;
    char *err;
    assert_int_equal(parse(&p, NULL, &err), 0);
    assert_int_equal(p.n, 1 + 10);
    assert_string_equal(p.all[0].flag, "name"); /* the command's own come first */
    static const char *const want[][2] = {
        {"url", "CODER_URL"},
        {"token", "CODER_SESSION_TOKEN"},
        {"global-config", "CODER_CONFIG_DIR"},
        {"header", "CODER_HEADER"},
        {"header-command", "CODER_HEADER_COMMAND"},
        {"verbose", "CODER_VERBOSE"},
        {"force-tty", "CODER_FORCE_TTY"},
        {"no-version-warning", "CODER_NO_VERSION_WARNING"},
        {"no-feature-warning", "CODER_NO_FEATURE_WARNING"},
        {"disable-direct-connections", "CODER_DISABLE_DIRECT_CONNECTIONS"},
    };
    for (size_t i = 0; i < ARRAY_LEN(want); i++) {
        const struct conf_opt *o = find(&p, want[i][0]);
        assert_non_null(o);
        assert_string_equal(o->env, want[i][1]);
        assert_string_equal(o->group, "Global");
        assert_int_equal(o->hidden, str_eq(want[i][0], "force-tty"));
    }
    assert_int_equal(find(&p, "verbose")->shorthand, 'v');
    assert_int_equal(find(&p, "header")->type, CONF_STRING_ARRAY);
    /* Nothing given: nothing set but the config directory's default. */
    assert_null(p.g.url);
    assert_null(p.g.token);
    assert_false(p.g.verbose);
    assert_int_equal(p.g.headers.n, 0);
    assert_string_equal(p.g.config_dir, "~/.config/coderv2");
    done(&p);
}

static void
test_flags_and_environment(void **state)
{
    struct parsed p;
    char *err;
    setenv("CODER_URL", "https://env.example.com", 1);
    setenv("CODER_SESSION_TOKEN", "0123456789-abcdefghijklmnopqrstuv", 1);
    setenv("CODER_HEADER", "X-A=1,X-B=2", 1);
    setenv("CODER_VERBOSE", "true", 1);
    assert_int_equal(parse(&p, NULL, &err), 0);
    assert_string_equal(p.g.url, "https://env.example.com");
    assert_string_equal(p.g.token, "0123456789-abcdefghijklmnopqrstuv");
    assert_int_equal(p.g.headers.n, 2); /* a variable holds a comma-separated list */
    assert_string_equal(p.g.headers.v[1], "X-B=2");
    assert_true(p.g.verbose);
    done(&p);
    /* A flag beats the variable; --header repeats; -v is --verbose. */
    const char *argv[] = {"--url",    "https://flag.example.com",
                          "--header", "X-C=3",
                          "--header", "X-D=4",
                          "-v",       "--name",
                          "me",       "pos",
                          NULL};
    unsetenv("CODER_VERBOSE");
    assert_int_equal(parse(&p, argv, &err), 0);
    assert_string_equal(p.g.url, "https://flag.example.com");
    assert_int_equal(p.g.headers.n, 2);
    assert_string_equal(p.g.headers.v[0], "X-C=3");
    assert_string_equal(p.g.headers.v[1], "X-D=4");
    assert_true(p.g.verbose);
    assert_string_equal(p.name, "me");
    assert_int_equal(p.res.nargs, 1);
    assert_string_equal(p.res.args[0], "pos");
    done(&p);
    clear_env(NULL);
    const char *bad[] = {"--verbose=maybe", NULL};
    assert_int_equal(parse(&p, bad, &err), -1);
    assert_non_null(strstr(err, "maybe"));
    free(err);
    done(&p);
}

/* global_config_dir for --global-config value dir (NULL: not parsed at all). */
static char *
config_dir(const char *dir)
{
    struct global_opts g = {.config_dir = (char *)dir};
    return global_config_dir(&g);
}

static void
assert_dir(char *got, const char *want)
{
    assert_string_equal(got, want);
    free(got);
}

static void
test_config_dir(void **state)
{
    setenv("HOME", "/home/tester", 1);
    assert_dir(config_dir("/etc/coder-cli"), "/etc/coder-cli");
    assert_dir(config_dir("~/elsewhere"), "/home/tester/elsewhere");
    assert_dir(config_dir("~user/x"), "~user/x"); /* only "~/" is the home directory */
    /* The default (or nothing): $XDG_CONFIG_HOME/coderv2, else ~/.config/coderv2. */
    assert_dir(config_dir("~/.config/coderv2"), "/home/tester/.config/coderv2");
    assert_dir(config_dir(NULL), "/home/tester/.config/coderv2");
    assert_dir(config_dir(""), "/home/tester/.config/coderv2");
    setenv("XDG_CONFIG_HOME", "/xdg", 1);
    assert_dir(config_dir("~/.config/coderv2"), "/xdg/coderv2");
    assert_dir(config_dir(NULL), "/xdg/coderv2");
    assert_dir(config_dir("/explicit"), "/explicit"); /* a given directory wins */
    setenv("XDG_CONFIG_HOME", "", 1);
    assert_dir(config_dir(NULL), "/home/tester/.config/coderv2");
    /* Through the environment, as the CLI reads it. */
    unsetenv("XDG_CONFIG_HOME");
    setenv("CODER_CONFIG_DIR", "~/from-env", 1);
    struct parsed p;
    char *err;
    assert_int_equal(parse(&p, NULL, &err), 0);
    assert_dir(global_config_dir(&p.g), "/home/tester/from-env");
    done(&p);
    const char *argv[] = {"--global-config", "/from/flag", NULL};
    assert_int_equal(parse(&p, argv, &err), 0);
    assert_dir(global_config_dir(&p.g), "/from/flag");
    done(&p);
    unsetenv("CODER_CONFIG_DIR");
    /* No $HOME: the password database's home directory. */
    unsetenv("HOME");
    char *d = config_dir(NULL);
    assert_true(str_has_prefix(d, "/"));
    assert_true(str_has_suffix(d, "/.config/coderv2"));
    free(d);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_table, clear_env),
        cmocka_unit_test_setup(test_flags_and_environment, clear_env),
        cmocka_unit_test_setup(test_config_dir, clear_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
