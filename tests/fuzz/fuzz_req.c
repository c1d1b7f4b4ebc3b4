/*
 * Fuzz target: the requirement validator (src/req.c).
 *
 * The input is parsed as one requirement of explicit length (NULs and all),
 * then split at '\n' into up to 100 entries for req_validate_list. What is
 * accepted must be canonical: it parses again to itself, it holds nothing
 * that pip would read as an option, a path or a URL, and a list comes out
 * sorted and de-duplicated, holding every entry's canonical form. What is refused must say why in printable text.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "req.h"
#include "util.h"

#include "fuzz.h"

#define FUZZ_REQ_ENTRIES 100

/* An error message goes to logs and grpc-message: printable ASCII only. */
static void
check_printable(const char *s)
{
	CHECK(*s != '\0');
	for (; *s != '\0'; s++)
		CHECK(*s >= 0x20 && *s <= 0x7e);
}

/* A canonical form holds no option, path, URL or direct reference. */
static void
check_harmless(const char *canon)
{
	const char *p;

	CHECK((canon[0] >= 'a' && canon[0] <= 'z') ||
	    (canon[0] >= '0' && canon[0] <= '9'));
	CHECK(strchr(canon, '@') == NULL);
	CHECK(strchr(canon, '/') == NULL);
	CHECK(strchr(canon, '\\') == NULL);
	CHECK(strstr(canon, "://") == NULL);
	for (p = canon; *p != '\0'; p++)
		CHECK(*p >= 0x20 && *p <= 0x7e);
}

/* Parse s; if accepted, its canonical form must parse again to itself. */
static int
check_one(const char *s, size_t len, char *canon, size_t canonlen)
{
	struct req rq, rq2;
	char err[512], again[REQ_FORMAT_SIZE];

	if (req_parse(s, len, &rq, err, sizeof(err)) == -1) {
		check_printable(err);
		return -1;
	}
	CHECK(err[0] == '\0');
	CHECK(rq.rq_name[0] != '\0');
	req_format(&rq, canon, canonlen);
	CHECK(strlen(canon) + 1 < canonlen);
	check_harmless(canon);
	if (req_parse(canon, strlen(canon), &rq2, err, sizeof(err)) == -1) {
		fprintf(stderr, "canonical \"%s\" refused: %s\n", canon, err);
		abort();
	}
	req_format(&rq2, again, sizeof(again));
	CHECK(strcmp(canon, again) == 0);
	CHECK(strcmp(rq.rq_name, rq2.rq_name) == 0);
	CHECK(strcmp(rq.rq_extras, rq2.rq_extras) == 0);
	CHECK(strcmp(rq.rq_spec, rq2.rq_spec) == 0);
	CHECK(strcmp(rq.rq_marker, rq2.rq_marker) == 0);
	return 0;
}

/* Split buf at '\n' in place into at most max entries. */
static size_t
split_lines(char *buf, const char **ent, size_t max)
{
	size_t n = 0;
	char *p = buf, *nl;

	while (n < max) {
		ent[n++] = p;
		if ((nl = strchr(p, '\n')) == NULL)
			break;
		*nl = '\0';
		p = nl + 1;
	}
	return n;
}

/* Is s one of the list's entries? */
static int
list_has(const struct req_list *rl, const char *s)
{
	size_t i;

	for (i = 0; i < rl->rl_n; i++)
		if (strcmp(rl->rl_v[i], s) == 0)
			return 1;
	return 0;
}

/* An accepted list: sorted, unique, canonical, and stable when re-run. */
static void
check_list_out(const char *const *ent, size_t n, const struct req_list *norm)
{
	struct req_list again;
	char canon[REQ_FORMAT_SIZE], err[512];
	size_t i;

	CHECK(norm->rl_n <= n);
	CHECK((n == 0) == (norm->rl_n == 0));
	for (i = 0; i < norm->rl_n; i++) {
		CHECK(check_one(norm->rl_v[i], strlen(norm->rl_v[i]), canon,
		          sizeof(canon)) == 0);
		CHECK(strcmp(norm->rl_v[i], canon) == 0);
		CHECK(i == 0 || strcmp(norm->rl_v[i - 1], norm->rl_v[i]) < 0);
	}
	CHECK(req_validate_list((const char *const *)norm->rl_v, norm->rl_n,
	          &again, err, sizeof(err)) == 0);
	CHECK(again.rl_n == norm->rl_n);
	for (i = 0; i < again.rl_n; i++)
		CHECK(strcmp(again.rl_v[i], norm->rl_v[i]) == 0);
	req_list_free(&again);
	for (i = 0; i < n; i++) {
		CHECK(check_one(ent[i], strlen(ent[i]), canon, sizeof(canon)) ==
		    0);
		CHECK(list_has(norm, canon));
	}
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	log_init("fuzz_req", LOG_LEVEL_ERROR);
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *ent[FUZZ_REQ_ENTRIES];
	char canon[REQ_FORMAT_SIZE], err[512], *buf;
	struct req_list norm;
	size_t n;
	int rv;

	check_one((const char *)data, size, canon, sizeof(canon));
	buf = xmalloc(size + 1);
	memcpy(buf, data, size);
	buf[size] = '\0';
	n = split_lines(buf, ent, FUZZ_REQ_ENTRIES);
	if (size == 0)
		n = 0;
	rv = req_validate_list(ent, n, &norm, err, sizeof(err));
	if (rv == 0)
		check_list_out(ent, n, &norm);
	else {
		CHECK(norm.rl_v == NULL && norm.rl_n == 0);
		check_printable(err);
		CHECK(n > 0);
	}
	CHECK(rv == -1 || n <= REQ_MAX_COUNT);
	req_list_free(&norm);
	free(buf);
	return 0;
}
