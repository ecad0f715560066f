/* UUIDs in their canonical 36-character text form. */
#ifndef BASE_UUID_H
#define BASE_UUID_H

#include <stdbool.h>

#define UUID_STR_LEN 37 /* 36 characters and the NUL */

/* Writes a new random (version 4) UUID into out. */
void uuid_new(char out[UUID_STR_LEN]);
/* True if s is a canonical UUID (hex digits and dashes at 8-4-4-4-12), any case. */
bool uuid_valid(const char *s);
/* True if s is the all-zero UUID. */
bool uuid_is_nil(const char *s);

#endif
