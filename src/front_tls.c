/*
 * TLS for the front: --tls-cert and --tls-key (and --tls-client-ca, which
 * requires client certificates). Only TLS 1.2 and 1.3; ALPN must select
 * "h2", or the handshake fails. SIGHUP loads the certificate again: new
 * connections use the new context, established ones keep theirs.
 */
#include <sys/stat.h>

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <event2/bufferevent_ssl.h>

#include "front.h"
#include "log.h"
#include "util.h"

#define TLS_CIPHERS_12 \
	"ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL"

static SSL_CTX *tls_ctx;

/* ALPN: the client must offer h2; anything else ends the handshake. */
static int
tls_alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
    const unsigned char *in, unsigned int inlen, void *arg)
{
	static const unsigned char h2[] = {2, 'h', '2'};

	if (SSL_select_next_proto((unsigned char **)out, outlen, h2, sizeof(h2),
	        in, inlen) != OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	return SSL_TLSEXT_ERR_OK;
}

/* The OpenSSL error queue, as one line for the log. */
static const char *
tls_error(void)
{
	static char buf[256];
	unsigned long e = ERR_get_error();

	ERR_error_string_n(e, buf, sizeof(buf));
	ERR_clear_error();
	return buf;
}

/*
 * OpenSSL asks for a passphrase: the key is encrypted. Say none, rather
 * than let OpenSSL prompt on a terminal, which would stop the front.
 */
static int
tls_no_passphrase(char *buf, int size, int rwflag, void *arg)
{
	if (arg != NULL)
		*(int *)arg = 1;
	return 0;
}

/*
 * A file OpenSSL is to read must be a regular file: a FIFO or a device
 * would block the front. Opened without blocking, to look.
 */
static int
tls_check_file(const char *flag, const char *path)
{
	struct stat sb;
	int fd, ok;

	if ((fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY)) ==
	    -1) {
		log_warn("TLS: %s %s", flag, path);
		return -1;
	}
	ok = fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode);
	close(fd);
	if (!ok) {
		log_warnx("TLS: %s %s: not a regular file", flag, path);
		return -1;
	}
	return 0;
}

/* Build a server context from the configured files; NULL on error. */
static SSL_CTX *
tls_ctx_new(void)
{
	SSL_CTX *ctx;
	int encrypted = 0;

	if (tls_check_file("--tls-cert", front_conf.fc_tls_cert) == -1 ||
	    tls_check_file("--tls-key", front_conf.fc_tls_key) == -1 ||
	    (front_conf.fc_tls_client_ca != NULL &&
	        tls_check_file(
	            "--tls-client-ca", front_conf.fc_tls_client_ca) == -1))
		return NULL;
	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL)
		return NULL;
	SSL_CTX_set_default_passwd_cb(ctx, tls_no_passphrase);
	SSL_CTX_set_default_passwd_cb_userdata(ctx, &encrypted);
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	/* TLS 1.2 with the AEAD, forward-secret suites that HTTP/2 allows
	 * (RFC 9113 9.2.2); TLS 1.3's are all such. */
	if (SSL_CTX_set_cipher_list(ctx, TLS_CIPHERS_12) != 1) {
		log_warnx("TLS: cannot set the cipher list: %s", tls_error());
		ERR_clear_error();
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_options(ctx,
	    SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
	        SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_alpn_select_cb(ctx, tls_alpn_cb, NULL);
	if (SSL_CTX_use_certificate_chain_file(ctx, front_conf.fc_tls_cert) !=
	        1 ||
	    SSL_CTX_use_PrivateKey_file(
	        ctx, front_conf.fc_tls_key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		if (encrypted)
			log_warnx("TLS: --tls-key %s is encrypted: give a key "
			          "without a passphrase (the front cannot ask "
			          "for one)",
			    front_conf.fc_tls_key);
		else
			log_warnx("TLS: cannot load %s / %s: %s",
			    front_conf.fc_tls_cert, front_conf.fc_tls_key,
			    tls_error());
		ERR_clear_error();
		SSL_CTX_free(ctx);
		return NULL;
	}
	/* encrypted is this function's: the context must not keep it. */
	SSL_CTX_set_default_passwd_cb_userdata(ctx, NULL);
	if (front_conf.fc_tls_client_ca != NULL) {
		if (SSL_CTX_load_verify_locations(
		        ctx, front_conf.fc_tls_client_ca, NULL) != 1) {
			log_warnx("TLS: cannot load %s: %s",
			    front_conf.fc_tls_client_ca, tls_error());
			SSL_CTX_free(ctx);
			return NULL;
		}
		SSL_CTX_set_verify(ctx,
		    SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	}
	return ctx;
}

int
front_tls_enabled(void)
{
	return tls_ctx != NULL;
}

/* At start: TLS if a certificate was given; both files are needed. */
void
front_tls_init(void)
{
	if (front_conf.fc_tls_cert == NULL && front_conf.fc_tls_key == NULL) {
		if (front_conf.fc_tls_client_ca != NULL)
			fatalx_config(
			    "--tls-client-ca needs --tls-cert and --tls-key");
		return;
	}
	if (front_conf.fc_tls_cert == NULL || front_conf.fc_tls_key == NULL)
		fatalx_config("TLS needs both --tls-cert and --tls-key");
	if ((tls_ctx = tls_ctx_new()) == NULL)
		fatalx_config("TLS could not be set up");
	log_info("TLS on: %s%s", front_conf.fc_tls_cert,
	    front_conf.fc_tls_client_ca ? ", client certificates required"
	                                : "");
}

/* SIGHUP: a new context from the files; a bad one keeps the old. */
void
front_tls_reload(void)
{
	SSL_CTX *ctx;

	if (tls_ctx == NULL)
		return;
	if ((ctx = tls_ctx_new()) == NULL) {
		log_warnx(
		    "TLS certificate not reloaded; the previous one stays");
		return;
	}
	SSL_CTX_free(tls_ctx); /* connections hold their own reference */
	tls_ctx = ctx;
	log_info("TLS certificate reloaded from %s", front_conf.fc_tls_cert);
}

/* A bufferevent for a new connection: TLS when on, plain otherwise. */
struct bufferevent *
front_tls_bufferevent(int fd)
{
	SSL *ssl;

	if (tls_ctx == NULL)
		return bufferevent_socket_new(
		    front_base, fd, BEV_OPT_CLOSE_ON_FREE);
	if ((ssl = SSL_new(tls_ctx)) == NULL)
		return NULL;
	return bufferevent_openssl_socket_new(front_base, fd, ssl,
	    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
}

/* Why a TLS connection failed, for the debug log. */
const char *
front_tls_last_error(struct bufferevent *bev)
{
	unsigned long e;
	static char buf[256];

	if (tls_ctx == NULL || (e = bufferevent_get_openssl_error(bev)) == 0)
		return "";
	ERR_error_string_n(e, buf, sizeof(buf));
	return buf;
}

/* After the handshake: ALPN must have chosen h2 (a client may offer none). */
int
front_tls_alpn_ok(struct bufferevent *bev)
{
	const unsigned char *proto = NULL;
	unsigned int len = 0;
	SSL *ssl;

	if (tls_ctx == NULL)
		return 1;
	if ((ssl = bufferevent_openssl_get_ssl(bev)) == NULL)
		return 0;
	SSL_get0_alpn_selected(ssl, &proto, &len);
	return len == 2 && memcmp(proto, "h2", 2) == 0;
}
