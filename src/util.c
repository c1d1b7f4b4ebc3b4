/* Helpers shared by the front, the worker and rmctl. */
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

/*
 * Keep freed memory up to keep bytes instead of giving it back at once, and
 * serve blocks under that size from the heap rather than fresh mmaps. With
 * glibc's defaults every 1 MiB message was a new mapping whose pages fault
 * in one by one, which costs most of a large transfer on a virtual machine.
 */
void
malloc_keep(size_t keep)
{
	mallopt(M_MMAP_THRESHOLD, (int)(keep / 2));
	mallopt(M_TRIM_THRESHOLD, (int)keep);
}

/*
 * Give back what start-up used and a process that now only waits would
 * keep until it ends: the C heap's free pages, and the stack's pages below
 * this call. Each is private memory of every idle session (a sandbox
 * helper's stack held 20-30 KiB, a worker's more). The stack's pages read
 * as zeros if it grows there again; its mapping is found in
 * /proc/self/maps, and is left alone where that cannot be read. The
 * frame's address, not a local's: AddressSanitizer may keep locals on a
 * fake stack of its own, which must not be touched.
 */
__attribute__((noinline)) void
mem_release(void)
{
	char line[128];
	uintptr_t here = (uintptr_t)__builtin_frame_address(0), lo = 0, hi = 0,
	          below;
	long page = sysconf(_SC_PAGESIZE);
	int start = 1, found = 0;
	FILE *f;

	malloc_trim(0);
	if (page <= 0 || (f = fopen("/proc/self/maps", "re")) == NULL)
		return;
	while (!found && fgets(line, sizeof(line), f) != NULL) {
		found = start &&
		    sscanf(line, "%" SCNxPTR "-%" SCNxPTR, &lo, &hi) == 2 &&
		    lo <= here && here < hi && strstr(line, "[stack]") != NULL;
		start = strchr(line, '\n') != NULL; /* the next is a line's */
	}
	fclose(f);
	/* A whole page of margin below this frame, for madvise's own. */
	below = (here & ~((uintptr_t)page - 1)) - (uintptr_t)page;
	if (found && lo < below)
		madvise((void *)lo, below - lo, MADV_DONTNEED);
}

void *
xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (p == NULL)
		fatal("%s", __func__);
	return p;
}

void *
xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (p == NULL)
		fatal("%s", __func__);
	return p;
}

void *
xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);

	if (q == NULL)
		fatal("%s", __func__);
	return q;
}

char *
xstrdup(const char *s)
{
	char *p = strdup(s);

	if (p == NULL)
		fatal("%s", __func__);
	return p;
}

char *
xstrndup(const char *s, size_t n)
{
	char *p = strndup(s, n);

	if (p == NULL)
		fatal("%s", __func__);
	return p;
}

/* A unit suffix and what it multiplies by. */
struct unit {
	const char *u_suffix;
	uint64_t u_mul;
};

static const struct unit size_units[] = {{"", 1}, {"B", 1}, {"K", 1ULL << 10},
    {"M", 1ULL << 20}, {"G", 1ULL << 30}, {"T", 1ULL << 40}, {NULL, 0}};
static const struct unit duration_units[] = {
    {"ms", 1}, {"s", 1000}, {"m", 60 * 1000}, {"h", 3600 * 1000}, {NULL, 0}};

/*
 * Parse an unsigned decimal followed by one of the units' suffixes, into
 * the number times the unit; -1 on anything else or an overflow.
 */
static int
parse_with_unit(const char *s, const struct unit *units, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (s == NULL || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0)
		return -1;
	for (; units->u_suffix != NULL; units++) {
		if (strcmp(end, units->u_suffix) != 0)
			continue;
		if (v > UINT64_MAX / units->u_mul)
			return -1;
		*out = v * units->u_mul;
		return 0;
	}
	return -1;
}

/* Parse a size written 512, 512K, 64M or 1G (powers of 1024). */
int
parse_size(const char *s, uint64_t *out)
{
	return parse_with_unit(s, size_units, out);
}

/* Parse a duration written 500ms, 30s, 5m or 2h, into milliseconds. */
int
parse_duration_ms(const char *s, uint64_t *out)
{
	return parse_with_unit(s, duration_units, out);
}

int
parse_onoff(const char *s, int *out)
{
	if (strcmp(s, "on") == 0)
		*out = 1;
	else if (strcmp(s, "off") == 0)
		*out = 0;
	else
		return -1;
	return 0;
}

/* Split HOST:PORT or [IPv6]:PORT. */
int
parse_hostport(const char *s, char *host, size_t hostlen, uint16_t *port)
{
	const char *colon, *h = s;
	size_t hl;
	char *end;
	unsigned long p;

	if (*s == '[') {
		const char *rb = strchr(s, ']');

		if (rb == NULL || rb[1] != ':')
			return -1;
		h = s + 1;
		hl = (size_t)(rb - h);
		colon = rb + 1;
	} else {
		colon = strrchr(s, ':');
		if (colon == NULL || memchr(s, ':', (size_t)(colon - s)))
			return -1;
		hl = (size_t)(colon - s);
	}
	if (hl == 0 || hl >= hostlen || colon[1] < '0' || colon[1] > '9')
		return -1;
	errno = 0;
	p = strtoul(colon + 1, &end, 10);
	if (errno != 0 || *end != '\0' || p > 65535)
		return -1;
	memcpy(host, h, hl);
	host[hl] = '\0';
	*port = (uint16_t)p;
	return 0;
}

static int
rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	if (remove(path) == -1 && errno != ENOENT)
		log_warn("remove %s", path);
	return 0;
}

/* Remove a tree, depth first, without following symlinks. */
int
rm_rf(const char *path)
{
	struct stat sb;

	if (lstat(path, &sb) == -1)
		return errno == ENOENT ? 0 : -1;
	return nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

/* Create a directory and its parents. */
int
mkdir_p(const char *path, unsigned int mode)
{
	char buf[PATH_MAX];
	char *p;

	if (strlen(path) >= sizeof(buf))
		return -1;
	strcpy(buf, path);
	for (p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) == -1 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	if (mkdir(buf, mode) == -1 && errno != EEXIST)
		return -1;
	return 0;
}

/*
 * Hold dir/.lock for the process's life, or exit: two servers on one
 * directory would remove each other's sessions or half-built
 * environments at start, as leftovers. flag names the option for the
 * message. A file system without locks only gets a warning.
 */
void
lock_dir(const char *dir, const char *flag)
{
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/.lock", dir);
	if ((fd = open(path, O_RDONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW,
	         0600)) == -1)
		fatal("%s %s: cannot open %s", flag, dir, path);
	if (flock(fd, LOCK_EX | LOCK_NB) == 0)
		return; /* fd stays open: the lock goes with the process */
	if (errno == EWOULDBLOCK)
		fatalx("%s %s is in use by another remotemediad: give each "
		       "server its own",
		    flag, dir);
	log_warn("%s %s: cannot lock %s", flag, dir, path);
	close(fd);
}

/* Fill buf with len-1 random hex digits and a NUL. */
void
random_hex(char *buf, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	uint8_t raw[64];
	size_t i, n = (len - 1 + 1) / 2;

	if (n > sizeof(raw))
		n = sizeof(raw);
	if (getrandom(raw, n, 0) != (ssize_t)n)
		fatal("getrandom");
	for (i = 0; i + 1 < len && i / 2 < n; i++)
		buf[i] = hex[(raw[i / 2] >> ((i % 2) ? 0 : 4)) & 0xf];
	buf[i] = '\0';
}

uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

uint32_t
get_be32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
	    ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

void
put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* The numeric host and the port of a socket's own address (IPv4, IPv6). */
int
sock_hostport(int fd, char *host, size_t hostlen, uint16_t *port)
{
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &sslen) == -1)
		return -1;
	if (ss.ss_family == AF_INET) {
		inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host,
		    hostlen);
		*port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	} else if (ss.ss_family == AF_INET6) {
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr,
		    host, hostlen);
		*port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	} else
		return -1;
	return 0;
}

/* Whether an address is a loopback one (127/8, ::1, ::ffff:127/104). */
int
sock_is_loopback(const struct sockaddr *sa)
{
	const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
	const struct in6_addr *a6;

	if (sa->sa_family == AF_INET)
		return ntohl(sin->sin_addr.s_addr) >> 24 == 127;
	if (sa->sa_family != AF_INET6)
		return 0;
	a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
	return IN6_IS_ADDR_LOOPBACK(a6) ||
	    (IN6_IS_ADDR_V4MAPPED(a6) && a6->s6_addr[12] == 127);
}

/*
 * Parse an IPv4 or IPv6 CIDR ("10.0.0.0/8", "fe80::/10"; a bare address is
 * /32 or /128) and write it normalized, host bits cleared, to out. Returns
 * 4 or 6, or 0 if it is not one.
 */
int
parse_cidr(const char *s, char *out, size_t outlen)
{
	unsigned char a[16];
	char addr[INET6_ADDRSTRLEN + 1], *end;
	const char *slash = strchr(s, '/');
	size_t len = slash != NULL ? (size_t)(slash - s) : strlen(s);
	int family, max, i;
	long prefix;

	if (len == 0 || len >= sizeof(addr))
		return 0;
	memcpy(addr, s, len);
	addr[len] = '\0';
	if (inet_pton(AF_INET, addr, a) == 1) {
		family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, addr, a) == 1) {
		family = AF_INET6;
		max = 128;
	} else
		return 0;
	prefix = max;
	if (slash != NULL) {
		if (slash[1] < '0' || slash[1] > '9')
			return 0;
		errno = 0;
		prefix = strtol(slash + 1, &end, 10);
		if (errno != 0 || *end != '\0' || prefix < 0 || prefix > max)
			return 0;
	}
	for (i = 0; i < max / 8; i++) {
		if (i * 8 >= prefix)
			a[i] = 0;
		else if (i * 8 + 8 > prefix)
			a[i] &= (unsigned char)(0xff << (8 - (prefix - i * 8)));
	}
	if (inet_ntop(family, a, addr, sizeof(addr)) == NULL)
		return 0;
	snprintf(out, outlen, "%s/%ld", addr, prefix);
	return family == AF_INET ? 4 : 6;
}
