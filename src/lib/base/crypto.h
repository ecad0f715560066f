/* Randomness, hashes and encodings (OpenSSL underneath). */
#ifndef BASE_CRYPTO_H
#define BASE_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Fills p with n cryptographically random bytes; aborts if the system has no randomness. */
void rand_bytes(void *p, size_t n);
/* Returns a new string of n characters drawn uniformly (no modulo bias) from charset. */
char *rand_string(size_t n, const char *charset);
/* Returns a new string of n random lower-case hex characters. */
char *rand_hex(size_t n);

void sha256(const void *data, size_t n, uint8_t out[32]);
/* Constant-time equality of two byte strings of the same length. */
bool ct_equal(const void *a, const void *b, size_t n);

/* Hex: encode n bytes into 2n+1 chars (NUL included). Decode returns bytes written or -1. */
void hex_encode(const uint8_t *in, size_t n, char *out);
long hex_decode(const char *in, size_t inlen, uint8_t *out, size_t outcap);

/* Base64 (standard alphabet) without padding, as Go's RawStdEncoding. Returns a new string. */
char *b64_raw_encode(const uint8_t *in, size_t n);
/* Decodes raw (unpadded) standard base64. Returns bytes written or -1. */
long b64_raw_decode(const char *in, uint8_t *out, size_t outcap);
/* Unpadded base64url (JOSE). decode reads len characters; returns the byte count or -1 for a
 * character outside the alphabet, a non-canonical ending, or more than outcap bytes. */
char *b64url_encode(const uint8_t *in, size_t n);
long b64url_decode(const char *in, size_t len, uint8_t *out, size_t outcap);

#endif
