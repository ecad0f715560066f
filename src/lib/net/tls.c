#include "net/tls.h"
#include "base/log.h"
#include "base/util.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

struct tls_ctx {
    SSL_CTX **ctxs; /* one per certificate; ctxs[0] is the default */
    size_t n;
    enum tls_client_auth client_auth;
    unsigned char *alpn;
    size_t alpn_len;
    bool store_pending; /* client: the system trust store is loaded with the first session */
};

struct tls_session {
    SSL *ssl;
    struct buf in; /* ciphertext from the peer, not yet read by OpenSSL (from in_pos) */
    size_t in_pos;
    const char *lent; /* ciphertext read in place (tls_session_feed_borrowed), after in */
    size_t lent_len;
    struct buf out; /* ciphertext to the peer, not yet taken */
};

/* ---- the session's BIO ----
 * OpenSSL reads ciphertext from s->in and writes it to s->out. Unlike a memory BIO, whose buffer
 * keeps its largest size for the life of the session, both are freed once empty, so an idle
 * session holds no buffer at all (with SSL_MODE_RELEASE_BUFFERS, neither does OpenSSL). */

static int
bio_write(BIO *b, const char *data, int n)
{
    struct tls_session *s = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    buf_append(&s->out, data, (size_t)n);
    return n;
}

static int
bio_read(BIO *b, char *out, int cap)
{
    struct tls_session *s = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    size_t have = s->in.len - s->in_pos;
    if (have == 0 && s->lent_len == 0) {
        BIO_set_retry_read(b); /* more is on its way */
        return -1;
    }
    if (have == 0) {
        size_t n = s->lent_len < (size_t)cap ? s->lent_len : (size_t)cap;
        memcpy(out, s->lent, n);
        s->lent += n;
        s->lent_len -= n;
        return (int)n;
    }
    size_t n = have < (size_t)cap ? have : (size_t)cap;
    memcpy(out, s->in.data + s->in_pos, n);
    s->in_pos += n;
    if (s->in_pos == s->in.len) {
        buf_fini(&s->in);
        s->in_pos = 0;
    }
    return (int)n;
}

static long
bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)num;
    (void)ptr;
    struct tls_session *s = BIO_get_data(b);
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;
    case BIO_CTRL_PENDING:
        return (long)(s->in.len - s->in_pos + s->lent_len);
    case BIO_CTRL_WPENDING:
        return (long)s->out.len;
    default:
        return 0;
    }
}

static BIO_METHOD *bio_method;

static void
bio_method_make(void)
{
    bio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "coder-tls");
    if (bio_method == NULL || !BIO_meth_set_write(bio_method, bio_write) ||
        !BIO_meth_set_read(bio_method, bio_read) || !BIO_meth_set_ctrl(bio_method, bio_ctrl)) {
        fprintf(stderr, "fatal: cannot make the TLS BIO method\n");
        abort();
    }
}

/* Gives s a BIO on its own buffers (both directions). */
static void
session_attach_bio(struct tls_session *s)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, bio_method_make);
    BIO *b = BIO_new(bio_method);
    if (b == NULL) {
        fprintf(stderr, "fatal: out of memory creating a TLS session\n");
        abort();
    }
    BIO_set_data(b, s);
    BIO_set_init(b, 1);
    SSL_set_bio(s->ssl, b, b); /* the same BIO both ways: SSL takes its one reference */
}

int
tls_client_auth_parse(const char *s, enum tls_client_auth *out)
{
    static const struct {
        const char *name;
        enum tls_client_auth v;
    } modes[] = {{"none", TLS_CLIENT_AUTH_NONE},
                 {"request", TLS_CLIENT_AUTH_REQUEST},
                 {"require-any", TLS_CLIENT_AUTH_REQUIRE_ANY},
                 {"verify-if-given", TLS_CLIENT_AUTH_VERIFY_IF_GIVEN},
                 {"require-and-verify", TLS_CLIENT_AUTH_REQUIRE_AND_VERIFY}};
    if (s == NULL || *s == '\0') {
        *out = TLS_CLIENT_AUTH_NONE;
        return 0;
    }
    for (size_t i = 0; i < ARRAY_LEN(modes); i++) {
        if (strcmp(s, modes[i].name) == 0) {
            *out = modes[i].v;
            return 0;
        }
    }
    return -1;
}

int
tls_version_parse(const char *s, int *out)
{
    static const struct {
        const char *name;
        int v;
    } versions[] = {{"tls10", TLS1_VERSION},
                    {"tls11", TLS1_1_VERSION},
                    {"tls12", TLS1_2_VERSION},
                    {"tls13", TLS1_3_VERSION}};
    if (s == NULL || *s == '\0') {
        *out = TLS1_2_VERSION;
        return 0;
    }
    for (size_t i = 0; i < ARRAY_LEN(versions); i++) {
        if (strcmp(s, versions[i].name) == 0) {
            *out = versions[i].v;
            return 0;
        }
    }
    return -1;
}

static char *
ssl_error_text(const char *what, const char *file)
{
    unsigned long e = ERR_peek_last_error();
    char msg[256] = "unknown error";
    if (e)
        ERR_error_string_n(e, msg, sizeof(msg));
    ERR_clear_error();
    return file ? xasprintf("%s \"%s\": %s", what, file, msg) : xasprintf("%s: %s", what, msg);
}

/* Accept any client certificate: the "request" and "require-any" modes only ask for one. */
static int
verify_accept_any(int ok, X509_STORE_CTX *x)
{
    return 1;
}

static int
select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
            unsigned int inlen, void *arg)
{
    struct tls_ctx *c = arg;
    if (c->alpn == NULL)
        return SSL_TLSEXT_ERR_NOACK;
    if (SSL_select_next_proto((unsigned char **)out, outlen, c->alpn, (unsigned)c->alpn_len, in,
                              inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    return SSL_TLSEXT_ERR_OK;
}

/* With several certificates, pick the one whose names match the client's SNI. */
static int
select_cert(SSL *ssl, int *alert, void *arg)
{
    struct tls_ctx *c = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (name == NULL || c->n < 2)
        return SSL_TLSEXT_ERR_OK;
    for (size_t i = 0; i < c->n; i++) {
        X509 *cert = SSL_CTX_get0_certificate(c->ctxs[i]);
        if (cert && X509_check_host(cert, name, 0, 0, NULL) == 1) {
            SSL_set_SSL_CTX(ssl, c->ctxs[i]);
            break;
        }
    }
    return SSL_TLSEXT_ERR_OK;
}

/* Converts a comma-separated cipher list (IANA or OpenSSL names) for TLS <= 1.2 and 1.3. */
static int
apply_ciphers(SSL_CTX *ctx, const char *list, char **err)
{
    struct buf b12, b13;
    buf_init(&b12);
    buf_init(&b13);
    char *copy = xstrdup(list);
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *t = str_trim_dup(tok);
        struct buf *dst =
            str_has_prefix(t, "TLS_AES") || str_has_prefix(t, "TLS_CHACHA20") ? &b13 : &b12;
        const char *name = t;
        const SSL_CIPHER *sc = NULL;
        if (dst == &b12 && str_has_prefix(t, "TLS_")) {
            /* IANA name: look it up among what OpenSSL knows. */
            STACK_OF(SSL_CIPHER) *all = SSL_CTX_get_ciphers(ctx);
            for (int i = 0; all && i < sk_SSL_CIPHER_num(all); i++) {
                const SSL_CIPHER *cand = sk_SSL_CIPHER_value(all, i);
                if (strcmp(SSL_CIPHER_standard_name(cand), t) == 0)
                    sc = cand;
            }
            if (sc)
                name = SSL_CIPHER_get_name(sc);
        }
        if (dst->len)
            buf_putc(dst, ':');
        buf_puts(dst, name);
        free(t);
    }
    free(copy);
    int rc = 0;
    if (b12.len && SSL_CTX_set_cipher_list(ctx, b12.data) != 1) {
        *err = xasprintf("invalid --tls-ciphers \"%s\"", list);
        rc = -1;
    }
    if (rc == 0 && b13.len && SSL_CTX_set_ciphersuites(ctx, b13.data) != 1) {
        *err = xasprintf("invalid --tls-ciphers \"%s\"", list);
        rc = -1;
    }
    ERR_clear_error();
    buf_fini(&b12);
    buf_fini(&b13);
    return rc;
}

static int
ctx_use_files(SSL_CTX *ctx, const char *cert_file, const char *key_file, char **err)
{
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        *err = ssl_error_text("load TLS certificate", cert_file);
        return -1;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        *err = ssl_error_text("load TLS key", key_file);
        return -1;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        *err = xasprintf("TLS key \"%s\" does not match certificate \"%s\"", key_file, cert_file);
        return -1;
    }
    return 0;
}

/* Adds one X.509v3 extension, in openssl.cnf syntax, to a certificate that is its own issuer. */
static int
cert_add_ext(X509 *cert, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, cert, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (ext == NULL)
        return -1;
    int ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : -1;
}

/* What Coder does when TLS is on and no certificate is configured (cli/server.go
 * generateSelfSignedCertificate): a fresh ECDSA P-256 key and a certificate it signs itself,
 * serial 1, valid 180 days from now, digitalSignature + keyEncipherment, serverAuth, CA:FALSE,
 * and 127.0.0.1 as its only name. Both live in memory only, for the life of the context: they
 * are never written to disk or logged. The subject is empty, as Coder's, so the alternative
 * names are critical (RFC 5280 4.2.1.6, and what Go emits). */
static int
ctx_use_self_signed(SSL_CTX *ctx, char **err)
{
    int rc = -1;
    X509 *cert = NULL;
    EVP_PKEY *key = EVP_EC_gen("P-256");
    if (key == NULL)
        goto out;
    cert = X509_new();
    if (cert == NULL || !X509_set_version(cert, X509_VERSION_3) ||
        !ASN1_INTEGER_set(X509_get_serialNumber(cert), 1) ||
        !X509_gmtime_adj(X509_getm_notBefore(cert), 0) ||
        !X509_gmtime_adj(X509_getm_notAfter(cert), TLS_SELF_SIGNED_DAYS * 24L * 3600) ||
        !X509_set_pubkey(cert, key))
        goto out;
    if (cert_add_ext(cert, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
        cert_add_ext(cert, NID_key_usage, "critical,digitalSignature,keyEncipherment") < 0 ||
        cert_add_ext(cert, NID_ext_key_usage, "serverAuth") < 0 ||
        cert_add_ext(cert, NID_subject_alt_name, "critical,IP:127.0.0.1") < 0)
        goto out;
    if (X509_sign(cert, key, EVP_sha256()) == 0)
        goto out;
    if (SSL_CTX_use_certificate(ctx, cert) != 1 || SSL_CTX_use_PrivateKey(ctx, key) != 1)
        goto out;
    rc = 0;
out:
    if (rc < 0)
        *err = ssl_error_text("generate a self-signed TLS certificate", NULL);
    X509_free(cert); /* the context holds its own references */
    EVP_PKEY_free(key);
    return rc;
}

/* The context for certificate i, or for a self-signed one when none is configured. */
static SSL_CTX *
server_ctx_one(const struct tls_server_opts *o, struct tls_ctx *c, size_t i, int minv, char **err)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        *err = ssl_error_text("create TLS context", NULL);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, minv);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (o->ncerts == 0 ? ctx_use_self_signed(ctx, err) < 0
                       : ctx_use_files(ctx, o->cert_files[i], o->key_files[i], err) < 0)
        goto fail;
    if (minv < TLS1_2_VERSION) {
        /* TLS 1.0 and 1.1 have only SHA-1 MACs and handshake signatures, which OpenSSL 3's
         * default security level refuses: an operator who asked for them (clients that can do
         * no better) gets them, as with Coder's Go TLS. */
        SSL_CTX_set_security_level(ctx, 0);
        if (!o->allow_insecure_ciphers)
            SSL_CTX_set_cipher_list(ctx, "HIGH:!aNULL:!MD5:!RC4:!3DES");
    } else if (!o->allow_insecure_ciphers) {
        SSL_CTX_set_cipher_list(ctx, "HIGH:!aNULL:!MD5:!RC4:!3DES:!SHA1");
    }
    if (o->ciphers && *o->ciphers && apply_ciphers(ctx, o->ciphers, err) < 0)
        goto fail;
    int mode = SSL_VERIFY_NONE;
    switch (c->client_auth) {
    case TLS_CLIENT_AUTH_NONE:
        break;
    case TLS_CLIENT_AUTH_REQUEST:
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_accept_any);
        break;
    case TLS_CLIENT_AUTH_REQUIRE_ANY:
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                           verify_accept_any);
        break;
    case TLS_CLIENT_AUTH_VERIFY_IF_GIVEN:
        mode = SSL_VERIFY_PEER;
        SSL_CTX_set_verify(ctx, mode, NULL);
        break;
    case TLS_CLIENT_AUTH_REQUIRE_AND_VERIFY:
        mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
        SSL_CTX_set_verify(ctx, mode, NULL);
        break;
    }
    if (o->client_ca_file && *o->client_ca_file) {
        if (SSL_CTX_load_verify_locations(ctx, o->client_ca_file, NULL) != 1) {
            *err = ssl_error_text("load TLS client CA", o->client_ca_file);
            goto fail;
        }
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->client_ca_file);
        if (names)
            SSL_CTX_set_client_CA_list(ctx, names);
    }
    /* Session IDs need a context id once client certificates are involved. */
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"coder", 5);
    SSL_CTX_set_alpn_select_cb(ctx, select_alpn, c);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

static int
servername_cb(SSL *ssl, int *alert, void *arg)
{
    return select_cert(ssl, alert, arg);
}

struct tls_ctx *
tls_ctx_new_server(const struct tls_server_opts *o, char **err)
{
    int minv;
    struct tls_ctx *c = xcalloc(1, sizeof(*c));
    if (tls_version_parse(o->min_version, &minv) < 0) {
        *err =
            xasprintf("invalid --tls-min-version \"%s\": must be one of tls10, tls11, tls12, tls13",
                      o->min_version);
        goto fail;
    }
    if (tls_client_auth_parse(o->client_auth, &c->client_auth) < 0) {
        *err = xasprintf(
            "invalid --tls-client-auth \"%s\": must be one of none, request, require-any, "
            "verify-if-given, require-and-verify",
            o->client_auth);
        goto fail;
    }
    if (o->alpn) {
        c->alpn_len = strlen(o->alpn);
        c->alpn = (unsigned char *)xstrdup(o->alpn);
    }
    size_t n = o->ncerts ? o->ncerts : 1; /* none: one self-signed */
    c->ctxs = xcalloc(n, sizeof(*c->ctxs));
    for (size_t i = 0; i < n; i++) {
        c->ctxs[i] = server_ctx_one(o, c, i, minv, err);
        if (c->ctxs[i] == NULL)
            goto fail;
        c->n++;
    }
    if (o->ncerts == 0)
        log_warn("tls: no --tls-cert-file given, serving a self-signed certificate for "
                 "127.0.0.1, valid %d days (clients will not trust it)",
                 TLS_SELF_SIGNED_DAYS);
    SSL_CTX_set_tlsext_servername_callback(c->ctxs[0], servername_cb);
    SSL_CTX_set_tlsext_servername_arg(c->ctxs[0], c);
    return c;
fail:
    tls_ctx_free(c);
    return NULL;
}

void
tls_ctx_free(struct tls_ctx *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->n; i++)
        SSL_CTX_free(c->ctxs[i]);
    free(c->ctxs);
    free(c->alpn);
    free(c);
}

struct tls_ctx *
tls_ctx_new_client(const struct tls_client_opts *o, char **err)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        *err = ssl_error_text("create TLS context", NULL);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_verify(ctx, o && o->no_verify ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, NULL);
    if (o && o->cert_file && *o->cert_file) {
        if (SSL_CTX_use_certificate_chain_file(ctx, o->cert_file) != 1) {
            *err = ssl_error_text("load TLS client certificate", o->cert_file);
            SSL_CTX_free(ctx);
            return NULL;
        }
        const char *key = o->key_file && *o->key_file ? o->key_file : o->cert_file;
        if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(ctx) != 1) {
            *err = ssl_error_text("load TLS client key", key);
            SSL_CTX_free(ctx);
            return NULL;
        }
    }
    struct tls_ctx *c = xcalloc(1, sizeof(*c));
    c->ctxs = xcalloc(1, sizeof(*c->ctxs));
    c->ctxs[0] = ctx;
    c->n = 1;
    /* Parsing the trust store (~140 certificates) costs about 20 ms: a process that never dials
     * a TLS peer (a plain-HTTP primary) never pays it. */
    c->store_pending = !(o && o->no_verify);
    if (o && o->alpn) {
        c->alpn_len = strlen(o->alpn);
        c->alpn = (unsigned char *)xstrdup(o->alpn);
        SSL_CTX_set_alpn_protos(ctx, c->alpn, (unsigned)c->alpn_len);
    }
    return c;
}

struct tls_session *
tls_session_new_client(struct tls_ctx *c, const char *server_name)
{
    if (c->store_pending) {
        c->store_pending = false;
        /* Honours SSL_CERT_FILE and SSL_CERT_DIR. */
        if (SSL_CTX_set_default_verify_paths(c->ctxs[0]) != 1)
            ERR_clear_error(); /* no store at all: every peer fails verification, with a reason */
    }
    struct tls_session *s = tls_session_new(c);
    SSL_set_connect_state(s->ssl);
    unsigned char addr[16];
    char host[256];
    snprintf(host, sizeof(host), "%s", server_name ? server_name : "");
    size_t n = strlen(host);
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']') { /* "[::1]" */
        memmove(host, host + 1, n - 2);
        host[n - 2] = '\0';
    }
    if (inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s->ssl), host);
    } else {
        SSL_set_tlsext_host_name(s->ssl, host);
        SSL_set1_host(s->ssl, host);
    }
    return s;
}

struct tls_session *
tls_session_new(struct tls_ctx *c)
{
    struct tls_session *s = xcalloc(1, sizeof(*s));
    s->ssl = SSL_new(c->ctxs[0]);
    if (s->ssl == NULL) {
        fprintf(stderr, "fatal: out of memory creating a TLS session\n");
        abort();
    }
    session_attach_bio(s);
    SSL_set_accept_state(s->ssl);
    return s;
}

void
tls_session_free(struct tls_session *s)
{
    if (s == NULL)
        return;
    SSL_free(s->ssl); /* frees the BIO */
    buf_fini(&s->in);
    buf_fini(&s->out);
    free(s);
}

void
tls_session_feed(struct tls_session *s, const void *data, size_t n)
{
    tls_session_keep_input(s);
    buf_append(&s->in, data, n);
}

void
tls_session_feed_borrowed(struct tls_session *s, const void *data, size_t n)
{
    tls_session_keep_input(s);
    s->lent = data;
    s->lent_len = n;
}

void
tls_session_keep_input(struct tls_session *s)
{
    if (s->lent_len)
        buf_append(&s->in, s->lent, s->lent_len);
    s->lent = NULL;
    s->lent_len = 0;
}

/* Why the server's certificate was refused, in the words of Go's crypto/tls and x509 (what
 * Coder's own binaries print, so operators can search for it). */
static void
verify_error_text(SSL *ssl, long vr, char *out, size_t cap)
{
    const char *pre = "failed to verify certificate: x509: ";
    X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
    switch (vr) {
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
        snprintf(out, cap, "%scertificate signed by unknown authority", pre);
        return;
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CERT_NOT_YET_VALID:
        snprintf(out, cap, "%scertificate has expired or is not yet valid", pre);
        return;
    case X509_V_ERR_HOSTNAME_MISMATCH: {
        const char *host = X509_VERIFY_PARAM_get0_host(param, 0);
        snprintf(out, cap, "%scertificate is not valid for %s", pre, host ? host : "this host");
        return;
    }
    case X509_V_ERR_IP_ADDRESS_MISMATCH: {
        char *ip = X509_VERIFY_PARAM_get1_ip_asc(param);
        snprintf(out, cap, "%scertificate is not valid for IP %s", pre, ip ? ip : "address");
        OPENSSL_free(ip);
        return;
    }
    default:
        snprintf(out, cap, "%s%s", pre, X509_verify_cert_error_string(vr));
    }
}

int
tls_session_read(struct tls_session *s, void *out, size_t cap, const char **why)
{
    int r = SSL_read(s->ssl, out, (int)(cap > 0x7fffffff ? 0x7fffffff : cap));
    if (r > 0)
        return r;
    int e = SSL_get_error(s->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return 0;
    long vr = SSL_get_verify_result(s->ssl);
    if (e == SSL_ERROR_ZERO_RETURN) {
        *why = "peer closed TLS";
    } else if (vr != X509_V_OK && !SSL_is_server(s->ssl)) {
        static _Thread_local char text[320];
        verify_error_text(s->ssl, vr, text, sizeof(text));
        *why = text;
    } else {
        unsigned long le = ERR_peek_last_error();
        *why = le ? ERR_reason_error_string(le) : "TLS error";
        if (*why == NULL)
            *why = "TLS error";
    }
    ERR_clear_error();
    return -1;
}

int
tls_session_write(struct tls_session *s, const void *data, size_t n)
{
    const char *p = data;
    /* Room for all the records at once (a record adds at most 64 bytes to 16 KiB): grown one
     * record at a time, the buffer was copied about once more per byte. */
    buf_reserve(&s->out, n + (n / 16384 + 1) * 64);
    while (n > 0) {
        int chunk = n > 65536 ? 65536 : (int)n;
        int r = SSL_write(s->ssl, p, chunk);
        if (r <= 0) {
            ERR_clear_error();
            return -1;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

size_t
tls_session_take_output(struct tls_session *s, struct buf *out)
{
    size_t n = s->out.len;
    if (n == 0)
        return 0;
    if (out->len == 0) { /* hand the buffer over instead of copying it */
        buf_fini(out);
        *out = s->out;
        buf_init(&s->out);
    } else {
        buf_append(out, s->out.data, n);
        buf_fini(&s->out);
    }
    return n;
}

void
tls_session_shutdown(struct tls_session *s)
{
    if (SSL_is_init_finished(s->ssl))
        SSL_shutdown(s->ssl);
    ERR_clear_error();
}

bool
tls_session_handshake_done(const struct tls_session *s)
{
    return SSL_is_init_finished(s->ssl);
}

const char *
tls_session_alpn(const struct tls_session *s)
{
    static __thread char proto[32];
    const unsigned char *p = NULL;
    unsigned int n = 0;
    SSL_get0_alpn_selected(s->ssl, &p, &n);
    if (!p || n >= sizeof(proto))
        n = 0; /* none chosen */
    if (n)
        memcpy(proto, p, n);
    proto[n] = '\0';
    return proto;
}
