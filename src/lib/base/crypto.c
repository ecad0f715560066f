#include "base/crypto.h"
#include "base/util.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdbool.h>
#include <string.h>

void
rand_bytes(void *p, size_t n)
{
    if (RAND_bytes(p, (int)n) != 1) {
        fprintf(stderr, "fatal: no system randomness\n");
        abort();
    }
}

char *
rand_string(size_t n, const char *charset)
{
    size_t m = strlen(charset);
    /* Reject bytes past the largest multiple of m so every character is equally likely. */
    unsigned limit = 256 - (256 % m);
    char *s = xmalloc(n + 1);
    size_t i = 0;
    while (i < n) {
        uint8_t r[64];
        rand_bytes(r, sizeof(r));
        for (size_t j = 0; j < sizeof(r) && i < n; j++) {
            if (r[j] < limit)
                s[i++] = charset[r[j] % m];
        }
    }
    s[n] = '\0';
    return s;
}

char *
rand_hex(size_t n)
{
    return rand_string(n, "0123456789abcdef");
}

void
sha256(const void *data, size_t n, uint8_t out[32])
{
    unsigned int len = 32;
    EVP_Digest(data, n, out, &len, EVP_sha256(), NULL);
}

bool
ct_equal(const void *a, const void *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) == 0;
}

void
hex_encode(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int
hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

long
hex_decode(const char *in, size_t inlen, uint8_t *out, size_t outcap)
{
    if (inlen % 2 != 0 || inlen / 2 > outcap)
        return -1;
    for (size_t i = 0; i < inlen / 2; i++) {
        int hi = hexval(in[2 * i]), lo = hexval(in[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return (long)(inlen / 2);
}

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static const char b64url_chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Unpadded base64 over the given alphabet. */
static char *
b64_encode_with(const uint8_t *in, size_t n, const char *chars)
{
    char *out = xmalloc((n + 2) / 3 * 4 + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = chars[(v >> 18) & 63];
        out[o++] = chars[(v >> 12) & 63];
        if (i + 1 < n)
            out[o++] = chars[(v >> 6) & 63];
        if (i + 2 < n)
            out[o++] = chars[v & 63];
    }
    out[o] = '\0';
    return out;
}

char *
b64_raw_encode(const uint8_t *in, size_t n)
{
    return b64_encode_with(in, n, b64chars);
}

/* The value of c in the alphabet (both share A-Z a-z 0-9 and differ in the last two), or -1. */
static int
b64_value(char c, const char *chars)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == chars[62])
        return 62;
    if (c == chars[63])
        return 63;
    return -1;
}

/* Decodes len characters over the given alphabet. strict: also refuse an impossible length
 * and non-zero spare bits in the last character (one encoding per value). */
static long
b64_decode_with(const char *in, size_t len, uint8_t *out, size_t outcap, const char *chars,
                bool strict)
{
    if (strict && len % 4 == 1)
        return -1; /* no encoding ends with one character */
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64_value(in[i], chars);
        if (v < 0)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o >= outcap)
                return -1;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    if (strict && bits && (acc & ((1u << bits) - 1)))
        return -1;
    return (long)o;
}

long
b64_raw_decode(const char *in, uint8_t *out, size_t outcap)
{
    return b64_decode_with(in, strlen(in), out, outcap, b64chars, false);
}

/* ---- base64url (RFC 4648 §5), unpadded, as JOSE uses it ---- */

char *
b64url_encode(const uint8_t *in, size_t n)
{
    return b64_encode_with(in, n, b64url_chars);
}

long
b64url_decode(const char *in, size_t len, uint8_t *out, size_t outcap)
{
    return b64_decode_with(in, len, out, outcap, b64url_chars, true);
}
