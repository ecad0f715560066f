/* The command table of the `coder` binary; nothing else lives here. */
#include "agent/agent.h"
#include "cli/commands.h"
#include "server/server.h"
#include "wsproxy/wsproxy.h"

#include <stdio.h>
#include <string.h>

struct command {
    const char *name;
    const char *alias;
    int (*run)(int argc, char **argv);
    const struct command *sub;
    const char *desc;
};

static const struct command wsproxy_cmds[] = {
    {"server", NULL, wsproxy_main, NULL, "Start a workspace proxy server"},
    {"create", NULL, cmd_wsproxy_create, NULL, "Create a workspace proxy"},
    {"ls", "list", cmd_wsproxy_ls, NULL, "List all workspace proxies"},
    {"edit", NULL, cmd_wsproxy_edit, NULL, "Edit a workspace proxy"},
    {"delete", "rm", cmd_wsproxy_delete, NULL, "Delete a workspace proxy"},
    {"regenerate-token", NULL, cmd_wsproxy_regenerate_token, NULL,
     "Regenerate a workspace proxy authentication token"},
    {NULL, NULL, NULL, NULL, NULL},
};

static const struct command root_cmds[] = {
    {"server", NULL, server_main, NULL, "Start a Coder server"},
    {"workspace-proxy", "wsproxy", NULL, wsproxy_cmds,
     "Workspace proxies provide low-latency experiences for geo-distributed teams."},
    {"agent", NULL, agent_main, NULL, "Starts the Coder workspace agent."},
    {"create", NULL, cmd_create, NULL, "Create a workspace"},
    {"list", "ls", cmd_list, NULL, "List workspaces"},
    {"delete", "rm", cmd_delete, NULL, "Delete a workspace"},
    {"port-forward", "tunnel", cmd_port_forward, NULL,
     "Forward ports from a workspace to the local machine."},
    {"login", NULL, cmd_login, NULL, "Authenticate with Coder deployment"},
    {"logout", NULL, cmd_logout, NULL, "Unauthenticate your local session"},
    {"version", NULL, cmd_version, NULL, "Show coder version"},
    {NULL, NULL, NULL, NULL, NULL},
};

static void
usage(FILE *out, const char *path, const struct command *cmds)
{
    fprintf(out, "USAGE:\n  %s <subcommand>\n\nSUBCOMMANDS:\n", path);
    for (const struct command *c = cmds; c->name; c++)
        fprintf(out, "    %-18s %s\n", c->name, c->desc);
}

int
main(int argc, char **argv)
{
    const struct command *cmds = root_cmds;
    char path[128] = "coder";
    int i = 1;
    if (argc > 1 && strcmp(argv[1], "--version") == 0)
        return cmd_version(0, argv + 2);
    for (;;) {
        if (i >= argc || strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout, path, cmds);
            return 0;
        }
        const struct command *found = NULL;
        for (const struct command *c = cmds; c->name; c++) {
            if (strcmp(argv[i], c->name) == 0 || (c->alias && strcmp(argv[i], c->alias) == 0))
                found = c;
        }
        if (found == NULL) {
            fprintf(stderr, "error: unrecognized subcommand \"%s\" for \"%s\"\n", argv[i], path);
            return 1;
        }
        snprintf(path + strlen(path), sizeof(path) - strlen(path), " %s", found->name);
        i++;
        if (found->run)
            return found->run(argc - i, argv + i);
        cmds = found->sub;
    }
}
