/* TLS, the only module that touches OpenSSL's SSL API. libuv owns the sockets, so a TLS session
 * runs over memory BIOs: ciphertext in with tls_session_feed, plaintext out with
 * tls_session_read, plaintext in with tls_session_write, ciphertext out with
 * tls_session_take_output. SSL_MODE_RELEASE_BUFFERS frees buffers of idle sessions. */
#ifndef NET_TLS_H
#define NET_TLS_H

#include "base/buf.h"

#include <stdbool.h>
#include <stddef.h>

struct tls_ctx; /* shared configuration: certificates, versions, client auth */
struct tls_session;

enum tls_client_auth {
    TLS_CLIENT_AUTH_NONE,
    TLS_CLIENT_AUTH_REQUEST,
    TLS_CLIENT_AUTH_REQUIRE_ANY,
    TLS_CLIENT_AUTH_VERIFY_IF_GIVEN,
    TLS_CLIENT_AUTH_REQUIRE_AND_VERIFY,
};

struct tls_server_opts {
    const char *const *cert_files; /* PEM chains; cert_files[i] pairs with key_files[i] */
    const char *const *key_files;
    size_t ncerts;
    const char *min_version;    /* "tls10".."tls13"; NULL = tls12 */
    const char *client_auth;    /* Coder's names: none, request, require-any,
                                   verify-if-given, require-and-verify; NULL = none */
    const char *client_ca_file; /* PEM, for verifying client certificates */
    const char *ciphers;        /* comma-separated OpenSSL/IANA names, or NULL */
    bool allow_insecure_ciphers;
    const char *alpn; /* wire-format ALPN list the server prefers, or NULL */
};

/* Days the self-signed certificate is valid (Coder's 180). */
#define TLS_SELF_SIGNED_DAYS 180

/* Builds a server context. With no certificate (ncerts 0) it makes, as Coder does, a
 * self-signed one in memory for 127.0.0.1 and logs one line saying so. Returns NULL and sets
 * *err (one line, caller frees) on failure. */
struct tls_ctx *tls_ctx_new_server(const struct tls_server_opts *o, char **err);
void tls_ctx_free(struct tls_ctx *c);
/* Parses Coder's --tls-client-auth names. Returns 0 or -1. */
int tls_client_auth_parse(const char *s, enum tls_client_auth *out);
/* Parses "tls10".."tls13" into an OpenSSL version constant. Returns 0 or -1. */
int tls_version_parse(const char *s, int *out);

struct tls_client_opts {
    const char *cert_file; /* PEM certificate (chain) presented to the server, or NULL */
    const char *key_file;
    const char *alpn; /* wire-format ALPN list to offer, or NULL */
    /* Accept any certificate. Only for upstreams inside a workspace (an app's own self-signed
     * HTTPS, reached through the agent's authenticated tunnel), as Coder's app proxy does. */
    bool no_verify;
};

/* Builds a client context: TLS 1.2+, the peer verified against the system trust store, which
 * SSL_CERT_FILE / SSL_CERT_DIR replace (OpenSSL's default paths). The store is loaded with the
 * context's first session (costly: keep one context per configuration). Returns NULL with *err
 * (one line) on failure. */
struct tls_ctx *tls_ctx_new_client(const struct tls_client_opts *o, char **err);

/* A session over memory BIOs. */
struct tls_session *tls_session_new(struct tls_ctx *c);
/* A client session: SNI and the certificate's name checked against server_name (a DNS name or
 * an IP literal; IP literals are checked against IP SANs and send no SNI). */
struct tls_session *tls_session_new_client(struct tls_ctx *c, const char *server_name);
void tls_session_free(struct tls_session *s);
/* Hands received ciphertext to the session. */
void tls_session_feed(struct tls_session *s, const void *data, size_t n);
/* The same without a copy: the session reads data in place until tls_session_keep_input, which
 * copies what it has not read yet; data must stay valid until then. */
void tls_session_feed_borrowed(struct tls_session *s, const void *data, size_t n);
void tls_session_keep_input(struct tls_session *s);
/* Reads decrypted bytes: >0 bytes read, 0 needs more input (check take_output, the handshake
 * may have produced some), <0 fatal error (the connection must close; *why names it). */
int tls_session_read(struct tls_session *s, void *out, size_t cap, const char **why);
/* Encrypts plaintext. Returns 0, or <0 on a fatal error. */
int tls_session_write(struct tls_session *s, const void *data, size_t n);
/* Moves pending ciphertext into out (appending). Returns the number of bytes moved. */
size_t tls_session_take_output(struct tls_session *s, struct buf *out);
/* Sends close_notify (its bytes come out through take_output). */
void tls_session_shutdown(struct tls_session *s);
bool tls_session_handshake_done(const struct tls_session *s);
/* The negotiated ALPN protocol ("h2", "http/1.1") or "" before/without it. */
const char *tls_session_alpn(const struct tls_session *s);

#endif
