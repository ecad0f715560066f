/* The client subcommands; main.c's table points at these. Each takes the arguments after its
 * name and returns the exit code. */
#ifndef CLI_COMMANDS_H
#define CLI_COMMANDS_H

int cmd_login(int argc, char **argv);
int cmd_logout(int argc, char **argv);
int cmd_version(int argc, char **argv);
int cmd_wsproxy_create(int argc, char **argv);
int cmd_wsproxy_ls(int argc, char **argv);
int cmd_wsproxy_edit(int argc, char **argv);
int cmd_wsproxy_delete(int argc, char **argv);
int cmd_wsproxy_regenerate_token(int argc, char **argv);
int cmd_create(int argc, char **argv);
int cmd_list(int argc, char **argv);
int cmd_delete(int argc, char **argv);
int cmd_port_forward(int argc, char **argv);

#endif
