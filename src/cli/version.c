/* `coder version`. */
#include "base/util.h"
#include "cli.h"
#include "commands.h"

#include <stdio.h>
#include <string.h>

int
cmd_version(int argc, char **argv)
{
    static const char *const formats[] = {"text", "json", NULL};
    char *output = NULL;
    const struct conf_opt opts[] = {
        {.flag = "output",
         .shorthand = 'o',
         .type = CONF_ENUM,
         .enum_values = formats,
         .def = "text",
         .dest = &output,
         .help = "Output format."},
    };
    struct cli c = {0};
    int r = cli_parse(&c, "coder version [flags]", "Show coder version", opts, ARRAY_LEN(opts),
                      argc, argv);
    if (r > 0) {
        if (strcmp(output, "json") == 0) {
            json_t *j =
                json_pack("{s:s, s:s, s:s, s:b, s:b, s:b}", "version", CODER_VERSION, "build_time",
                          "", "external_url", "https://github.com/coder/coder", "slim", 0, "agpl",
                          0, "boring_crypto", 0);
            cli_print_json(j);
            json_decref(j);
        } else {
            printf("Coder %s\r\nhttps://github.com/coder/coder\r\n\r\nFull build of Coder, "
                   "supports the server subcommand.\n",
                   CODER_VERSION);
        }
    }
    cli_fini(&c);
    return r < 0;
}
