/* Options declared once, in a table, from which flags, environment variables, the YAML config
 * file, --help and --write-config all come (Redis static_configs[], nginx ngx_command_t).
 * Precedence, lowest to highest: default < YAML file < environment < flag (as Coder's serpent). */
#ifndef CONF_CONF_H
#define CONF_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum conf_type {
    CONF_STRING,       /* dest: char ** (owned, freed by conf_free_values) */
    CONF_BOOL,         /* dest: bool *; flag form --x, --x=true|false; env "true"/"false"/"1"/"0" */
    CONF_INT,          /* dest: int64_t * */
    CONF_DURATION,     /* dest: int64_t * milliseconds; Go syntax "1m0s", "5s" */
    CONF_STRING_ARRAY, /* dest: struct conf_strv *; flag repeatable, env/flag value comma-split,
                          YAML sequence */
    CONF_ENUM,         /* dest: char **; value must be one of enum_values */
};

struct conf_strv {
    char **v;
    size_t n;
};

struct conf_opt {
    const char *flag;  /* long flag without dashes, e.g. "http-address" */
    char shorthand;    /* single-letter flag, e.g. 'o', or 0 */
    const char *env;   /* e.g. "CODER_HTTP_ADDRESS", or NULL */
    const char *yaml;  /* dotted YAML path, e.g. "networking.http.httpAddress", or NULL */
    const char *group; /* help group, e.g. "Networking / HTTP", or NULL for none */
    const char *def;   /* default value as text, or NULL */
    const char *help;  /* one paragraph */
    enum conf_type type;
    void *dest;
    const char *const *enum_values; /* NULL-terminated, for CONF_ENUM (and CONF_STRING_ARRAY
                                       members when set) */
    bool hidden;                    /* parsed, not shown in --help */
    const char *type_label;         /* the value's name in --help when not its type's */
    bool whole; /* CONF_STRING_ARRAY: each flag or variable is one value, commas included */
};

/* What a command declares about itself for parsing and --help. */
struct conf_cmd {
    const char *usage;      /* "coder wsproxy server [flags]" */
    const char *short_desc; /* one line */
    const struct conf_opt *opts;
    size_t nopts;
    /* When set, these options are read from the YAML file named by the option whose
     * flag is "config" (env CODER_CONFIG_PATH), and "--write-config" prints the YAML. */
    bool yaml_config;
};

struct conf_result {
    char **args; /* positional arguments, in order (borrowed from argv) */
    size_t nargs;
    bool help;         /* --help / -h was given: the caller prints conf_help() and exits 0 */
    bool write_config; /* --write-config was given: caller prints conf_write_yaml() */
};

/* Parses argv (argv[0] is the first argument after the command name, not the program name)
 * with the precedence above. Sets every dest (defaults included). On error returns -1 and sets
 * *err to one line such as `invalid value "x" for flag --tls-min-version: ...` (caller frees).
 * Unknown flags are errors: `unknown flag: --foo`. "--" ends flags. */
int conf_parse(const struct conf_cmd *cmd, int argc, char **argv, struct conf_result *res,
               char **err);
/* Frees what conf_parse allocated in the dests and in res. */
void conf_free_values(const struct conf_cmd *cmd, struct conf_result *res);
/* Writes --help text (serpent layout: USAGE, description, OPTIONS grouped) to a new string. */
char *conf_help(const struct conf_cmd *cmd);
/* Writes the current values of options that have a yaml path as a YAML document. */
char *conf_write_yaml(const struct conf_cmd *cmd);
/* Prints what --help or --write-config asked for to stdout. Returns true when it did: the
 * command has nothing else to do. */
bool conf_print_requested(const struct conf_cmd *cmd, const struct conf_result *res);
/* Returns where an option's value came from: "default", "yaml", "env" or "flag". */
const char *conf_source(const struct conf_cmd *cmd, const char *flag);

#endif
