/*
 * test_auth_scram: SCRAM-SHA-256 messages, keys, verifiers and both exchanges.
 *
 *   - the RFC 7677 test vector, through the relay's SCRAM server;
 *   - vectors from a real PostgreSQL 15 (data/auth/pg15_vectors.txt: a role's
 *     pg_authid.rolpassword and a recorded libpq exchange), through the server and the
 *     client: byte-for-byte the messages PostgreSQL and libpq sent;
 *   - every parser against the hostile cases in data/auth/scram_messages.txt;
 *   - the exchanges refusing what a hostile client or server does (wrong mechanism, gs2
 *     mismatches, channel-binding downgrade, nonce tricks, out-of-order messages, a bad
 *     server signature, e=...), mock and doomed exchanges, ClientKey recovery;
 *   - the CPU cost of one verification (printed, not asserted).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "auth/scram.h"
#include "auth_cases.h"

#include <openssl/rand.h>
#include <stdint.h>
#include <time.h>

static unsigned failures;

static void case_fail(const struct auth_case *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void case_fail(const struct auth_case *c, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "data/auth/%s:%u: ", c->file, c->lineno);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	failures++;
}

static const struct {
	const char *name;
	int status;
} status_names[] = {
	{"OK", SCRAM_OK},
	{"MALFORMED", SCRAM_ERR_MALFORMED},
	{"TOO_LONG", SCRAM_ERR_TOO_LONG},
	{"MECHANISM", SCRAM_ERR_MECHANISM},
	{"EXTENSION", SCRAM_ERR_EXTENSION},
	{"AUTHZID", SCRAM_ERR_AUTHZID},
	{"NONCE", SCRAM_ERR_NONCE},
	{"NONCE_MISMATCH", SCRAM_ERR_NONCE_MISMATCH},
	{"CBIND_TYPE", SCRAM_ERR_CBIND_TYPE},
	{"CBIND_FLAG", SCRAM_ERR_CBIND_FLAG},
	{"CBIND_DOWNGRADE", SCRAM_ERR_CBIND_DOWNGRADE},
	{"CBIND_CHECK", SCRAM_ERR_CBIND_CHECK},
	{"CBIND_ATTR", SCRAM_ERR_CBIND_ATTR},
	{"PROOF", SCRAM_ERR_PROOF},
	{"SALT", SCRAM_ERR_SALT},
	{"ITERATIONS", SCRAM_ERR_ITERATIONS},
	{"VERIFIER", SCRAM_ERR_VERIFIER},
};

static int status_by_name(const char *name)
{
	for (size_t i = 0; i < sizeof(status_names) / sizeof(status_names[0]); i++)
		if (strcmp(name, status_names[i].name) == 0)
			return status_names[i].status;
	return 1;
}

static const char *status_name(int status)
{
	for (size_t i = 0; i < sizeof(status_names) / sizeof(status_names[0]); i++)
		if (status_names[i].status == status)
			return status_names[i].name;
	return "?";
}

/* Run parser on msg[0..len); the status. */
static int run_parser(const char *parser, const char *arg, const char *msg, size_t len)
{
	union {
		struct scram_client_first cf;
		struct scram_server_first sf;
		struct scram_client_final cfin;
		struct scram_server_final sfin;
		struct scram_verifier v;
	} u;
	uint8_t out[SCRAM_MESSAGE_MAX];

	if (strcmp(parser, "client_first") == 0)
		return scram_parse_client_first(msg, len, &u.cf);
	if (strcmp(parser, "server_first") == 0)
		return scram_parse_server_first(msg, len, arg, strlen(arg), &u.sf);
	if (strcmp(parser, "client_final") == 0)
		return scram_parse_client_final(msg, len, &u.cfin);
	if (strcmp(parser, "server_final") == 0)
		return scram_parse_server_final(msg, len, &u.sfin);
	if (strcmp(parser, "verifier") == 0)
		return scram_verifier_parse(msg, len, &u.v);
	if (strcmp(parser, "b64") == 0)
		return scram_b64_decode(msg, len, out, sizeof(out)) < 0 ? SCRAM_ERR_MALFORMED
									: SCRAM_OK;
	return 1;
}

static void one_message_case(struct auth_case *c, void *arg)
{
	const char *arg1 = c->nfields > 2 ? c->fields[2] : "";
	int want, got;
	char *p;

	if (c->nfields < 2 || !c->has_bytes) {
		case_fail(c, "expected: parser status [arg] | \"message\"");
		return;
	}
	want = status_by_name(c->fields[1]);
	if (want > 0) {
		case_fail(c, "unknown status %s", c->fields[1]);
		return;
	}
	p = auth_case_copy(c->bytes, c->len);
	got = run_parser(c->fields[0], arg1, p, c->len);
	if (got > 0)
		case_fail(c, "unknown parser %s", c->fields[0]);
	else if (got != want)
		case_fail(c, "%s: got %s (%d), want %s", c->fields[0], status_name(got), got,
			  c->fields[1]);
	free(p);
	/* Every prefix, each in its own exact block: never a read past the end. */
	for (size_t k = 0; k < c->len; k++) {
		p = auth_case_copy(c->bytes, k);
		(void)run_parser(c->fields[0], arg1, p, k);
		free(p);
	}
}

static void test_message_cases(void **state)
{
	unsigned n;

	failures = 0;
	n = auth_cases_each("scram_messages.txt", one_message_case, NULL);
	assert_true(n > 100);
	assert_int_equal(failures, 0);
}

/* ---- helpers ------------------------------------------------------------------------- */

static void b64_to(const char *b64, uint8_t *out, size_t want)
{
	assert_int_equal(scram_b64_decode(b64, strlen(b64), out, want), (int)want);
}

static struct scram_verifier verifier_for(const char *password, const char *salt_b64,
					  uint32_t iterations)
{
	struct scram_verifier v;
	uint8_t salt[SCRAM_SALT_MAX_LEN];
	int n = scram_b64_decode(salt_b64, strlen(salt_b64), salt, sizeof(salt));

	assert_true(n > 0);
	assert_int_equal(scram_verifier_from_password(password, salt, (size_t)n, iterations, &v),
			 SCRAM_OK);
	return v;
}

static void assert_verifier_equal(const struct scram_verifier *a, const struct scram_verifier *b)
{
	assert_int_equal(a->iterations, b->iterations);
	assert_int_equal(a->salt_len, b->salt_len);
	assert_memory_equal(a->salt, b->salt, a->salt_len);
	assert_memory_equal(a->stored_key, b->stored_key, SCRAM_KEY_LEN);
	assert_memory_equal(a->server_key, b->server_key, SCRAM_KEY_LEN);
}

static const uint8_t mock_secret[32] = "pgwarden unit test mock secret!";

static struct scram_server_params server_params(const struct scram_verifier *v, const char *user)
{
	struct scram_server_params p = {
		.verifier = v,
		.user = user,
		.mock_secret = mock_secret,
		.mock_secret_len = sizeof(mock_secret),
		.mock_iterations = 4096,
		.mock_salt_len = 16,
	};
	return p;
}

/* ---- RFC 7677 ----------------------------------------------------------------------- */

#define RFC_SALT "W22ZaJ0SNY7soEsUEjb6gQ=="
#define RFC_CLIENT_FIRST "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
#define RFC_SERVER_NONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define RFC_SERVER_FIRST                                                                    \
	"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
#define RFC_CLIENT_FINAL                                                                    \
	"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9" \
	"zjfMHgsqmmiz7AndVQ="
#define RFC_SERVER_FINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

static void test_rfc7677_server(void **state)
{
	struct scram_verifier v = verifier_for("pencil", RFC_SALT, 4096);
	struct scram_server_params p = server_params(&v, "user");
	struct scram_server s;
	uint8_t salted[SCRAM_KEY_LEN], ck[SCRAM_KEY_LEN];
	char out[SCRAM_MESSAGE_MAX];
	size_t n = 0;
	uint32_t mlen;
	const uint8_t *mechs;

	p.server_nonce = RFC_SERVER_NONCE;
	assert_int_equal(scram_server_init(&s, &p), SCRAM_OK);
	mechs = scram_server_mechanisms(&s, &mlen);
	assert_int_equal(mlen, sizeof(SCRAM_MECHANISM) + 1);
	assert_memory_equal(mechs, SCRAM_MECHANISM "\0", mlen);
	assert_int_equal(scram_server_first(&s, SCRAM_MECHANISM, (const uint8_t *)RFC_CLIENT_FIRST,
					    strlen(RFC_CLIENT_FIRST), out, sizeof(out), &n),
			 SCRAM_OK);
	assert_int_equal(n, strlen(RFC_SERVER_FIRST));
	assert_memory_equal(out, RFC_SERVER_FIRST, n);
	assert_int_equal(scram_server_final(&s, (const uint8_t *)RFC_CLIENT_FINAL,
					    strlen(RFC_CLIENT_FINAL), out, sizeof(out), &n),
			 SCRAM_OK);
	assert_int_equal(n, strlen(RFC_SERVER_FINAL));
	assert_memory_equal(out, RFC_SERVER_FINAL, n);
	/* The ClientKey recovered from the proof is the password's. */
	uint8_t salt[16];

	b64_to(RFC_SALT, salt, sizeof(salt));
	assert_int_equal(scram_salted_password("pencil", salt, 16, 4096, salted), SCRAM_OK);
	assert_int_equal(scram_client_key(salted, ck), SCRAM_OK);
	assert_non_null(scram_server_client_key(&s));
	assert_memory_equal(scram_server_client_key(&s), ck, SCRAM_KEY_LEN);
	scram_server_clear(&s);
	assert_null(scram_server_client_key(&s));
}

/* The same exchange with a wrong password, a locked (doomed) user, and an unknown user:
 * all three fail the same way, at the same step. */
static void test_rfc7677_failures_look_alike(void **state)
{
	struct scram_verifier right = verifier_for("pencil", RFC_SALT, 4096);
	struct scram_verifier wrong = verifier_for("pencil2", RFC_SALT, 4096);
	struct scram_server_params ps[3];
	char out[SCRAM_MESSAGE_MAX];
	size_t n;

	ps[0] = server_params(&wrong, "user");
	ps[1] = server_params(&right, "user");
	ps[1].doomed = true;
	ps[2] = server_params(NULL, "user");
	for (int i = 0; i < 3; i++) {
		struct scram_server s;

		ps[i].server_nonce = RFC_SERVER_NONCE;
		assert_int_equal(scram_server_init(&s, &ps[i]), SCRAM_OK);
		assert_int_equal(scram_server_first(&s, SCRAM_MECHANISM,
						    (const uint8_t *)RFC_CLIENT_FIRST,
						    strlen(RFC_CLIENT_FIRST), out, sizeof(out), &n),
				 SCRAM_OK);
		assert_int_equal(scram_server_final(&s, (const uint8_t *)RFC_CLIENT_FINAL,
						    strlen(RFC_CLIENT_FINAL), out, sizeof(out), &n),
				 SCRAM_ERR_AUTH_FAILED);
		assert_null(scram_server_client_key(&s));
		assert_string_equal(scram_error(SCRAM_ERR_AUTH_FAILED)->sqlstate, "28P01");
		scram_server_clear(&s);
	}
}

/* ---- mock exchanges ------------------------------------------------------------------- */

static void server_first_for(const char *user, const struct scram_verifier *v, char *out,
			     size_t *n)
{
	struct scram_server_params p = server_params(v, user);
	struct scram_server s;

	p.server_nonce = "fixedservernonce";
	assert_int_equal(scram_server_init(&s, &p), SCRAM_OK);
	assert_int_equal(scram_server_first(&s, SCRAM_MECHANISM, (const uint8_t *)RFC_CLIENT_FIRST,
					    strlen(RFC_CLIENT_FIRST), out, SCRAM_MESSAGE_MAX, n),
			 SCRAM_OK);
	out[*n] = '\0';
	scram_server_clear(&s);
}

static void test_mock_is_deterministic_and_plausible(void **state)
{
	char a[SCRAM_MESSAGE_MAX], b[SCRAM_MESSAGE_MAX], c[SCRAM_MESSAGE_MAX];
	char real[SCRAM_MESSAGE_MAX];
	struct scram_server_first sf, sr;
	struct scram_verifier v;
	uint8_t salt[16];
	size_t n;

	server_first_for("ghost", NULL, a, &n);
	server_first_for("ghost", NULL, b, &n);
	server_first_for("ghost2", NULL, c, &n);
	/* Same user: same salt every time (a real salt does not change between tries). */
	assert_string_equal(a, b);
	assert_string_not_equal(a, c);
	/* Shaped like a real verifier's answer: same salt length and iteration count. */
	assert_int_equal(RAND_bytes(salt, sizeof(salt)), 1);
	assert_int_equal(scram_verifier_from_password("x", salt, 16, 4096, &v), SCRAM_OK);
	server_first_for("realuser", &v, real, &n);
	assert_int_equal(scram_parse_server_first(a, strlen(a), "rOprNGfwEbeRWgbNEkqO", 20, &sf),
			 SCRAM_OK);
	assert_int_equal(scram_parse_server_first(real, strlen(real), "rOprNGfwEbeRWgbNEkqO", 20,
						  &sr),
			 SCRAM_OK);
	assert_int_equal(sf.salt_len, sr.salt_len);
	assert_int_equal(sf.iterations, sr.iterations);
	assert_int_equal(strlen(a), strlen(real) - strlen("realuser") + strlen("realuser"));
	/* A different secret gives a different salt for the same user. */
	{
		struct scram_server_params p = server_params(NULL, "ghost");
		static const uint8_t other[32] = "another secret, another salt...";
		struct scram_server s;
		char d[SCRAM_MESSAGE_MAX];

		p.mock_secret = other;
		p.server_nonce = "fixedservernonce";
		assert_int_equal(scram_server_init(&s, &p), SCRAM_OK);
		assert_int_equal(scram_server_first(&s, SCRAM_MECHANISM,
						    (const uint8_t *)RFC_CLIENT_FIRST,
						    strlen(RFC_CLIENT_FIRST), d, sizeof(d), &n),
				 SCRAM_OK);
		d[n] = '\0';
		assert_string_not_equal(a, d);
	}
}

/* ---- our client against our server -------------------------------------------------------- */

struct pair {
	struct scram_server s;
	struct scram_client c;
	char buf[SCRAM_MESSAGE_MAX];
	size_t n;
	const char *mech;
};

/* Run the whole exchange; the first non-OK status, or SCRAM_OK. */
static int exchange(struct pair *x, const struct scram_server_params *sp,
		    const struct scram_client_params *cp)
{
	char srv[SCRAM_MESSAGE_MAX];
	size_t sn;
	uint32_t mlen;
	const uint8_t *mechs;
	int rc;

	if ((rc = scram_server_init(&x->s, sp)) || (rc = scram_client_init(&x->c, cp)))
		return rc;
	mechs = scram_server_mechanisms(&x->s, &mlen);
	if ((rc = scram_client_first(&x->c, mechs, mlen, &x->mech, x->buf, sizeof(x->buf), &x->n)))
		return rc;
	if ((rc = scram_server_first(&x->s, x->mech, (uint8_t *)x->buf, x->n, srv, sizeof(srv),
				     &sn)))
		return rc;
	if ((rc = scram_client_final(&x->c, (uint8_t *)srv, sn, x->buf, sizeof(x->buf), &x->n)))
		return rc;
	if ((rc = scram_server_final(&x->s, (uint8_t *)x->buf, x->n, srv, sizeof(srv), &sn)))
		return rc;
	return scram_client_verify(&x->c, (uint8_t *)srv, sn);
}

static void test_roundtrip_password_and_client_key(void **state)
{
	struct scram_verifier v = verifier_for("s3cr\xc3\xa9t", RFC_SALT, 4096);
	struct scram_server_params sp = server_params(&v, "alice");
	struct scram_client_params cp = {.password = "s3cr\xc3\xa9t"};
	struct pair x, y;
	uint8_t ck[SCRAM_KEY_LEN];

	assert_int_equal(exchange(&x, &sp, &cp), SCRAM_OK);
	assert_string_equal(x.mech, SCRAM_MECHANISM);
	memcpy(ck, scram_server_client_key(&x.s), SCRAM_KEY_LEN);
	/* PgBouncer's trick: the recovered ClientKey logs in to a server with the same
	 * verifier, without the password. */
	cp = (struct scram_client_params){.client_key = ck, .verifier = &v};
	assert_int_equal(exchange(&y, &sp, &cp), SCRAM_OK);
	/* ... and not to one whose verifier has another salt (a different password hash). */
	{
		struct scram_verifier other = verifier_for("s3cr\xc3\xa9t", "QUJDREVGR0hJSktMTU5PUA==",
							   4096);
		struct scram_server_params osp = server_params(&other, "alice");

		assert_int_equal(exchange(&y, &osp, &cp), SCRAM_ERR_NO_CREDENTIAL);
	}
	/* A wrong password fails at the server, and the client never sees a signature. */
	cp = (struct scram_client_params){.password = "secret"};
	assert_int_equal(exchange(&y, &sp, &cp), SCRAM_ERR_AUTH_FAILED);
}

static void test_roundtrip_channel_binding(void **state)
{
	struct scram_verifier v = verifier_for("pw", RFC_SALT, 4096);
	uint8_t cert_hash[32], other_hash[32];
	struct scram_server_params sp = server_params(&v, "bob");
	struct scram_client_params cp = {.password = "pw", .tls = true};
	struct pair x;

	memset(cert_hash, 0xab, sizeof(cert_hash));
	memset(other_hash, 0xcd, sizeof(other_hash));
	sp.cbind_data = cert_hash;
	sp.cbind_len = sizeof(cert_hash);
	cp.cbind_data = cert_hash;
	cp.cbind_len = sizeof(cert_hash);
	assert_int_equal(exchange(&x, &sp, &cp), SCRAM_OK);
	assert_string_equal(x.mech, SCRAM_MECHANISM_PLUS);
	/* The client saw another certificate (a man in the middle): the check fails. */
	cp.cbind_data = other_hash;
	assert_int_equal(exchange(&x, &sp, &cp), SCRAM_ERR_CBIND_CHECK);
	/* TLS without known binding data on the client side: "n", plain mechanism, accepted
	 * (the client chose not to bind, as libpq with channel_binding=disable). */
	cp.cbind_data = NULL;
	cp.cbind_len = 0;
	assert_int_equal(exchange(&x, &sp, &cp), SCRAM_OK);
	assert_string_equal(x.mech, SCRAM_MECHANISM);
	/* Server without binding, client on TLS: "y", plain mechanism, accepted. */
	sp.cbind_data = NULL;
	sp.cbind_len = 0;
	cp.cbind_data = cert_hash;
	cp.cbind_len = sizeof(cert_hash);
	assert_int_equal(exchange(&x, &sp, &cp), SCRAM_OK);
	assert_string_equal(x.mech, SCRAM_MECHANISM);
}

/* ---- a hostile client against the server -------------------------------------------------- */

struct first_case {
	const char *mech;
	const char *msg;
	bool plus_offered;
	int want;
};

static void test_server_refuses_hostile_first(void **state)
{
	static const struct first_case cases[] = {
		{"SCRAM-SHA-1", "n,,n=,r=rOprNGfwEbeRWgbNEkqO", false, SCRAM_ERR_MECHANISM},
		{"scram-sha-256", "n,,n=,r=rOprNGfwEbeRWgbNEkqO", false, SCRAM_ERR_MECHANISM},
		{"", "n,,n=,r=rOprNGfwEbeRWgbNEkqO", false, SCRAM_ERR_MECHANISM},
		{NULL, "n,,n=,r=rOprNGfwEbeRWgbNEkqO", false, SCRAM_ERR_MECHANISM},
		/* -PLUS only when offered */
		{SCRAM_MECHANISM_PLUS, "p=tls-server-end-point,,n=,r=rOprNGfwEbeRWgbNEkqO", false,
		 SCRAM_ERR_MECHANISM},
		/* gs2 flag against the mechanism */
		{SCRAM_MECHANISM_PLUS, "n,,n=,r=rOprNGfwEbeRWgbNEkqO", true, SCRAM_ERR_CBIND_FLAG},
		{SCRAM_MECHANISM_PLUS, "y,,n=,r=rOprNGfwEbeRWgbNEkqO", true, SCRAM_ERR_CBIND_FLAG},
		{SCRAM_MECHANISM, "p=tls-server-end-point,,n=,r=rOprNGfwEbeRWgbNEkqO", true,
		 SCRAM_ERR_CBIND_FLAG},
		{SCRAM_MECHANISM, "p=tls-server-end-point,,n=,r=rOprNGfwEbeRWgbNEkqO", false,
		 SCRAM_ERR_CBIND_FLAG},
		/* "y" while we offered -PLUS: a downgrade */
		{SCRAM_MECHANISM, "y,,n=,r=rOprNGfwEbeRWgbNEkqO", true, SCRAM_ERR_CBIND_DOWNGRADE},
		{SCRAM_MECHANISM, "y,,n=,r=rOprNGfwEbeRWgbNEkqO", false, SCRAM_OK},
		{SCRAM_MECHANISM, "n,,n=,r=rOprNGfwEbeRWgbNEkqO", true, SCRAM_OK},
		{SCRAM_MECHANISM, "n,,n=,r=rOprNGfwEbeRWgbNEkqO,m=1", false, SCRAM_ERR_EXTENSION},
	};
	struct scram_verifier v = verifier_for("pw", RFC_SALT, 4096);
	uint8_t hash[32] = {1};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct scram_server_params p = server_params(&v, "u");
		struct scram_server s;
		char out[SCRAM_MESSAGE_MAX];
		size_t n;
		int rc;

		if (cases[i].plus_offered) {
			p.cbind_data = hash;
			p.cbind_len = sizeof(hash);
		}
		assert_int_equal(scram_server_init(&s, &p), SCRAM_OK);
		rc = scram_server_first(&s, cases[i].mech, (const uint8_t *)cases[i].msg,
					strlen(cases[i].msg), out, sizeof(out), &n);
		if (rc != cases[i].want)
			fail_msg("case %zu (%s): got %d want %d", i, cases[i].msg, rc, cases[i].want);
		/* A failed exchange stays failed. */
		if (rc)
			assert_int_equal(scram_server_final(&s, (const uint8_t *)RFC_CLIENT_FINAL,
							    strlen(RFC_CLIENT_FINAL), out,
							    sizeof(out), &n),
					 SCRAM_ERR_STATE);
	}
}

static void test_server_refuses_hostile_final(void **state)
{
	static const struct {
		const char *msg;
		int want;
	} cases[] = {
		/* nonce: not ours, truncated, extended, the client's alone */
		{"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k1,p=dHzbZapWIk4jUhN+Ute9yt"
		 "ag9zjfMHgsqmmiz7AndVQ=",
		 SCRAM_ERR_NONCE_MISMATCH},
		{"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k,p=dHzbZapWIk4jUhN+Ute9yta"
		 "g9zjfMHgsqmmiz7AndVQ=",
		 SCRAM_ERR_NONCE_MISMATCH},
		{"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k00,p=dHzbZapWIk4jUhN+Ute9y"
		 "tag9zjfMHgsqmmiz7AndVQ=",
		 SCRAM_ERR_NONCE_MISMATCH},
		{"c=biws,r=rOprNGfwEbeRWgbNEkqO,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
		 SCRAM_ERR_NONCE_MISMATCH},
		/* c= must repeat the gs2 header ("n,,"): "y,," and "p=..,," are not it */
		{"c=eSws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9yt"
		 "ag9zjfMHgsqmmiz7AndVQ=",
		 SCRAM_ERR_CBIND_ATTR},
		{"c=biwsAAAA,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ut"
		 "e9ytag9zjfMHgsqmmiz7AndVQ=",
		 SCRAM_ERR_CBIND_ATTR},
		/* a proof of the right shape but wrong */
		{"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=AAAAAAAAAAAAAAAAAAAAAA"
		 "AAAAAAAAAAAAAAAAAAAAA=",
		 SCRAM_ERR_AUTH_FAILED},
		{"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9yt"
		 "ag9zjfMHgsqmmiz7AndVQ",
		 SCRAM_ERR_PROOF},
		/* the RFC's own message passes */
		{RFC_CLIENT_FINAL, SCRAM_OK},
	};
	struct scram_verifier v = verifier_for("pencil", RFC_SALT, 4096);

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct scram_server_params p = server_params(&v, "user");
		struct scram_server s;
		char out[SCRAM_MESSAGE_MAX];
		size_t n;
		int rc;

		p.server_nonce = RFC_SERVER_NONCE;
		assert_int_equal(scram_server_init(&s, &p), SCRAM_OK);
		assert_int_equal(scram_server_first(&s, SCRAM_MECHANISM,
						    (const uint8_t *)RFC_CLIENT_FIRST,
						    strlen(RFC_CLIENT_FIRST), out, sizeof(out), &n),
				 SCRAM_OK);
		rc = scram_server_final(&s, (const uint8_t *)cases[i].msg, strlen(cases[i].msg), out,
					sizeof(out), &n);
		if (rc != cases[i].want)
			fail_msg("case %zu: got %d want %d", i, rc, cases[i].want);
		/* No second final, whatever happened. */
		assert_int_equal(scram_server_final(&s, (const uint8_t *)RFC_CLIENT_FINAL,
						    strlen(RFC_CLIENT_FINAL), out, sizeof(out), &n),
				 SCRAM_ERR_STATE);
	}
}

/* ---- a hostile server against the client ----------------------------------------------- */

static void test_client_refuses_hostile_server(void **state)
{
	static const char *const firsts[] = {
		"r=clientnonce1234,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",           /* no server part */
		"r=clientnonce1234servernonce,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0",    /* 0 iterations */
		"r=clientnonce1234servernonce,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=2000000000",
		"r=clientnonce1234servernonce,s=,i=4096",                         /* empty salt */
		"r=otherclientnonceservernonce,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
		"r=clientnonce1234servernonce,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,x=y",
	};
	static const int wants[] = {
		SCRAM_ERR_NONCE_MISMATCH, SCRAM_ERR_ITERATIONS, SCRAM_ERR_ITERATIONS, SCRAM_ERR_SALT,
		SCRAM_ERR_NONCE_MISMATCH, SCRAM_ERR_MALFORMED,
	};
	struct scram_client_params cp = {.password = "pw", .client_nonce = "clientnonce1234"};
	static const uint8_t mechs[] = SCRAM_MECHANISM "\0";
	char out[SCRAM_MESSAGE_MAX];
	const char *mech;
	size_t n;

	for (size_t i = 0; i < sizeof(firsts) / sizeof(firsts[0]); i++) {
		struct scram_client c;

		assert_int_equal(scram_client_init(&c, &cp), SCRAM_OK);
		assert_int_equal(scram_client_first(&c, mechs, sizeof(mechs), &mech, out, sizeof(out),
						    &n),
				 SCRAM_OK);
		assert_int_equal(scram_client_final(&c, (const uint8_t *)firsts[i], strlen(firsts[i]),
						    out, sizeof(out), &n),
				 wants[i]);
		scram_client_clear(&c);
	}
	/* No SCRAM-SHA-256 in the list at all. */
	{
		static const uint8_t only_other[] = "SCRAM-SHA-1\0";
		struct scram_client c;

		assert_int_equal(scram_client_init(&c, &cp), SCRAM_OK);
		assert_int_equal(scram_client_first(&c, only_other, sizeof(only_other), &mech, out,
						    sizeof(out), &n),
				 SCRAM_ERR_MECHANISM);
	}
	/* A server that does not know the password: wrong signature, or e=. */
	{
		struct scram_verifier v = verifier_for("pw", RFC_SALT, 4096);
		struct scram_server_params sp = server_params(&v, "u");
		struct scram_client_params okp = {.password = "pw"};
		struct pair x;
		char srv[SCRAM_MESSAGE_MAX];
		size_t sn;
		uint32_t ml;
		const uint8_t *m;

		assert_int_equal(scram_server_init(&x.s, &sp), SCRAM_OK);
		assert_int_equal(scram_client_init(&x.c, &okp), SCRAM_OK);
		m = scram_server_mechanisms(&x.s, &ml);
		assert_int_equal(scram_client_first(&x.c, m, ml, &mech, x.buf, sizeof(x.buf), &x.n), 0);
		assert_int_equal(scram_server_first(&x.s, mech, (uint8_t *)x.buf, x.n, srv, sizeof(srv),
						    &sn),
				 0);
		assert_int_equal(scram_client_final(&x.c, (uint8_t *)srv, sn, x.buf, sizeof(x.buf),
						    &x.n),
				 0);
		assert_int_equal(scram_client_verify(&x.c, (const uint8_t *)RFC_SERVER_FINAL,
						     strlen(RFC_SERVER_FINAL)),
				 SCRAM_ERR_SIGNATURE);
		assert_int_equal(scram_client_verify(&x.c, (const uint8_t *)"e=invalid-proof", 15),
				 SCRAM_ERR_STATE);
	}
}

/* ---- passwords, verifiers ------------------------------------------------------------- */

static void test_saslprep(void **state)
{
	uint8_t salt[16] = "0123456789abcdef", a[32], b[32];
	char buf[64];

	/* SOFT HYPHEN maps to nothing; ROMAN NUMERAL NINE is "IX" after NFKC. */
	assert_string_equal(scram_prepare_password("I\xc2\xadX", buf, sizeof(buf)), "IX");
	assert_string_equal(scram_prepare_password("\xe2\x85\xa8", buf, sizeof(buf)), "IX");
	/* Non-ASCII spaces map to a space. */
	assert_string_equal(scram_prepare_password("a\xc2\xa0" "b", buf, sizeof(buf)), "a b");
	/* ASCII passes as is, control characters included (PostgreSQL's shortcut). */
	assert_string_equal(scram_prepare_password("a\tb", buf, sizeof(buf)), "a\tb");
	/* Invalid UTF-8 and prohibited characters: the raw bytes. */
	assert_string_equal(scram_prepare_password("\xff\xfe", buf, sizeof(buf)), "\xff\xfe");
	assert_string_equal(scram_prepare_password("a\xc2\x80", buf, sizeof(buf)), "a\xc2\x80");
	assert_int_equal(scram_salted_password("I\xc2\xadX", salt, 16, 4096, a), 0);
	assert_int_equal(scram_salted_password("IX", salt, 16, 4096, b), 0);
	assert_memory_equal(a, b, 32);
	assert_null(scram_prepare_password("toolong", buf, 4));
}

static void test_verifier_roundtrip(void **state)
{
	struct scram_verifier v = verifier_for("pencil", RFC_SALT, 4096), w;
	char text[SCRAM_VERIFIER_MAX];
	int n = scram_verifier_format(&v, text, sizeof(text));

	assert_true(n > 0);
	assert_int_equal(strncmp(text, "SCRAM-SHA-256$4096:" RFC_SALT "$", 19 + 24 + 1), 0);
	assert_int_equal(scram_verifier_parse(text, (size_t)n, &w), SCRAM_OK);
	assert_verifier_equal(&v, &w);
	assert_int_equal(scram_verifier_format(&v, text, 20), SCRAM_ERR_BUFFER);
	assert_int_equal(scram_verifier_from_password("x", (const uint8_t *)"short", 5, 4096, &w),
			 SCRAM_ERR_VERIFIER);
	assert_int_equal(scram_verifier_from_password("x", (const uint8_t *)"longenough", 10, 1, &w),
			 SCRAM_ERR_VERIFIER);
	/* Every status has PostgreSQL-shaped texts. */
	for (int s = 0; s >= SCRAM_STATUS_MIN - 1; s--) {
		assert_int_equal(strlen(scram_error(s)->sqlstate), 5);
		assert_non_null(scram_error(s)->message);
	}
}

/* ---- PostgreSQL 15 vectors --------------------------------------------------------------- */

/*
 * data/auth/pg15_vectors.txt holds, per vector, lines "key | "value"": password, verifier
 * (pg_authid.rolpassword), client_first, server_first, client_final, server_final, as a
 * real libpq client and PostgreSQL 15 server exchanged them (tests/integration/
 * record_scram.py wrote the file). Our server, given the verifier and PostgreSQL's server
 * nonce, must answer byte-for-byte what PostgreSQL answered; our client, given the password
 * and libpq's nonce, must send byte-for-byte what libpq sent.
 */
struct pg_vector {
	char password[128], verifier[SCRAM_VERIFIER_MAX];
	char client_first[SCRAM_MESSAGE_MAX], server_first[SCRAM_MESSAGE_MAX];
	char client_final[SCRAM_MESSAGE_MAX], server_final[SCRAM_MESSAGE_MAX];
	unsigned have, checked;
};

static void pg_vector_check(struct pg_vector *pv)
{
	struct scram_verifier v;
	struct scram_client_first cf;
	struct scram_server_params sp;
	struct scram_server s;
	struct scram_client c;
	struct scram_client_params cp = {.password = pv->password};
	char out[SCRAM_MESSAGE_MAX], nonce[SCRAM_NONCE_MAX + 1];
	const char *mech;
	size_t n;
	static const uint8_t mechs[] = SCRAM_MECHANISM "\0";

	assert_int_equal(scram_verifier_parse(pv->verifier, strlen(pv->verifier), &v), SCRAM_OK);
	/* The verifier PostgreSQL made is the one we make from the same password and salt. */
	{
		struct scram_verifier mine;

		assert_int_equal(scram_verifier_from_password(pv->password, v.salt, v.salt_len,
							      v.iterations, &mine),
				 SCRAM_OK);
		assert_verifier_equal(&mine, &v);
	}
	assert_int_equal(scram_parse_client_first(pv->client_first, strlen(pv->client_first), &cf),
			 SCRAM_OK);
	/* Server side: PostgreSQL's nonce part is what follows libpq's in server-first. */
	snprintf(nonce, sizeof(nonce), "%.*s",
		 (int)(strcspn(pv->server_first + 2, ",") - cf.nonce_len),
		 pv->server_first + 2 + cf.nonce_len);
	sp = server_params(&v, "pgw_vector");
	sp.server_nonce = nonce;
	assert_int_equal(scram_server_init(&s, &sp), SCRAM_OK);
	assert_int_equal(scram_server_first(&s, SCRAM_MECHANISM, (uint8_t *)pv->client_first,
					    strlen(pv->client_first), out, sizeof(out), &n),
			 SCRAM_OK);
	assert_int_equal(n, strlen(pv->server_first));
	assert_memory_equal(out, pv->server_first, n);
	assert_int_equal(scram_server_final(&s, (uint8_t *)pv->client_final,
					    strlen(pv->client_final), out, sizeof(out), &n),
			 SCRAM_OK);
	assert_int_equal(n, strlen(pv->server_final));
	assert_memory_equal(out, pv->server_final, n);
	/* Client side: libpq's nonce. */
	snprintf(nonce, sizeof(nonce), "%.*s", (int)cf.nonce_len, cf.nonce);
	cp.client_nonce = nonce;
	assert_int_equal(scram_client_init(&c, &cp), SCRAM_OK);
	assert_int_equal(scram_client_first(&c, mechs, sizeof(mechs), &mech, out, sizeof(out), &n),
			 SCRAM_OK);
	assert_int_equal(n, strlen(pv->client_first));
	assert_memory_equal(out, pv->client_first, n);
	assert_int_equal(scram_client_final(&c, (uint8_t *)pv->server_first,
					    strlen(pv->server_first), out, sizeof(out), &n),
			 SCRAM_OK);
	assert_int_equal(n, strlen(pv->client_final));
	assert_memory_equal(out, pv->client_final, n);
	assert_int_equal(scram_client_verify(&c, (uint8_t *)pv->server_final,
					     strlen(pv->server_final)),
			 SCRAM_OK);
	/* And the ClientKey our server recovered logs our client in without the password. */
	cp = (struct scram_client_params){.client_key = scram_server_client_key(&s),
					  .verifier = &v, .client_nonce = nonce};
	assert_int_equal(scram_client_init(&c, &cp), SCRAM_OK);
	assert_int_equal(scram_client_first(&c, mechs, sizeof(mechs), &mech, out, sizeof(out), &n),
			 SCRAM_OK);
	assert_int_equal(scram_client_final(&c, (uint8_t *)pv->server_first,
					    strlen(pv->server_first), out, sizeof(out), &n),
			 SCRAM_OK);
	assert_memory_equal(out, pv->client_final, n);
	pv->checked++;
}

static void pg_vector_line(struct auth_case *c, void *arg)
{
	struct pg_vector *pv = arg;
	static const char *const keys[] = {"password", "verifier", "client_first",
					   "server_first", "client_final", "server_final"};
	char *dst[] = {pv->password, pv->client_first, pv->client_first, pv->server_first,
		       pv->client_final, pv->server_final};
	size_t caps[] = {sizeof(pv->password), sizeof(pv->verifier), sizeof(pv->client_first),
			 sizeof(pv->server_first), sizeof(pv->client_final),
			 sizeof(pv->server_final)};

	dst[1] = pv->verifier;
	for (size_t i = 0; i < 6; i++) {
		if (c->nfields != 1 || strcmp(c->fields[0], keys[i]) != 0)
			continue;
		assert_true(c->len < caps[i]);
		memcpy(dst[i], c->bytes, c->len);
		dst[i][c->len] = '\0';
		pv->have |= 1u << i;
		if (pv->have == 0x3f) {
			pg_vector_check(pv);
			pv->have = 0;
		}
		return;
	}
	fail_msg("%s:%u: unknown key", c->file, c->lineno);
}

static void test_pg15_vectors(void **state)
{
	struct pg_vector pv = {0};

	auth_cases_each("pg15_vectors.txt", pg_vector_line, &pv);
	assert_true(pv.checked >= 2);
	assert_int_equal(pv.have, 0);
}

/* ---- cost ------------------------------------------------------------------------------- */

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* What one terminate-mode login costs the relay: a whole server exchange with a verifier
 * (no PBKDF2: the verifier holds the keys); and the upstream login with the recovered
 * ClientKey, and with a password (PBKDF2 at 4096 iterations). Printed for the report. */
static void test_cost(void **state)
{
	struct scram_verifier v = verifier_for("pencil", RFC_SALT, 4096);
	struct scram_server_params p = server_params(&v, "user");
	const int rounds = 200;
	char out[SCRAM_MESSAGE_MAX];
	size_t n;
	double t0, t1, t2;

	p.server_nonce = RFC_SERVER_NONCE;
	t0 = now_us();
	for (int i = 0; i < rounds; i++) {
		struct scram_server s;

		assert_int_equal(scram_server_init(&s, &p), SCRAM_OK);
		assert_int_equal(scram_server_first(&s, SCRAM_MECHANISM,
						    (const uint8_t *)RFC_CLIENT_FIRST,
						    strlen(RFC_CLIENT_FIRST), out, sizeof(out), &n),
				 SCRAM_OK);
		assert_int_equal(scram_server_final(&s, (const uint8_t *)RFC_CLIENT_FINAL,
						    strlen(RFC_CLIENT_FINAL), out, sizeof(out), &n),
				 SCRAM_OK);
		scram_server_clear(&s);
	}
	t1 = now_us();
	for (int i = 0; i < 20; i++) {
		uint8_t salted[32];

		assert_int_equal(scram_salted_password("pencil", v.salt, v.salt_len, 4096, salted), 0);
	}
	t2 = now_us();
	printf("[ cost     ] SCRAM server exchange with a verifier (terminate login): %.1f us CPU\n",
	       (t1 - t0) / rounds);
	printf("[ cost     ] PBKDF2-HMAC-SHA-256 at 4096 iterations (password login upstream): "
	       "%.0f us CPU (%.2f us per iteration)\n",
	       (t2 - t1) / 20, (t2 - t1) / 20 / 4096);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_message_cases),
		cmocka_unit_test(test_rfc7677_server),
		cmocka_unit_test(test_rfc7677_failures_look_alike),
		cmocka_unit_test(test_mock_is_deterministic_and_plausible),
		cmocka_unit_test(test_roundtrip_password_and_client_key),
		cmocka_unit_test(test_roundtrip_channel_binding),
		cmocka_unit_test(test_server_refuses_hostile_first),
		cmocka_unit_test(test_server_refuses_hostile_final),
		cmocka_unit_test(test_client_refuses_hostile_server),
		cmocka_unit_test(test_saslprep),
		cmocka_unit_test(test_verifier_roundtrip),
		cmocka_unit_test(test_pg15_vectors),
		cmocka_unit_test(test_cost),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
