/*
 * The Admin service (proto/remotemedia.proto): Info, ListSessions and
 * EndSession, unary, answered by the front. With a token file, an admin
 * token sees and ends every session and another token only its own (the
 * rest are NOT_FOUND to it); without one, every caller is an admin, as the
 * server then serves loopback only (or was told --allow-unauthenticated).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "front.h"
#include "log.h"
#include "req.h"
#include "util.h"

#include "remotemedia.pb-c.h"

#define ADMIN_VERSION "0.1.0"
#define ADMIN_MAX_LINES 16

static uint64_t started_ms;

void
front_admin_init(void)
{
	started_ms = now_ms();
}

/*
 * Without a token file there are no owners: only a client on loopback may
 * list and end sessions (a server told --allow-unauthenticated serves a
 * network address, whose clients must not end each other's sessions).
 */
static int
admin_loopback(const struct stream *s)
{
	const char *peer = s->str_conn != NULL ? front_conn_peer(s->str_conn)
	                                       : "";

	return strncmp(peer, "127.", 4) == 0 || strncmp(peer, "::1:", 4) == 0 ||
	    strncmp(peer, "::ffff:127.", 11) == 0;
}

/* May this stream see (and end) this session? */
static int
admin_may_see(const struct stream *s, const struct session *ses)
{
	if (!front_auth_enabled() || s->str_admin)
		return 1;
	return ses->ses_owner != NULL && s->str_owner != NULL &&
	    strcmp(ses->ses_owner, s->str_owner) == 0;
}

/* Pack a reply, send it and end the call with OK. */
static void
admin_reply(struct stream *s, const ProtobufCMessage *m)
{
	size_t len = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = xcalloc(1, len + 1);

	protobuf_c_message_pack(m, buf);
	front_grpc_send(s, buf, len);
	free(buf);
	front_grpc_finish(s, GRPC_OK, NULL);
}

struct limits {
	Remotemedia__V1__InfoReply__LimitsEntry *entries;
	Remotemedia__V1__InfoReply__LimitsEntry **ptrs;
	size_t n, cap;
};

static void
admin_limit(void *arg, const char *name, const char *value)
{
	struct limits *l = arg;
	Remotemedia__V1__InfoReply__LimitsEntry init =
	    REMOTEMEDIA__V1__INFO_REPLY__LIMITS_ENTRY__INIT;

	if (l->n == l->cap)
		return;
	l->entries[l->n] = init;
	l->entries[l->n].key = xstrdup(name);
	l->entries[l->n].value = xstrdup(value);
	l->ptrs[l->n] = &l->entries[l->n];
	l->n++;
}

static void
admin_info(struct stream *s)
{
	Remotemedia__V1__InfoReply r = REMOTEMEDIA__V1__INFO_REPLY__INIT;
	char lines[ADMIN_MAX_LINES][160], *ptrs[ADMIN_MAX_LINES];
	struct limits l;
	size_t i;
	int n;

	memset(&l, 0, sizeof(l));
	l.cap = 64;
	l.entries = xcalloc(l.cap, sizeof(*l.entries));
	l.ptrs = xcalloc(l.cap, sizeof(*l.ptrs));
	front_config_section(&front_conf, "limits", admin_limit, &l);
	front_config_section(
	    &front_conf, "sessions and the sandbox", admin_limit, &l);
	n = front_sandbox_describe(lines, ADMIN_MAX_LINES);
	for (i = 0; i < (size_t)n; i++)
		ptrs[i] = lines[i];
	r.version = (char *)ADMIN_VERSION;
	r.protocol = REMOTEMEDIA__V1__PROTOCOL_VERSION__PROTOCOL_V1;
	r.python_version = (char *)front_python_version();
	r.n_limits = l.n;
	r.limits = l.ptrs;
	r.n_sandbox = (size_t)n;
	r.sandbox = ptrs;
	r.sessions = (uint32_t)front_session_count();
	r.spares = (uint32_t)front_pool_count();
	r.draining = front_draining() != 0;
	r.uptime_ms = now_ms() - started_ms;
	admin_reply(s, &r.base);
	for (i = 0; i < l.n; i++) {
		free(l.entries[i].key);
		free(l.entries[i].value);
	}
	free(l.entries);
	free(l.ptrs);
}

static void
admin_list(struct stream *s)
{
	Remotemedia__V1__ListSessionsReply r =
	    REMOTEMEDIA__V1__LIST_SESSIONS_REPLY__INIT;
	Remotemedia__V1__SessionInfo init = REMOTEMEDIA__V1__SESSION_INFO__INIT;
	Remotemedia__V1__SessionInfo *infos, **ptrs;
	const struct req_list *reqs;
	struct session *ses;
	size_t n = 0;
	uint64_t now = now_ms();

	infos = xcalloc((size_t)front_session_count() + 1, sizeof(*infos));
	ptrs = xcalloc((size_t)front_session_count() + 1, sizeof(*ptrs));
	TAILQ_FOREACH (ses, front_session_list(), ses_entry) {
		if (!admin_may_see(s, ses))
			continue;
		infos[n] = init;
		infos[n].session_id = ses->ses_id;
		infos[n].owner = ses->ses_owner != NULL ? ses->ses_owner : "";
		infos[n].state = (char *)front_session_state_name(
		    ses->ses_state);
		infos[n].age_ms = now - ses->ses_started_at;
		infos[n].calls = ses->ses_ncalls;
		infos[n].calls_in_flight = ses->ses_inflight;
		infos[n].pid = ses->ses_pid > 0 ? ses->ses_pid : 0;
		infos[n].uid = ses->ses_uid;
		if (ses->ses_env != NULL) {
			/* Borrowed from the env: packed before it can go. */
			reqs = front_env_reqs(ses->ses_env);
			infos[n].n_requirements = reqs->rl_n;
			infos[n].requirements = reqs->rl_v;
		}
		ptrs[n] = &infos[n];
		n++;
	}
	r.n_sessions = n;
	r.sessions = ptrs;
	admin_reply(s, &r.base);
	free(infos);
	free(ptrs);
}

static void
admin_end(struct stream *s, const uint8_t *msg, size_t len)
{
	Remotemedia__V1__EndSessionRequest *req;
	Remotemedia__V1__EndSessionReply r =
	    REMOTEMEDIA__V1__END_SESSION_REPLY__INIT;
	struct session *ses;
	char why[200];

	req = remotemedia__v1__end_session_request__unpack(NULL, len, msg);
	if (req == NULL) {
		front_grpc_finish(
		    s, GRPC_INVALID_ARGUMENT, "malformed EndSessionRequest");
		return;
	}
	TAILQ_FOREACH (ses, front_session_list(), ses_entry)
		if (strcmp(ses->ses_id, req->session_id) == 0 &&
		    admin_may_see(s, ses))
			break;
	if (ses == NULL) {
		snprintf(why, sizeof(why), "no session '%.40s'%s",
		    req->session_id,
		    front_auth_enabled() && !s->str_admin
		        ? " among this token's sessions"
		        : "");
		remotemedia__v1__end_session_request__free_unpacked(req, NULL);
		front_grpc_finish(s, GRPC_NOT_FOUND, why);
		return;
	}
	remotemedia__v1__end_session_request__free_unpacked(req, NULL);
	snprintf(why, sizeof(why),
	    "the session was ended by %s%s%s (Admin/EndSession)",
	    s->str_owner != NULL ? "token '" : "an administrator",
	    s->str_owner != NULL ? s->str_owner : "",
	    s->str_owner != NULL ? "'" : "");
	log_info("session %s: ended through Admin/EndSession by %s",
	    ses->ses_id, s->str_owner != NULL ? s->str_owner : "(no token)");
	front_session_end(ses, GRPC_ABORTED, why);
	admin_reply(s, &r.base);
}

/* One request message of an Admin call. */
void
front_admin_call(struct stream *s, const uint8_t *msg, size_t len)
{
	ProtobufCMessage *req;

	switch (s->str_rpc) {
	case RPC_ADMIN_INFO:
	case RPC_ADMIN_LIST:
		/* Both requests are empty messages: any fields are unknown
		 * to us, and protobuf ignores unknown fields. */
		req = protobuf_c_message_unpack(s->str_rpc == RPC_ADMIN_INFO
		        ? &remotemedia__v1__info_request__descriptor
		        : &remotemedia__v1__list_sessions_request__descriptor,
		    NULL, len, msg);
		if (req == NULL) {
			front_grpc_finish(
			    s, GRPC_INVALID_ARGUMENT, "malformed request");
			return;
		}
		protobuf_c_message_free_unpacked(req, NULL);
		if (s->str_rpc == RPC_ADMIN_INFO)
			admin_info(s);
		else if (!front_auth_enabled() && !admin_loopback(s))
			front_grpc_finish(s, GRPC_PERMISSION_DENIED,
			    "without a token file, only a client on loopback "
			    "may "
			    "list sessions");
		else
			admin_list(s);
		return;
	case RPC_ADMIN_END:
		if (!front_auth_enabled() && !admin_loopback(s)) {
			front_grpc_finish(s, GRPC_PERMISSION_DENIED,
			    "without a token file, only a client on loopback "
			    "may "
			    "end sessions");
			return;
		}
		admin_end(s, msg, len);
		return;
	default:
		front_grpc_finish(s, GRPC_INTERNAL, "not an Admin call");
	}
}
