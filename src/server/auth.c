#include "auth.h"
#include "base/crypto.h"
#include "base/util.h"
#include "base/uuid.h"

#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PBKDF2_ITER 65535
#define PBKDF2_KEYLEN 64
#define PBKDF2_SALTLEN 16

static const char alnum[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

static void
pbkdf2(const char *password, const uint8_t *salt, size_t saltlen, int iter, uint8_t *out,
       size_t outlen)
{
    PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, (int)saltlen, iter, EVP_sha256(),
                      (int)outlen, out);
}

char *
auth_password_hash(const char *password)
{
    uint8_t salt[PBKDF2_SALTLEN], key[PBKDF2_KEYLEN];
    rand_bytes(salt, sizeof(salt));
    pbkdf2(password, salt, sizeof(salt), PBKDF2_ITER, key, sizeof(key));
    char *s = b64_raw_encode(salt, sizeof(salt));
    char *k = b64_raw_encode(key, sizeof(key));
    char *out = xasprintf("$pbkdf2-sha256$%d$%s$%s", PBKDF2_ITER, s, k);
    free(s);
    free(k);
    return out;
}

bool
auth_password_verify(const char *password, const char *hashed)
{
    uint8_t salt[64], want[PBKDF2_KEYLEN], got[PBKDF2_KEYLEN];
    int iter = 0;
    char saltb64[128], keyb64[256];
    bool ok =
        hashed && sscanf(hashed, "$pbkdf2-sha256$%d$%127[^$]$%255s", &iter, saltb64, keyb64) == 3;
    long saltlen = ok ? b64_raw_decode(saltb64, salt, sizeof(salt)) : -1;
    long keylen = ok ? b64_raw_decode(keyb64, want, sizeof(want)) : -1;
    ok = ok && iter > 0 && iter <= 10000000 && saltlen > 0 && keylen == PBKDF2_KEYLEN;
    if (!ok) {
        /* Simulate the work of a real comparison. */
        memset(salt, 0, sizeof(salt));
        pbkdf2(password, salt, PBKDF2_SALTLEN, PBKDF2_ITER, got, sizeof(got));
        return false;
    }
    pbkdf2(password, salt, (size_t)saltlen, iter, got, sizeof(got));
    return ct_equal(got, want, sizeof(got));
}

/* Entropy as go-password-validator computes it: log2(base^length), where base is the size of
 * the character classes used and no character counts more than twice. */
char *
auth_password_check(const char *password)
{
    static const char replace[] = "!@$&*", sep[] = "_-., ", other[] = "\"#%'()+/:;<=>?[\\]^{|}~";
    size_t len = strlen(password);
    if (len > 64)
        return xstrdup("password must be no more than 64 characters");
    bool has_lower = false, has_upper = false, has_digit = false, has_replace = false,
         has_sep = false, has_other = false;
    int extra = 0;
    int counts[256] = {0};
    int length = 0;
    for (const unsigned char *p = (const unsigned char *)password; *p; p++) {
        if (counts[*p] < 2) {
            counts[*p]++;
            length++;
        }
        if (*p >= 'a' && *p <= 'z')
            has_lower = true;
        else if (*p >= 'A' && *p <= 'Z')
            has_upper = true;
        else if (*p >= '0' && *p <= '9')
            has_digit = true;
        else if (strchr(replace, *p))
            has_replace = true;
        else if (strchr(sep, *p))
            has_sep = true;
        else if (strchr(other, *p))
            has_other = true;
        else if (counts[*p] == 1)
            extra++;
    }
    int base = (has_lower ? 26 : 0) + (has_upper ? 26 : 0) + (has_digit ? 10 : 0) +
               (has_replace ? 5 : 0) + (has_sep ? 5 : 0) + (has_other ? 22 : 0) + extra;
    double entropy = base > 0 ? length * log2((double)base) : 0;
    if (entropy >= 52)
        return NULL;
    const char *parts[4];
    size_t n = 0;
    if (!has_replace && !has_sep && !has_other)
        parts[n++] = "including more special characters";
    if (!has_lower)
        parts[n++] = "using lowercase letters";
    if (!has_upper)
        parts[n++] = "using uppercase letters";
    if (!has_digit)
        parts[n++] = "using numbers";
    if (n == 0)
        return xstrdup("insecure password, try using a longer password");
    char joined[256] = "";
    for (size_t i = 0; i < n; i++) {
        if (i)
            strcat(joined, ", ");
        strcat(joined, parts[i]);
    }
    return xasprintf("insecure password, try %s or using a longer password", joined);
}

void
auth_apikey_new(char id[APIKEY_ID_LEN + 1], char **token, uint8_t hash[32])
{
    char *i = rand_string(APIKEY_ID_LEN, alnum);
    char *s = rand_string(APIKEY_SECRET_LEN, alnum);
    memcpy(id, i, APIKEY_ID_LEN + 1);
    sha256(s, APIKEY_SECRET_LEN, hash);
    *token = xasprintf("%s-%s", i, s);
    free(i);
    free(s);
}

int
auth_apikey_split(const char *token, char id[APIKEY_ID_LEN + 1], uint8_t hash[32],
                  const char **detail)
{
    static char msg[128];
    const char *dash = strchr(token, '-');
    if (dash == NULL || strchr(dash + 1, '-')) {
        int parts = 1;
        for (const char *p = token; *p; p++)
            parts += *p == '-';
        snprintf(msg, sizeof(msg),
                 "Invalid API key format: incorrect amount of API key parts, expected 2 got %d",
                 parts);
        *detail = msg;
        return -1;
    }
    size_t idlen = (size_t)(dash - token), slen = strlen(dash + 1);
    if (idlen != APIKEY_ID_LEN) {
        snprintf(msg, sizeof(msg),
                 "Invalid API key format: invalid API key ID length, expected 10 got %zu", idlen);
        *detail = msg;
        return -1;
    }
    if (slen != APIKEY_SECRET_LEN) {
        snprintf(msg, sizeof(msg),
                 "Invalid API key format: invalid API key secret length, expected 22 got %zu",
                 slen);
        *detail = msg;
        return -1;
    }
    memcpy(id, token, APIKEY_ID_LEN);
    id[APIKEY_ID_LEN] = '\0';
    sha256(dash + 1, slen, hash);
    return 0;
}

char *
auth_proxy_token_new(const char *proxy_id, uint8_t hash[32])
{
    char *secret = rand_hex(64);
    sha256(secret, 64, hash);
    char *token = xasprintf("%s:%s", proxy_id, secret);
    free(secret);
    return token;
}

int
auth_proxy_token_split(const char *token, char id[37], uint8_t hash[32], const char **detail)
{
    const char *colon = strchr(token, ':');
    if (colon == NULL || strchr(colon + 1, ':') || (size_t)(colon - token) != 36) {
        *detail = "Invalid token format, expected \"<proxy_id>:<secret>\".";
        return -1;
    }
    memcpy(id, token, 36);
    id[36] = '\0';
    if (!uuid_valid(id)) {
        *detail = "Invalid proxy ID: not a UUID.";
        return -1;
    }
    str_lower(id);
    if (strlen(colon + 1) != 64) {
        *detail = "Invalid proxy token secret.";
        return -1;
    }
    sha256(colon + 1, 64, hash);
    return 0;
}
