#include "conf/global.h"
#include "base/util.h"

#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct conf_opt *
global_opts_append(const struct conf_opt *opts, size_t nopts, struct global_opts *g, size_t *n)
{
    const struct conf_opt globals[] = {
        {.flag = "url",
         .env = "CODER_URL",
         .help = "URL to a deployment.",
         .type = CONF_STRING,
         .dest = &g->url,
         .group = "Global"},
        {.flag = "token",
         .env = "CODER_SESSION_TOKEN",
         .help = "Specify an authentication token. For security reasons setting "
                 "CODER_SESSION_TOKEN is preferred.",
         .type = CONF_STRING,
         .dest = &g->token,
         .group = "Global"},
        {.flag = "global-config",
         .env = "CODER_CONFIG_DIR",
         .def = "~/.config/coderv2",
         .help = "Path to the global `coder` config directory.",
         .type = CONF_STRING,
         .dest = &g->config_dir,
         .group = "Global"},
        {.flag = "header",
         .env = "CODER_HEADER",
         .help = "Additional HTTP headers added to all requests. Provide as key=value. Can be "
                 "specified multiple times.",
         .type = CONF_STRING_ARRAY,
         .dest = &g->headers,
         .group = "Global"},
        {.flag = "header-command",
         .env = "CODER_HEADER_COMMAND",
         .help = "An external command that outputs additional HTTP headers added to all "
                 "requests. The command must output each header as `key=value` on its own line.",
         .type = CONF_STRING,
         .dest = &g->header_command,
         .group = "Global"},
        {.flag = "verbose",
         .shorthand = 'v',
         .env = "CODER_VERBOSE",
         .help = "Enable verbose output.",
         .type = CONF_BOOL,
         .dest = &g->verbose,
         .group = "Global"},
        {.flag = "force-tty",
         .env = "CODER_FORCE_TTY",
         .help = "Force the use of a TTY.",
         .type = CONF_BOOL,
         .dest = &g->force_tty,
         .hidden = true,
         .group = "Global"},
        {.flag = "no-version-warning",
         .env = "CODER_NO_VERSION_WARNING",
         .help = "Suppress warning when client and server versions do not match.",
         .type = CONF_BOOL,
         .dest = &g->no_version_warning,
         .group = "Global"},
        {.flag = "no-feature-warning",
         .env = "CODER_NO_FEATURE_WARNING",
         .help = "Suppress warnings about unlicensed features.",
         .type = CONF_BOOL,
         .dest = &g->no_feature_warning,
         .group = "Global"},
        {.flag = "disable-direct-connections",
         .env = "CODER_DISABLE_DIRECT_CONNECTIONS",
         .help = "Disable direct (P2P) connections to workspaces.",
         .type = CONF_BOOL,
         .dest = &g->disable_direct,
         .group = "Global"},
    };
    *n = nopts + ARRAY_LEN(globals);
    struct conf_opt *all = xcalloc(*n, sizeof(*all));
    memcpy(all, opts, nopts * sizeof(*opts));
    memcpy(all + nopts, globals, sizeof(globals));
    return all;
}

static const char *
home_dir(void)
{
    const char *h = getenv("HOME");
    if (h && *h)
        return h;
    struct passwd *pw = getpwuid(getuid());
    return pw ? pw->pw_dir : "/";
}

char *
global_config_dir(const struct global_opts *g)
{
    const char *d = g->config_dir;
    if (d && *d && strcmp(d, "~/.config/coderv2") != 0) {
        if (d[0] == '~' && d[1] == '/')
            return xasprintf("%s/%s", home_dir(), d + 2);
        return xstrdup(d);
    }
    const char *xdg = getenv("XDG_CONFIG_HOME");
    if (xdg && *xdg)
        return xasprintf("%s/coderv2", xdg);
    return xasprintf("%s/.config/coderv2", home_dir());
}
