/*
 * fuzz_server_pool: a kept server connection (relay/server_pool.h) answering its reset
 * with arbitrary bytes, as a hostile or broken server might.
 *
 * Input: one control byte, then the server's bytes. The control byte's low 4 bits pick the
 * size of the pieces the bytes arrive in (1 to 16 times 37), bit 4 whether a take is
 * attempted only at the end or after every piece, bit 5 whether the leg is marked as TLS
 * (the take then asks for those settings). The server end of a socketpair writes the
 * pieces; the loop's events are delivered as the worker's loop would.
 *
 * Invariants (abort on violation):
 *   - the pool holds at most the one server, and never more parameter bytes than it allows;
 *   - a take succeeds only for a reset that completed: then the replay is, framed by the
 *     codec, exactly AuthenticationOk, ParameterStatus messages, one BackendKeyData with
 *     the kept key, and ReadyForQuery 'I', each valid, and nothing else;
 *   - a server that was taken or closed is gone from the pool.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "relay/server_pool.h"

#include "fuzz_check.h"

static const uint8_t key[4] = {0xca, 0xfe, 0xba, 0xbe};
static const uint8_t startup[] = {0, 0, 0, 17, 0, 3, 0, 0, 'u', 's', 'e', 'r', 0, 'a', 0, 0, 0};

/* The parking session's watch: after the park, the loop reports the leg to the pool. */
static void session_event(struct loop *loop, struct loop_watch *w, uint32_t events)
{
	CHECK(!"a parked leg's event reached the session that left it");
}

static struct loop_watch session_watch = {.cb = session_event};

static void deliver(struct loop *loop)
{
	struct epoll_event ev[4];
	int n = epoll_wait(loop->epfd, ev, 4, 0);

	for (int i = 0; i < n; i++) {
		struct loop_watch *w = ev[i].data.ptr;

		w->cb(loop, w, ev[i].events);
	}
}

/* The replay of a take: AuthenticationOk, ParameterStatus*, BackendKeyData, RFQ 'I'. */
static void check_replay(const uint8_t *p, uint32_t n)
{
	enum { AUTH, PARAMS, READY, END } want = AUTH;
	uint32_t at = 0;

	while (at < n) {
		struct proto_msg m;
		uint32_t code, pid, klen;
		const uint8_t *k;
		uint8_t tx;

		CHECK(proto_frame(p + at, n - at, PROTO_BACKEND, PROTO_MAX_BODY, &m) == PROTO_OK);
		CHECK(PROTO_HEADER_LEN + m.body_len <= n - at);
		CHECK(proto_validate(PROTO_BACKEND, &m) == PROTO_OK);
		switch (want) {
		case AUTH:
			CHECK(proto_read_auth(&m, &code) == PROTO_OK && code == AUTH_REQ_OK);
			want = PARAMS;
			break;
		case PARAMS:
			if (m.type == PqMsg_ParameterStatus)
				break;
			CHECK(proto_read_backend_key(&m, &pid, &k, &klen) == PROTO_OK);
			CHECK(pid == 4242 && klen == sizeof(key) && memcmp(k, key, klen) == 0);
			want = READY;
			break;
		case READY:
			CHECK(proto_read_ready(&m, &tx) == PROTO_OK && tx == 'I');
			want = END;
			break;
		case END:
			CHECK(!"bytes after ReadyForQuery");
		}
		at += PROTO_HEADER_LEN + m.body_len;
	}
	CHECK(want == END);
}

/* A take as a session asking for TLS settings 9 (when tls) or plaintext. */
static bool try_take(struct server_pool *p, const struct server_pool_limits *lim, bool tls,
		     uint64_t now)
{
	static uint8_t login[SERVER_POOL_LOGIN_MAX];
	const struct server_pool_accept acc = {.tls_generation = tls ? 9 : 0, .plain_ok = !tls};
	struct server_keep *want = NULL, *got = NULL;
	struct transport storage, *leg = NULL;
	uint32_t n = 0;
	bool taken;

	CHECK(server_keep_new(&want, "fuzz", startup, sizeof(startup), now) == 0);
	taken = server_pool_take(p, lim, want, &acc, now, &storage, &leg, &got, login,
				 sizeof(login), &n);
	server_keep_free(want);
	if (!taken)
		return false;
	CHECK(p->nlinks == 0 && got && leg == &storage);
	CHECK(got->params_len <= SERVER_KEEP_PARAMS_MAX);
	check_replay(login, n);
	server_keep_free(got);
	transport_destroy(leg);
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct loop loop;
	static bool ready;
	struct server_pool_limits lim = {.max_idle = 1, .idle_ms = 60000, .lifetime_ms = 0};
	struct server_pool pool;
	struct server_keep *keep = NULL;
	struct transport t;
	uint8_t drain[256];
	size_t piece, at = 0;
	bool each, tls, taken = false;
	int sv[2];

	if (size < 1)
		return 0;
	if (!ready) {
		CHECK(loop_init(&loop, NULL, NULL) == 0);
		ready = true;
	}
	piece = 37u * (1u + (data[0] & 0x0f));
	each = data[0] & 0x10;
	tls = data[0] & 0x20;
	data++;
	size--;
	server_pool_init(&pool, &loop);
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0);
	transport_sock_init(&t, sv[0], true);
	CHECK(loop_add(&loop, &session_watch, sv[0], EPOLLIN | EPOLLOUT) == 0);
	CHECK(server_keep_new(&keep, "fuzz", startup, sizeof(startup), 0) == 0);
	CHECK(server_keep_param(keep, "server_version", "15.14") == 0);
	keep->tls_generation = tls ? 9 : 0;
	CHECK(server_pool_park(&pool, &lim, &t, keep, 4242, key, sizeof(key), 0) == 0);
	while (read(sv[1], drain, sizeof(drain)) > 0) /* the DISCARD ALL */
		;
	while (at < size && !taken && pool.nlinks) {
		size_t n = size - at < piece ? size - at : piece;
		ssize_t w = send(sv[1], data + at, n, MSG_NOSIGNAL);

		if (w > 0)
			at += (size_t)w;
		deliver(&loop);
		CHECK(pool.nlinks <= 1);
		if (each)
			taken = try_take(&pool, &lim, tls, 1);
		if (w < 0 && errno != EAGAIN)
			break;
	}
	deliver(&loop);
	if (!taken && pool.nlinks)
		taken = try_take(&pool, &lim, tls, 1);
	CHECK(!taken || pool.nlinks == 0);
	server_pool_destroy(&pool);
	CHECK(pool.nlinks == 0);
	close(sv[1]);
	return 0;
}
