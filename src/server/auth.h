/* Credentials: user passwords (PBKDF2-SHA256 in Coder's format), API keys ("<10>-<22>"), and
 * workspace proxy tokens ("<uuid>:<64 hex>"). Only hashes are stored; comparisons are
 * constant-time. */
#ifndef SERVER_AUTH_H
#define SERVER_AUTH_H

#include <stdbool.h>
#include <stdint.h>

/* Hashes a password as "$pbkdf2-sha256$65535$<salt>$<hash>" (raw base64). Returns a new string. */
char *auth_password_hash(const char *password);
/* Checks a password against a stored hash (any iteration count). An empty or malformed hash
 * still costs one derivation, so timing does not tell whether the user exists. */
bool auth_password_verify(const char *password, const char *hashed);
/* Checks password strength as Coder does. Returns NULL if acceptable, else a new message
 * ("insecure password, try ..." or "password must be no more than 64 characters"). */
char *auth_password_check(const char *password);

#define APIKEY_ID_LEN 10
#define APIKEY_SECRET_LEN 22

/* Makes a new API key: writes the id and the full token "<id>-<secret>" (caller frees) and
 * the secret's hash. */
void auth_apikey_new(char id[APIKEY_ID_LEN + 1], char **token, uint8_t hash[32]);
/* Splits a presented token. Returns 0, or -1 with *detail set to Coder's message (static). */
int auth_apikey_split(const char *token, char id[APIKEY_ID_LEN + 1], uint8_t hash[32],
                      const char **detail);

/* Makes a proxy token "<proxy_id>:<64 hex>" (caller frees) and the hash of its secret. */
char *auth_proxy_token_new(const char *proxy_id, uint8_t hash[32]);
/* Splits a presented proxy token into id and hash. Returns 0, or -1 with *detail set. */
int auth_proxy_token_split(const char *token, char id[37], uint8_t hash[32], const char **detail);

#endif
