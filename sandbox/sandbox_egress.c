/*
 * The egress policy of an isolated session (--session-egress-allow,
 * --session-egress-deny). slirp4netns relays the session's connections
 * from the host's side, so without a policy a session reaches whatever the
 * host reaches: the host itself, its LAN, and the cloud metadata service
 * on 169.254.169.254. Before W1 may go on to drop root and fork the
 * worker, a child of W0 enters the session's network namespace and installs
 * there an nftables output chain (through libnftables) that, in order:
 *
 *   accepts lo, and DNS to slirp4netns's resolver (10.0.2.3 port 53);
 *   accepts each --session-egress-allow CIDR;
 *   rejects each --session-egress-deny CIDR, the host's own addresses
 *   (as W0 sees them, before the session's namespace exists), and by
 *   default the private, shared, link-local, loopback, multicast and
 *   reserved ranges of IPv4 and IPv6;
 *   accepts the rest (the internet).
 *
 * Rejection is an ICMP administratively-prohibited answer, so that a
 * connect(2) fails at once (EHOSTUNREACH; a datagram gets EPERM) instead of
 * hanging. The session, unprivileged in its namespace, cannot change the
 * rules.
 */
#include <sys/socket.h>
#include <sys/types.h>

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nftables/libnftables.h>

#include "log.h"
#include "sandbox.h"
#include "sandbox_policy.h"
#include "util.h"

char *sandbox_egress_rules(const struct sandbox_conf *);

#define EGRESS_DNS "10.0.2.3"
#define EGRESS_MAX 4096 /* rules: the host's addresses and the lists */
#define EGRESS_REJECT "reject with icmpx type admin-prohibited"

/* Denied unless allowed: no address a session needs lives here. */
static const char *egress_default_deny[] = {
    "0.0.0.0/8", /* "this" network */
    "10.0.0.0/8", /* private */
    "100.64.0.0/10", /* shared (carrier-grade NAT) */
    "127.0.0.0/8", /* loopback */
    "169.254.0.0/16", /* link-local: cloud metadata services */
    "172.16.0.0/12", /* private */
    "192.0.0.0/24", /* IETF protocol assignments */
    "192.168.0.0/16", /* private */
    "198.18.0.0/15", /* benchmarking */
    "224.0.0.0/4", /* multicast */
    "240.0.0.0/4", /* reserved, and broadcast */
    "::1/128", /* loopback */
    "::ffff:0:0/96", /* IPv4-mapped: the same ranges by another name */
    "64:ff9b:1::/48", /* local-use NAT64 */
    "fc00::/7", /* unique local */
    "fe80::/10", /* link-local */
    "ff00::/8", /* multicast */
};

struct rules {
	char *r_buf;
	size_t r_len, r_cap;
	int r_count;
};

static void rules_add(struct rules *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
rules_add(struct rules *r, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(
		    r->r_buf + r->r_len, r->r_cap - r->r_len, fmt, ap);
		va_end(ap);
		if (n >= 0 && (size_t)n < r->r_cap - r->r_len) {
			r->r_len += (size_t)n;
			return;
		}
		r->r_cap *= 2;
		r->r_buf = realloc(r->r_buf, r->r_cap);
		if (r->r_buf == NULL)
			fatalx("out of memory");
	}
}

/* One rule per CIDR: accept or reject. Invalid CIDRs are errors. */
static int
rules_cidrs(
    struct rules *r, const char *const *cidrs, size_t n, const char *verdict)
{
	char norm[INET6_ADDRSTRLEN + 8];
	size_t i;
	int family;

	for (i = 0; i < n; i++) {
		if ((family = parse_cidr(cidrs[i], norm, sizeof(norm))) == 0) {
			log_warnx(
			    "egress policy: '%s' is not a CIDR", cidrs[i]);
			return -1;
		}
		if (++r->r_count > EGRESS_MAX) {
			log_warnx(
			    "egress policy: more than %d rules", EGRESS_MAX);
			return -1;
		}
		rules_add(r, "\t\t%s daddr %s %s\n", family == 4 ? "ip" : "ip6",
		    norm, verdict);
	}
	return 0;
}

/*
 * The ruleset for nft, from the allow and deny lists and the host's
 * addresses; NULL (after a log line) if an entry is not a CIDR.
 */
char *
sandbox_egress_ruleset(const char *const *allow, size_t nallow,
    const char *const *deny, size_t ndeny, const char *const *host,
    size_t nhost)
{
	struct rules r = {NULL, 0, 4096, 0};

	if ((r.r_buf = malloc(r.r_cap)) == NULL)
		fatalx("out of memory");
	r.r_buf[0] = '\0';
	rules_add(&r,
	    "table inet remotemedia_egress {\n"
	    "\tchain output {\n"
	    "\t\ttype filter hook output priority filter; "
	    "policy accept;\n"
	    "\t\toifname \"lo\" accept\n"
	    "\t\tip daddr " EGRESS_DNS " udp dport 53 accept\n"
	    "\t\tip daddr " EGRESS_DNS " tcp dport 53 accept\n");
	if (rules_cidrs(&r, allow, nallow, "accept") == -1 ||
	    rules_cidrs(&r, deny, ndeny, EGRESS_REJECT) == -1 ||
	    rules_cidrs(&r, host, nhost, EGRESS_REJECT) == -1 ||
	    rules_cidrs(&r, egress_default_deny,
	        sizeof(egress_default_deny) / sizeof(egress_default_deny[0]),
	        EGRESS_REJECT) == -1) {
		free(r.r_buf);
		return NULL;
	}
	rules_add(&r, "\t}\n}\n");
	return r.r_buf;
}

/* The host's own addresses, as /32 and /128 CIDRs (W0, before the clone). */
static char **
egress_host_addresses(size_t *n)
{
	struct ifaddrs *ifa, *i;
	char addr[INET6_ADDRSTRLEN], **out = NULL;
	size_t cap = 0;
	const void *a;
	int fam;

	*n = 0;
	if (getifaddrs(&ifa) == -1) {
		log_warn("getifaddrs");
		return NULL;
	}
	for (i = ifa; i != NULL; i = i->ifa_next) {
		if (i->ifa_addr == NULL)
			continue;
		fam = i->ifa_addr->sa_family;
		if (fam == AF_INET)
			a = &((struct sockaddr_in *)i->ifa_addr)->sin_addr;
		else if (fam == AF_INET6)
			a = &((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr;
		else
			continue;
		if (inet_ntop(fam, a, addr, sizeof(addr)) == NULL)
			continue;
		if (*n == cap) {
			cap = cap ? 2 * cap : 16;
			out = realloc(out, cap * sizeof(*out));
			if (out == NULL)
				fatalx("out of memory");
		}
		out[*n] = malloc(strlen(addr) + 6);
		if (out[*n] == NULL)
			fatalx("out of memory");
		sprintf(out[*n], "%s/%d", addr, fam == AF_INET ? 32 : 128);
		(*n)++;
	}
	freeifaddrs(ifa);
	return out;
}

/* The session's ruleset, or NULL on an error (logged). */
char *
sandbox_egress_rules(const struct sandbox_conf *sc)
{
	char **host, *rules;
	size_t nhost, i;

	host = egress_host_addresses(&nhost);
	rules = sandbox_egress_ruleset(sc->sc_egress_allow,
	    sc->sc_n_egress_allow, sc->sc_egress_deny, sc->sc_n_egress_deny,
	    (const char *const *)host, nhost);
	for (i = 0; i < nhost; i++)
		free(host[i]);
	free(host);
	return rules;
}

/* Inside the session's network namespace, as root: load it. */
int
sandbox_egress_apply(const char *rules)
{
	struct nft_ctx *nft;
	const char *err;
	char first[256];
	int rv;

	if ((nft = nft_ctx_new(NFT_CTX_DEFAULT)) == NULL) {
		log_warnx("egress policy: nft_ctx_new failed");
		return -1;
	}
	nft_ctx_buffer_output(nft);
	nft_ctx_buffer_error(nft);
	if ((rv = nft_run_cmd_from_buffer(nft, rules)) != 0) {
		err = nft_ctx_get_error_buffer(nft);
		snprintf(first, sizeof(first), "%s",
		    err != NULL && *err != '\0' ? err : "unknown error");
		first[strcspn(first, "\n")] = '\0';
		log_warnx(
		    "egress policy: nftables refused the rules: %s", first);
	}
	nft_ctx_free(nft);
	return rv == 0 ? 0 : -1;
}
