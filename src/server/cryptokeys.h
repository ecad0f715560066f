/* Crypto keys at the primary: made at first start, rotated on an interval; see cryptokeys.c. */
#ifndef SERVER_CRYPTOKEYS_H
#define SERVER_CRYPTOKEYS_H

#include "primary.h"

/* Gives every feature a key in use, replacing any older than interval_ms (store thread, or at
 * start-up before the worker runs). Returns 0 or -1. */
int cryptokeys_rotate(struct store *st, int64_t now, int64_t interval_ms);

struct cryptokeys;
/* Checks the keys periodically on the store thread. */
struct cryptokeys *cryptokeys_start(struct primary *p, int64_t interval_ms);
void cryptokeys_stop(struct cryptokeys *ck);

#endif
