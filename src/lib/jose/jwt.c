/* Compact JWS HS512 and JWE A256GCMKW + A256GCM on OpenSSL (HMAC-SHA512, AES-256-GCM) and
 * zlib (raw DEFLATE); see jwt.h. The framing is RFC 7515/7516 compact serialisation; A256GCMKW's
 * "iv" and "tag" go in the protected header, where compact serialisation needs them. */
#include "jose/jwt.h"
#include "base/crypto.h"
#include "base/util.h"

#include <openssl/hmac.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <zlib.h>

/* ---- base64url ---- */

static char *
b64(const void *data, size_t n)
{
    return b64url_encode(data, n);
}

/* Decodes n characters of s into a new buffer; returns NULL when invalid. */
static uint8_t *
unb64(const char *s, size_t n, size_t *outlen)
{
    uint8_t *out = xmalloc(n / 4 * 3 + 4);
    long got = b64url_decode(s, n, out, n / 4 * 3 + 3);
    if (got < 0) {
        free(out);
        return NULL;
    }
    out[got] = 0;
    *outlen = (size_t)got;
    return out;
}

/* Splits a compact token into want parts at '.'; returns 0 or -1. */
static int
split(const char *token, const char **part, size_t *len, int want)
{
    if (!token || strlen(token) > JOSE_MAX_TOKEN)
        return -1;
    const char *p = token;
    for (int i = 0; i < want; i++) {
        const char *dot = strchr(p, '.');
        if ((i < want - 1) != (dot != NULL))
            return -1;
        part[i] = p;
        len[i] = dot ? (size_t)(dot - p) : strlen(p);
        p = dot ? dot + 1 : p + len[i];
    }
    return 0;
}

/* The decoded protected header as JSON, or NULL. */
static json_t *
header_of(const char *s, size_t n)
{
    size_t len;
    uint8_t *raw = unb64(s, n, &len);
    if (!raw)
        return NULL;
    json_t *h = json_loadb((const char *)raw, len, JSON_REJECT_DUPLICATES, NULL);
    free(raw);
    if (h && !json_is_object(h)) {
        json_decref(h);
        return NULL;
    }
    return h;
}

static const char *
str_field(const json_t *o, const char *k)
{
    const char *v = json_string_value(json_object_get(o, k));
    return v ? v : "";
}

/* Reads the kid, rejects critical extensions, and fetches the key. */
static int
header_key(const json_t *h, jose_key_fn key, void *arg, uint8_t *k, size_t *klen, char *kid_out,
           size_t kidcap, const char **err)
{
    if (json_object_get(h, "crit")) {
        *err = "token has unsupported critical header parameters";
        return -1;
    }
    const char *kid = str_field(h, "kid");
    if (kid_out)
        snprintf(kid_out, kidcap, "%s", kid);
    if (key(kid, k, klen, arg) < 0) {
        *err = "unknown signing key";
        return -1;
    }
    return 0;
}

/* ---- JWS HS512 ---- */

/* HMAC-SHA512 over "header.payload" (the first hlen+1+plen bytes of input). */
static void
hs512(const uint8_t *key, size_t keylen, const char *input, size_t n, uint8_t mac[64])
{
    unsigned int len = 64;
    HMAC(EVP_sha512(), key, (int)keylen, (const unsigned char *)input, n, mac, &len);
}

char *
jose_sign_hs512(const uint8_t *key, size_t keylen, const char *kid, const json_t *claims)
{
    json_t *h = json_pack("{s:s, s:s}", "alg", "HS512", "kid", kid ? kid : "");
    char *hjson = json_dumps(h, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(h);
    char *pjson = json_dumps(claims, JSON_COMPACT);
    char *h64 = b64(hjson, strlen(hjson)), *p64 = b64(pjson, strlen(pjson));
    char *input = xasprintf("%s.%s", h64, p64);
    uint8_t mac[64];
    hs512(key, keylen, input, strlen(input), mac);
    char *s64 = b64(mac, sizeof(mac));
    char *out = xasprintf("%s.%s", input, s64);
    free(hjson);
    free(pjson);
    free(h64);
    free(p64);
    free(input);
    free(s64);
    return out;
}

json_t *
jose_verify_hs512(const char *token, jose_key_fn key, void *arg, char *kid_out, size_t kidcap,
                  const char **err)
{
    const char *part[3];
    size_t len[3];
    if (split(token, part, len, 3) < 0) {
        *err = "malformed token";
        return NULL;
    }
    json_t *h = header_of(part[0], len[0]);
    if (!h || strcmp(str_field(h, "alg"), "HS512") != 0) {
        json_decref(h);
        *err = "token is not signed with HS512";
        return NULL;
    }
    uint8_t k[JOSE_MAX_KEY];
    size_t klen = 0;
    if (header_key(h, key, arg, k, &klen, kid_out, kidcap, err) < 0) {
        json_decref(h);
        return NULL;
    }
    json_decref(h);
    uint8_t mac[64], sig[64];
    hs512(k, klen, part[0], len[0] + 1 + len[1], mac); /* "header.payload" as sent */
    OPENSSL_cleanse(k, sizeof(k));
    if (b64url_decode(part[2], len[2], sig, sizeof(sig)) != 64 ||
        CRYPTO_memcmp(mac, sig, 64) != 0) {
        *err = "invalid token signature";
        return NULL;
    }
    size_t plen;
    uint8_t *payload = unb64(part[1], len[1], &plen);
    json_t *claims =
        payload ? json_loadb((const char *)payload, plen, JSON_REJECT_DUPLICATES, NULL) : NULL;
    free(payload);
    if (!json_is_object(claims)) {
        json_decref(claims);
        *err = "token payload is not a JSON object";
        return NULL;
    }
    return claims;
}

/* ---- the cache of verified tokens ---- */

#define CACHE_TOKEN_MAX 4096 /* longer tokens are verified every time */
#define CACHE_KID_MAX 64

struct jose_cache_entry {
    char *token; /* NULL: empty slot */
    size_t len;
    json_t *claims;
    char kid[CACHE_KID_MAX];
    uint8_t key[JOSE_MAX_KEY];
    size_t keylen;
};

struct jose_cache {
    size_t n;
    struct jose_cache_entry *e;
};

struct jose_cache *
jose_cache_new(size_t slots)
{
    struct jose_cache *c = xcalloc(1, sizeof(*c));
    c->n = slots ? slots : 1;
    c->e = xcalloc(c->n, sizeof(*c->e));
    return c;
}

static void
entry_clear(struct jose_cache_entry *e)
{
    free(e->token);
    json_decref(e->claims);
    OPENSSL_cleanse(e, sizeof(*e));
}

void
jose_cache_free(struct jose_cache *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++)
        entry_clear(&c->e[i]);
    free(c->e);
    free(c);
}

/* FNV-1a: the slot only; equality is decided on the whole token. */
static uint64_t
token_hash(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 0x100000001b3u;
    return h;
}

/* The key kid names now, compared with the one the entry was verified with. */
static bool
entry_key_current(const struct jose_cache_entry *e, jose_key_fn key, void *arg)
{
    uint8_t k[JOSE_MAX_KEY];
    size_t klen = 0;
    bool same =
        key(e->kid, k, &klen, arg) == 0 && klen == e->keylen && CRYPTO_memcmp(k, e->key, klen) == 0;
    OPENSSL_cleanse(k, sizeof(k));
    return same;
}

json_t *
jose_cache_verify_hs512(struct jose_cache *c, const char *token, jose_key_fn key, void *arg,
                        const char **err)
{
    size_t len = token ? strlen(token) : 0;
    if (len == 0 || len > CACHE_TOKEN_MAX)
        return jose_verify_hs512(token, key, arg, NULL, 0, err);
    struct jose_cache_entry *e = &c->e[token_hash(token, len) % c->n];
    if (e->token && e->len == len && CRYPTO_memcmp(e->token, token, len) == 0) {
        if (entry_key_current(e, key, arg))
            return json_incref(e->claims);
        entry_clear(e); /* the key is gone or changed: decide afresh */
    }
    char kid[CACHE_KID_MAX + 1];
    json_t *claims = jose_verify_hs512(token, key, arg, kid, sizeof(kid), err);
    size_t kidlen = claims ? strlen(kid) : 0;
    if (!claims || kidlen >= sizeof(e->kid))
        return claims;
    entry_clear(e);
    memcpy(e->kid, kid, kidlen + 1);
    if (key(e->kid, e->key, &e->keylen, arg) < 0) {
        entry_clear(e);
        return claims;
    }
    e->token = xstrdup(token);
    e->len = len;
    e->claims = json_incref(claims);
    return claims;
}

/* ---- JWE A256GCMKW + A256GCM ---- */

/* AES-256-GCM; returns 0 or -1 (for decryption: authentication failed). */
static int
gcm(bool enc, const uint8_t key[32], const uint8_t iv[12], const uint8_t *aad, size_t aadlen,
    const uint8_t *in, size_t n, uint8_t *out, uint8_t tag[16])
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int len = 0, ok = c && EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, key, iv, enc ? 1 : 0);
    if (ok && aad && aadlen)
        ok = EVP_CipherUpdate(c, NULL, &len, aad, (int)aadlen);
    if (ok && n)
        ok = EVP_CipherUpdate(c, out, &len, in, (int)n);
    if (ok && !enc)
        ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, tag);
    if (ok)
        ok = EVP_CipherFinal_ex(c, out + (n ? len : 0), &len);
    if (ok && enc)
        ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, tag);
    EVP_CIPHER_CTX_free(c);
    return ok ? 0 : -1;
}

/* Raw DEFLATE (RFC 1951), as "zip":"DEF" means. */
static uint8_t *
deflate_raw(const char *in, size_t n, size_t *outlen)
{
    z_stream z = {0};
    deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
    size_t cap = deflateBound(&z, (uLong)n);
    uint8_t *out = xmalloc(cap);
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    deflate(&z, Z_FINISH);
    *outlen = z.total_out;
    deflateEnd(&z);
    return out;
}

/* Inflates at most JOSE_MAX_PAYLOAD bytes; NULL when invalid or larger. */
static char *
inflate_raw(const uint8_t *in, size_t n, size_t *outlen)
{
    z_stream z = {0};
    if (inflateInit2(&z, -15) != Z_OK)
        return NULL;
    char *out = xmalloc(JOSE_MAX_PAYLOAD + 1);
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)n;
    z.next_out = (Bytef *)out;
    z.avail_out = JOSE_MAX_PAYLOAD;
    int rc = inflate(&z, Z_FINISH);
    *outlen = z.total_out;
    inflateEnd(&z);
    if (rc != Z_STREAM_END) {
        free(out);
        return NULL;
    }
    out[*outlen] = '\0';
    return out;
}

char *
jose_encrypt_a256gcmkw(const uint8_t key[32], const char *kid, const json_t *claims)
{
    uint8_t cek[32], kwiv[12], kwtag[16], ekey[32], iv[12], tag[16];
    rand_bytes(cek, sizeof(cek));
    rand_bytes(kwiv, sizeof(kwiv));
    rand_bytes(iv, sizeof(iv));
    if (gcm(true, key, kwiv, NULL, 0, cek, sizeof(cek), ekey, kwtag) < 0)
        return NULL;
    char *kwiv64 = b64(kwiv, sizeof(kwiv)), *kwtag64 = b64(kwtag, sizeof(kwtag));
    json_t *h = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "alg", "A256GCMKW", "enc", "A256GCM",
                          "iv", kwiv64, "kid", kid ? kid : "", "tag", kwtag64, "zip", "DEF");
    free(kwiv64);
    free(kwtag64);
    char *hjson = json_dumps(h, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(h);
    char *h64 = b64(hjson, strlen(hjson));
    free(hjson);
    char *pt = json_dumps(claims, JSON_COMPACT);
    size_t zlen;
    uint8_t *z = deflate_raw(pt, strlen(pt), &zlen);
    free(pt);
    uint8_t *ct = xmalloc(zlen + 1);
    char *out = NULL;
    if (gcm(true, cek, iv, (const uint8_t *)h64, strlen(h64), z, zlen, ct, tag) == 0) {
        char *e64 = b64(ekey, sizeof(ekey)), *iv64 = b64(iv, sizeof(iv));
        char *ct64 = b64(ct, zlen), *tag64 = b64(tag, sizeof(tag));
        out = xasprintf("%s.%s.%s.%s.%s", h64, e64, iv64, ct64, tag64);
        free(e64);
        free(iv64);
        free(ct64);
        free(tag64);
    }
    OPENSSL_cleanse(cek, sizeof(cek));
    free(ct);
    free(z);
    free(h64);
    return out;
}

/* Decodes a base64url field of exactly want bytes into out. */
static int
fixed(const char *s, size_t n, uint8_t *out, size_t want)
{
    size_t len;
    uint8_t *raw = unb64(s, n, &len);
    int rc = raw && len == want ? 0 : -1;
    if (rc == 0)
        memcpy(out, raw, want);
    free(raw);
    return rc;
}

json_t *
jose_decrypt_a256gcmkw(const char *token, jose_key_fn key, void *arg, char *kid_out, size_t kidcap,
                       const char **err)
{
    const char *part[5];
    size_t len[5];
    if (split(token, part, len, 5) < 0) {
        *err = "malformed token";
        return NULL;
    }
    json_t *h = header_of(part[0], len[0]);
    const char *zip = h ? str_field(h, "zip") : "";
    if (!h || strcmp(str_field(h, "alg"), "A256GCMKW") != 0 ||
        strcmp(str_field(h, "enc"), "A256GCM") != 0 || (*zip && strcmp(zip, "DEF") != 0)) {
        json_decref(h);
        *err = "token is not encrypted with A256GCMKW and A256GCM";
        return NULL;
    }
    bool zipped = *zip != '\0';
    uint8_t k[JOSE_MAX_KEY], kwiv[12], kwtag[16], ekey[32], cek[32], iv[12], tag[16];
    size_t klen = 0;
    json_t *claims = NULL;
    uint8_t *ct = NULL, *pt = NULL;
    const char *kwiv64 = str_field(h, "iv"), *kwtag64 = str_field(h, "tag");
    if (header_key(h, key, arg, k, &klen, kid_out, kidcap, err) < 0)
        goto out;
    *err = "invalid encrypted token";
    if (klen != 32 || fixed(kwiv64, strlen(kwiv64), kwiv, 12) < 0 ||
        fixed(kwtag64, strlen(kwtag64), kwtag, 16) < 0 || fixed(part[1], len[1], ekey, 32) < 0 ||
        fixed(part[2], len[2], iv, 12) < 0 || fixed(part[4], len[4], tag, 16) < 0)
        goto out;
    if (gcm(false, k, kwiv, NULL, 0, ekey, 32, cek, kwtag) < 0)
        goto out;
    size_t ctlen;
    ct = unb64(part[3], len[3], &ctlen);
    if (!ct)
        goto out;
    pt = xmalloc(ctlen + 1);
    if (gcm(false, cek, iv, (const uint8_t *)part[0], len[0], ct, ctlen, pt, tag) < 0)
        goto out;
    size_t plen = ctlen;
    char *text = (char *)pt;
    char *inflated = NULL;
    if (zipped) {
        inflated = inflate_raw(pt, ctlen, &plen);
        if (!inflated)
            goto out;
        text = inflated;
    } else if (plen > JOSE_MAX_PAYLOAD) {
        goto out;
    }
    claims = json_loadb(text, plen, JSON_REJECT_DUPLICATES, NULL);
    free(inflated);
    if (!json_is_object(claims)) {
        json_decref(claims);
        claims = NULL;
        goto out;
    }
    *err = NULL;
out:
    OPENSSL_cleanse(k, sizeof(k));
    OPENSSL_cleanse(cek, sizeof(cek));
    free(ct);
    free(pt);
    json_decref(h);
    return claims;
}

int
jose_check_time(const json_t *claims, int64_t now_s, int64_t leeway_s, const char **err)
{
    json_t *exp = json_object_get(claims, "exp");
    if (!json_is_number(exp)) {
        *err = "token has no expiry";
        return -1;
    }
    if ((int64_t)json_number_value(exp) + leeway_s < now_s) {
        *err = "token expired";
        return -1;
    }
    json_t *nbf = json_object_get(claims, "nbf");
    if (json_is_number(nbf) && (int64_t)json_number_value(nbf) - leeway_s > now_s) {
        *err = "token not valid yet";
        return -1;
    }
    return 0;
}
