/*
 * The requirement validator (architecture section 4): PEP 508 strings are
 * checked and normalized here before pip ever sees them. Only name-based
 * requirements are accepted: no options, paths, URLs or direct references.
 */
#ifndef RM_REQ_H
#define RM_REQ_H

#include <stddef.h>

#define REQ_MAX_LEN 256 /* one requirement string, in bytes */
#define REQ_MAX_COUNT 64 /* entries in one list */
#define REQ_NAME_MAX 100 /* characters in a name or an extra */
#define REQ_VERSION_MAX 64 /* characters in one version */

#define REQ_NAME_SIZE 128
#define REQ_EXTRAS_SIZE (REQ_MAX_LEN + 1)
#define REQ_SPEC_SIZE (REQ_MAX_LEN + 1)
/* A canonical marker has single spaces between tokens: at most twice as long. */
#define REQ_MARKER_SIZE (2 * REQ_MAX_LEN + 1)
/* Enough for req_format: name[extras]spec; marker and the NUL. */
#define REQ_FORMAT_SIZE \
	(REQ_NAME_SIZE + REQ_EXTRAS_SIZE + REQ_SPEC_SIZE + REQ_MARKER_SIZE + 8)

/* One parsed requirement; every field is in canonical form. */
struct req {
	char rq_name[REQ_NAME_SIZE]; /* PEP 503: lowercase, [-_.]+ -> '-' */
	char rq_extras[REQ_EXTRAS_SIZE]; /* normalized, sorted, unique, "a,b" */
	char rq_spec[REQ_SPEC_SIZE]; /* sorted unique clauses, ">=1,<2" */
	char rq_marker[REQ_MARKER_SIZE]; /* tokens joined by single spaces */
};

/*
 * Parse and normalize one requirement of len bytes (it may hold NULs).
 * Return 0, or -1 with a message in err that says why and quotes the input.
 */
int req_parse(const char *, size_t, struct req *, char *, size_t);

/*
 * A session's requirements in canonical form, sorted and de-duplicated:
 * the one list that goes from the client's Open to the builder's Build.
 * Each string, and the array, is malloc'd.
 */
struct req_list {
	char **rl_v;
	size_t rl_n;
};

/*
 * Validate n NUL-terminated requirements. On success, and if out is not
 * NULL, fill it with their canonical forms, sorted and de-duplicated; the
 * caller frees it with req_list_free. On failure out is left empty.
 */
int req_validate_list(
    const char *const *, size_t, struct req_list *, char *, size_t);

/* Copy a list, strings and all, into an empty one. */
void req_list_copy(struct req_list *, const struct req_list *);

/* Free what a list holds and leave it empty, to be reused or freed again. */
void req_list_free(struct req_list *);

/* Write the canonical "name[extras]spec; marker", truncated to fit. */
void req_format(const struct req *, char *, size_t);

#endif
