/* What every client subcommand shares: its parsed options, the config directory with the
 * session, requests to the deployment's API, and error and table output. */
#ifndef CLI_CLI_H
#define CLI_CLI_H

#include "base/buf.h"
#include "conf/conf.h"
#include "conf/global.h"

#include <jansson.h>
#include <stdbool.h>

struct cli {
    struct global_opts g;
    struct conf_cmd cmd;
    struct conf_opt *all;
    struct conf_result res;
    char *config_dir;
    char *url;      /* deployment URL without trailing slash (NULL until known) */
    char *token;    /* session token (NULL until known) */
    char **headers; /* extra headers from --header / --header-command */
};

/* Parses argv for a command with its own options (plus the global ones). Returns 1 when the
 * command should go on, 0 when it is done (help printed), -1 after printing an error. */
int cli_parse(struct cli *c, const char *usage, const char *desc, const struct conf_opt *opts,
              size_t nopts, int argc, char **argv);
void cli_fini(struct cli *c);
/* Loads url and session from flags, env or the config directory. Prints Coder's "You are not
 * logged in" line and returns -1 when there is none. */
int cli_require_session(struct cli *c);

/* Prints "error: <msg>" (one line) to stderr and returns 1, the exit code. */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Calls the API. body may be NULL. On a 2xx answer returns 0 with *out (may be NULL for no
 * body; caller decrefs) and *status. Otherwise prints one error line and returns -1. */
int cli_api(struct cli *c, const char *method, const char *path, json_t *body, json_t **out,
            long *status);
/* The one line an API error answer (status, JSON body or NULL) prints, in the order of Coder's
 * formatCoderSDKError: the message, "N validation error(s) found" and each "field: detail",
 * the 401's suggestion (which hides the detail), else the detail. Coder gives each its own
 * line; ours are sentences on one. Returns a new string. */
char *cli_api_error(long status, json_t *body);
/* Like cli_api but returns the status and body of any HTTP answer without printing; -1 only
 * when no answer arrived (*err set). */
int cli_api_raw(struct cli *c, const char *method, const char *path, json_t *body, json_t **out,
                long *status, char **err, bool *is_coder);

/* Reads/writes config-dir files ("session", "url"): written 0600, no trailing newline. */
char *cli_config_read(struct cli *c, const char *name);
int cli_config_write(struct cli *c, const char *name, const char *value);
void cli_config_remove(struct cli *c, const char *name);

/* Asks a question as Coder's cliui.Prompt does: "> question (def) " on stdout, the answer one
 * line of stdin, whether a terminal or a pipe. Returns a new string (def when the answer is
 * empty), or NULL at end of input. secret hides the echo on a terminal. */
char *cli_prompt(const char *question, const char *def, bool secret);
/* Checks an answer: NULL when it is good, else the line to print before asking again. */
typedef const char *(*cli_prompt_check)(const char *answer, void *arg);
/* cli_prompt, asked again until check accepts the answer (or input ends: NULL). */
char *cli_prompt_checked(const char *question, const char *def, bool secret, cli_prompt_check check,
                         void *arg);
/* Whether stdin is a terminal, or --force-tty says to act as if (Coder's isTTYIn). */
/* Asks (checked when check is set; it gets a NULL arg) and replaces *dest with the answer.
 * At end of input prints "no answer to ..." and returns -1. */
int cli_prompt_set(char **dest, const char *question, const char *def, bool secret,
                   cli_prompt_check check);
bool cli_stdin_is_tty(const struct cli *c);
/* The --yes/-y option every confirming command has. */
#define CLI_OPT_YES(ptr)                                                                           \
    {                                                                                              \
        .flag = "yes", .shorthand = 'y', .type = CONF_BOOL, .dest = (ptr),                         \
        .help = "Bypass prompts."                                                                  \
    }
/* Asks "question (yes/no)". Returns 1 for "yes" or "y" (any case; def when the answer is
 * empty), 0 for anything else, -1 at end of input. */
int cli_ask_yes(const char *question, const char *def);
/* Asks question (yes/no, def when the answer is empty) unless yes. Returns 0 on "yes" or "y"
 * (any case); otherwise, end of input included, prints a one-line refusal and returns 1. */
int cli_confirm(bool yes, const char *question, const char *def);

/* A table: header names, then rows of cells; columns padded, separated by two spaces. */
struct cli_table {
    char **head;
    size_t ncols;
    char ***rows;
    size_t nrows;
};
void cli_table_init(struct cli_table *t, const char *const *head, size_t ncols);
/* Adds a row of ncols cells (copied). */
void cli_table_add(struct cli_table *t, const char *const *cells);
void cli_table_print(const struct cli_table *t);
void cli_table_fini(struct cli_table *t);

/* Splits "-c" columns (comma-separated, repeatable; def when none), lower-cases them and checks
 * each against known_cols (NULL-terminated). Returns the count, or -1 after printing an error
 * ("unknown column"). Free with cli_columns_free. */
int cli_parse_columns(const struct conf_strv *cols, const char *def, const char *const *known_cols,
                      char ***out);
void cli_columns_free(char **v, int n);

/* Prints a JSON value indented as Go's json.MarshalIndent with two spaces. */
void cli_print_json(json_t *j);

#endif
