/* JOSE in the two compact forms Coder uses between the primary and its proxies
 * (CODER-COMPAT §2.3, §2.5): signed app tokens, JWS HS512 with a `kid`; and the API key that
 * crosses domains, JWE A256GCMKW + A256GCM with DEFLATE and a `kid`.
 *
 * Nothing here trusts a token's header: the algorithms are fixed, the key comes from the
 * caller's lookup by `kid`, and sizes are bounded (token 16 KiB, inflated payload 64 KiB). Time
 * claims are checked separately (jose_check_time), so a caller decides the clock and leeway. */
#ifndef JOSE_JWT_H
#define JOSE_JWT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define JOSE_MAX_TOKEN (16u << 10)
#define JOSE_MAX_PAYLOAD (64u << 10)
#define JOSE_MAX_KEY 128

/* Finds the key for kid ("" when the token has none): copies it to key (at most JOSE_MAX_KEY
 * bytes), sets *len and returns 0; returns -1 for an unknown kid. */
typedef int (*jose_key_fn)(const char *kid, uint8_t *key, size_t *len, void *arg);

/* Compact JWS, HS512, header {"alg":"HS512","kid":kid}. Returns a new string. */
char *jose_sign_hs512(const uint8_t *key, size_t keylen, const char *kid, const json_t *claims);
/* Verifies a compact HS512 JWS and returns its claims (a new reference), or NULL with *err (a
 * static one-line reason). The kid found is copied to kid_out when not NULL. */
json_t *jose_verify_hs512(const char *token, jose_key_fn key, void *arg, char *kid_out,
                          size_t kidcap, const char **err);

/* A bounded cache of tokens that passed jose_verify_hs512, so a token presented again (a
 * browser sends its app token with every request) costs a lookup instead of an HMAC and two
 * JSON parses. A hit still asks key for the token's kid and must get the very key it was
 * verified with, so a key deleted or replaced ends its tokens at once; time claims stay the
 * caller's to check on every use, as with jose_verify_hs512. */
struct jose_cache;
struct jose_cache *jose_cache_new(size_t slots);
void jose_cache_free(struct jose_cache *c);
/* jose_verify_hs512 through the cache: the same answers, claims shared with the cache (a new
 * reference; do not modify them). */
json_t *jose_cache_verify_hs512(struct jose_cache *c, const char *token, jose_key_fn key, void *arg,
                                const char **err);

/* Compact JWE: A256GCMKW with key (32 bytes), A256GCM content, DEFLATE. Returns a new string. */
char *jose_encrypt_a256gcmkw(const uint8_t key[32], const char *kid, const json_t *claims);
/* Decrypts what jose_encrypt_a256gcmkw (or Coder's go-jose) made; returns the claims. */
json_t *jose_decrypt_a256gcmkw(const char *token, jose_key_fn key, void *arg, char *kid_out,
                               size_t kidcap, const char **err);

/* Checks "exp" (required) and "nbf" (optional) against now (seconds) with leeway. Returns 0,
 * or -1 with *err "token expired" / "token not valid yet" / "token has no expiry". */
int jose_check_time(const json_t *claims, int64_t now_s, int64_t leeway_s, const char **err);

#endif
