/* `coder server`. */
#ifndef SERVER_SERVER_H
#define SERVER_SERVER_H

/* Runs the primary until SIGINT/SIGTERM. argv excludes "server". Returns the exit code. */
int server_main(int argc, char **argv);

#endif
