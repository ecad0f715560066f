/* Options every command accepts (Coder's root flags): --url, --token, --global-config,
 * --header, --header-command, --verbose, ... and where the config directory is. */
#ifndef CONF_GLOBAL_H
#define CONF_GLOBAL_H

#include "conf/conf.h"

struct global_opts {
    char *url;
    char *token;
    char *config_dir;
    struct conf_strv headers;
    char *header_command;
    bool verbose;
    bool force_tty;
    bool no_version_warning;
    bool no_feature_warning;
    bool disable_direct;
};

/* Returns a new table: the command's options followed by the global ones bound to g.
 * *n receives the total count. Free with free(). */
struct conf_opt *global_opts_append(const struct conf_opt *opts, size_t nopts,
                                    struct global_opts *g, size_t *n);
/* The config directory: --global-config / $CODER_CONFIG_DIR, else $XDG_CONFIG_HOME/coderv2,
 * else ~/.config/coderv2. Returns a new string. */
char *global_config_dir(const struct global_opts *g);

#endif
