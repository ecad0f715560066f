/* Extra request headers from Coder's global --header (key=value, repeatable) and
 * --header-command (a command printing key=value lines). */
#ifndef HTTP_HEADERS_H
#define HTTP_HEADERS_H

#include "conf/conf.h"

/* Builds a NULL-terminated list of "Name: value" strings (free with headers_free). Returns 0,
 * or -1 with *err set (bad key=value, command failure). */
int headers_build(const struct conf_strv *kv, const char *command, char ***out, char **err);
void headers_free(char **h);
/* Returns a new NULL-terminated list: a's entries then the extra ones (strings duplicated). */
char **headers_concat(char *const *a, const char *const *extra);

#endif
