/*
 * Unit tests for userspace/audit/audit_record and audit_sign: the canonical encoding of a
 * record, how a peer's bytes are escaped into one field (data/audit/field_cases.txt), the
 * chain hash, the verifier's line parser (data/audit/line_cases.txt), checkpoint signing,
 * and the refusals of the key loader.
 */
#include "audit/audit_record.h"
#include "audit/audit_sign.h"
#include "base/sanitize.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "case_file.h"

static const uint8_t zero_hash[AUDIT_HASH_LEN];

/* A record's canonical line, as the writer makes it (seq and prev given), held to the
 * reference: jansson's canonical dump of audit_rec_to_json(), byte for byte. */
static char *line_of(struct audit_rec *r, uint64_t seq, const uint8_t *prev, size_t *len)
{
	json_t *obj = audit_rec_to_json(r, seq, prev);
	struct audit_out out = {0};
	char *reference;
	size_t ref_len;

	assert_non_null(obj);
	reference = audit_canonical(obj, &ref_len);
	assert_non_null(reference);
	json_decref(obj);
	assert_int_equal(audit_rec_encode(r, seq, prev, &out), 0);
	if (out.len != ref_len || memcmp(out.buf, reference, ref_len) != 0)
		fail_msg("the encoder wrote\n%.*s\njansson wrote\n%s", (int)out.len, out.buf,
			 reference);
	free(out.buf);
	*len = ref_len;
	return reference;
}

/* ---- canonical form ---------------------------------------------------------------- */

static void test_canonical_form(void **state)
{
	/* 2026-01-02T03:04:05.123456Z */
	uint64_t ts = 1767323045ULL * 1000000000ULL + 123456789ULL;
	struct audit_rec *r = audit_rec_new(AUDIT_EV_STATEMENT, ts);
	size_t len;
	char *line;

	assert_non_null(r);
	audit_rec_str(r, "zeta", "last");
	audit_rec_u64(r, "rows", 42);
	audit_rec_i64(r, "neg", -7);
	audit_rec_bool(r, "ok", true);
	audit_rec_null(r, "none");
	audit_rec_hex(r, "digest", (const uint8_t *)"\x01\xab", 2);
	audit_rec_object(r, "process");
	audit_rec_u64(r, "pid", 12);
	audit_rec_str(r, "comm", "psql");
	audit_rec_end(r);
	audit_rec_array(r, "params");
	audit_rec_str(r, NULL, "b");
	audit_rec_str(r, NULL, "a");
	audit_rec_null(r, NULL);
	audit_rec_end(r);
	assert_false(audit_rec_failed(r));
	line = line_of(r, 7, zero_hash, &len);
	/* Keys sorted bytewise at every level, array order kept, no whitespace. */
	assert_string_equal(line,
			    "{\"digest\":\"01ab\",\"event\":\"statement\",\"neg\":-7,\"none\":null,\"ok\":true,"
			    "\"params\":[\"b\",\"a\",null],"
			    "\"prev\":\"0000000000000000000000000000000000000000000000000000000000000000\","
			    "\"process\":{\"comm\":\"psql\",\"pid\":12},\"rows\":42,\"seq\":7,"
			    "\"ts\":\"2026-01-02T03:04:05.123456Z\",\"zeta\":\"last\"}");
	assert_int_equal(len, strlen(line));
	free(line);
	audit_rec_free(r);
}

/* The cases a direct encoder could get wrong and jansson gets right: a key given twice
 * (the later value wins), record fields named like the chain fields (the chain wins),
 * more members than fit on the encoder's stack, a long hostile text, integer extremes,
 * empty containers and strings, nesting, a key that needs escaping. line_of() compares. */
static void test_encoder_matches_jansson(void **state)
{
	struct audit_rec *r = audit_rec_new(AUDIT_EV_CHECKPOINT, 1767323045123456789ULL);
	static const char *const keys[] = {"k00", "k01", "k02", "k03", "k04", "k05", "k06", "k07",
					   "k08", "k09", "k10", "k11", "k12", "k13", "k14", "k15",
					   "k16", "k17", "k18", "k19", "k20", "k21", "k22", "k23",
					   "k24", "k25", "k26", "k27", "k28", "k29", "k30", "k31",
					   "k32", "k33", "k34", "k35", "k36", "k37", "k38", "k39",
					   "k40", "k41", "k42", "k43", "k44", "k45", "k46", "k47",
					   "k48", "k49", "k50", "k51", "k52", "k53", "k54", "k55"};
	char hostile[3000];
	uint8_t prev[AUDIT_HASH_LEN];
	size_t len;
	char *line;

	for (size_t i = 0; i < sizeof(hostile); i++)
		hostile[i] = (char)(i * 7 + 1); /* every byte value, controls and \ and " too */
	memset(prev, 0xa5, sizeof(prev));
	assert_non_null(r);
	audit_rec_str(r, "text", "first");
	audit_rec_str(r, "seq", "a record field named seq");
	audit_rec_u64(r, "event", 3);
	audit_rec_strn(r, "hostile", hostile, sizeof(hostile));
	audit_rec_str(r, "text", "second \"wins\" \\ / \u2028");
	audit_rec_u64(r, "big", UINT64_MAX);
	audit_rec_i64(r, "min", INT64_MIN);
	audit_rec_i64(r, "zero", 0);
	audit_rec_str(r, "empty", "");
	audit_rec_str(r, "quote\"key", "k");
	audit_rec_str(r, "nul", NULL);
	audit_rec_bool(r, "no", false);
	audit_rec_object(r, "empty_obj");
	audit_rec_end(r);
	audit_rec_array(r, "empty_arr");
	audit_rec_end(r);
	audit_rec_array(r, "nested");
	audit_rec_object(r, NULL);
	audit_rec_str(r, "z", "1");
	audit_rec_str(r, "a", "2");
	audit_rec_str(r, "a", "3");
	audit_rec_array(r, "inner");
	audit_rec_u64(r, NULL, 1);
	audit_rec_array(r, NULL);
	audit_rec_end(r);
	audit_rec_end(r);
	audit_rec_end(r);
	audit_rec_hex(r, NULL, (const uint8_t *)"\xff\x00", 2);
	audit_rec_end(r);
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		audit_rec_u64(r, keys[sizeof(keys) / sizeof(keys[0]) - 1 - i], i);
	assert_false(audit_rec_failed(r));
	line = line_of(r, 99, prev, &len);
	assert_non_null(strstr(line, "\"seq\":99,"));
	assert_non_null(strstr(line, "\"event\":\"checkpoint\""));
	free(line);
	audit_rec_free(r);
}

/* An unbalanced builder is refused at encoding, never written half-nested. */
static void test_unbalanced_record_refused(void **state)
{
	struct audit_rec *r = audit_rec_new(AUDIT_EV_SESSION_START, 0);

	audit_rec_object(r, "tls");
	assert_true(audit_rec_failed(r));
	assert_null(audit_rec_to_json(r, 1, zero_hash));
	{
		struct audit_out out = {0};

		assert_int_equal(audit_rec_encode(r, 1, zero_hash, &out), -EINVAL);
		assert_int_equal(out.len, 0);
		free(out.buf);
	}
	audit_rec_end(r);
	assert_false(audit_rec_failed(r));
	audit_rec_end(r); /* one too many */
	assert_true(audit_rec_failed(r));
	audit_rec_free(r);
}

/* ---- escaping: every case file line, then the properties every line has ---------- */

static void test_field_escaping(void **state)
{
	FILE *f = fopen("data/audit/field_cases.txt", "r");
	char buf[1024];
	int cases = 0;

	assert_non_null(f);
	while (fgets(buf, sizeof(buf), f)) {
		char *d = buf, *f2, *f3, in[512], want[512], suffix[600], safe[2048];
		struct audit_line parsed;
		struct audit_rec *r;
		size_t n, len;
		char why[256], *line;

		if (buf[0] == '#' || !(f2 = strchr(d, '|')) || !(f3 = strchr(f2 + 1, '|')))
			continue;
		*f2++ = '\0';
		*f3++ = '\0';
		n = case_decode(trim(f2), in, sizeof(in));
		case_decode(trim(f3), want, sizeof(want));
		r = audit_rec_new(AUDIT_EV_SESSION_START, 0);
		audit_rec_strn(r, "user", in, n);
		line = line_of(r, 1, zero_hash, &len);
		/* "user" sorts last: the line ends with the field. */
		snprintf(suffix, sizeof(suffix), "\"user\":%s}", want);
		if (len < strlen(suffix) || strcmp(line + len - strlen(suffix), suffix) != 0)
			fail_msg("%s: got %s, want ...%s", trim(d), line, suffix);
		/* One line, no control byte anywhere, and it parses back to one field whose
		 * value is exactly sanitize()'s text. */
		for (size_t i = 0; i < len; i++)
			if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
				fail_msg("%s: control byte 0x%02x in the line", trim(d), line[i]);
		if (audit_line_parse(line, len, &parsed, why, sizeof(why)))
			fail_msg("%s: the line does not parse back: %s", trim(d), why);
		sanitize(safe, sizeof(safe), in, n, SANITIZE_JSON, NULL);
		assert_string_equal(json_string_value(json_object_get(parsed.obj, "user")), safe);
		assert_int_equal(json_object_size(parsed.obj), 5); /* event prev seq ts user */
		assert_int_equal(parsed.seq, 1);
		assert_int_equal(parsed.event, AUDIT_EV_SESSION_START);
		audit_line_release(&parsed);
		free(line);
		audit_rec_free(r);
		cases++;
	}
	fclose(f);
	assert_true(cases >= 20);
}

/* ---- the chain ----------------------------------------------------------------------- */

static void test_chain_links_each_record_to_the_last(void **state)
{
	uint8_t prev[AUDIT_HASH_LEN];
	char hex[AUDIT_HASH_HEXLEN + 1];

	memcpy(prev, zero_hash, sizeof(prev));
	for (uint64_t seq = 1; seq <= 3; seq++) {
		struct audit_rec *r = audit_rec_new(AUDIT_EV_STATEMENT, seq);
		struct audit_line l;
		char why[128], *line;
		size_t len;

		audit_rec_u64(r, "request", seq);
		line = line_of(r, seq, prev, &len);
		assert_int_equal(audit_line_parse(line, len, &l, why, sizeof(why)), 0);
		assert_memory_equal(l.prev, prev, AUDIT_HASH_LEN);
		assert_int_equal(l.seq, seq);
		audit_line_release(&l);
		audit_hash(line, len, prev);
		free(line);
		audit_rec_free(r);
	}
	/* SHA-256 of the canonical line, nothing else: a known vector. */
	audit_hash("abc", 3, prev);
	audit_hex(prev, sizeof(prev), hex);
	assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void test_hex_roundtrip(void **state)
{
	uint8_t b[4], back[4] = {0};
	char hex[9];

	memcpy(b, "\x00\x7f\x80\xff", 4);
	audit_hex(b, 4, hex);
	assert_string_equal(hex, "007f80ff");
	assert_int_equal(audit_unhex(hex, back, 4), 0);
	assert_memory_equal(b, back, 4);
	assert_int_equal(audit_unhex("007F80FF", back, 4), -EINVAL); /* lower case only */
	assert_int_equal(audit_unhex("007f80f", back, 4), -EINVAL);
	assert_int_equal(audit_unhex("007f80ff00", back, 4), -EINVAL);
	assert_int_equal(audit_unhex("0x7f80ff", back, 4), -EINVAL);
}

static void test_timestamp_format(void **state)
{
	char ts[AUDIT_TS_LEN];

	assert_string_equal(audit_format_ts(0, ts, sizeof(ts)), "1970-01-01T00:00:00.000000Z");
	assert_string_equal(audit_format_ts(1767323045ULL * 1000000000ULL + 999999999ULL, ts,
					    sizeof(ts)),
			    "2026-01-02T03:04:05.999999Z");
}

static void test_event_names(void **state)
{
	for (int i = 0; i < AUDIT_EV_COUNT; i++) {
		assert_string_not_equal(audit_event_name((enum audit_event)i), "unknown");
		assert_int_equal(audit_event_parse(audit_event_name((enum audit_event)i)), i);
	}
	assert_int_equal(audit_event_parse("checkpoints"), -1);
	assert_string_equal(audit_event_name(AUDIT_EV_COUNT), "unknown");
}

/* ---- the line parser: every case file line ------------------------------------------- */

static void test_line_parser_cases(void **state)
{
	FILE *f = fopen("data/audit/line_cases.txt", "r");
	char buf[2048];
	int cases = 0, oks = 0;

	assert_non_null(f);
	while (fgets(buf, sizeof(buf), f)) {
		char *want, *text, line[2048], why[256];
		struct audit_line l;
		size_t n;
		int rc;

		if (buf[0] == '#' || !(text = strchr(buf, '|')))
			continue;
		*text++ = '\0';
		want = trim(buf);
		n = case_decode(trim(text), line, sizeof(line));
		rc = audit_line_parse(line, n, &l, why, sizeof(why));
		if (strcmp(want, "ok") == 0) {
			if (rc)
				fail_msg("line %d: refused (%s): %s", cases + 1, why, line);
			audit_line_release(&l);
			oks++;
		} else if (rc != -EINVAL || strncmp(why, want, strlen(want)) != 0) {
			fail_msg("line %d: rc %d why \"%s\", want \"%s...\": %s", cases + 1, rc,
				 rc ? why : "", want, line);
		} else {
			assert_null(l.obj);
		}
		cases++;
	}
	fclose(f);
	assert_true(oks >= 3);
	assert_true(cases >= 30);
}

static void test_line_parser_bounds(void **state)
{
	size_t big = AUDIT_LINE_MAX + 1;
	char *line = malloc(big), why[128];
	struct audit_line l;

	assert_non_null(line);
	memset(line, ' ', big);
	assert_int_equal(audit_line_parse(line, big, &l, why, sizeof(why)), -EINVAL);
	assert_string_equal(why, "longer than any record (over 10 MiB)");
	assert_int_equal(audit_line_parse(line, 0, &l, why, sizeof(why)), -EINVAL);
	/* Deeply nested JSON: refused by the canonical check or the parser, never a crash. */
	memset(line, '[', 100000);
	assert_int_equal(audit_line_parse(line, 100000, &l, why, sizeof(why)), -EINVAL);
	/* A reason never carries the line's raw bytes: jansson quotes what it saw. */
	assert_int_equal(audit_line_parse("\x1b[2J\xff", 5, &l, why, sizeof(why)), -EINVAL);
	for (const char *p = why; *p; p++)
		assert_true((unsigned char)*p >= 0x20 && (unsigned char)*p < 0x7f);
	free(line);
}

/* ---- signing ------------------------------------------------------------------------ */

static char tmpdir[64];

static int setup_tmp(void **state)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/pgw-audit-keys-XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_tmp(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static void path_in(char *buf, size_t n, const char *name)
{
	snprintf(buf, n, "%s/%s", tmpdir, name);
}

static void test_keygen_sign_verify(void **state)
{
	char key[128], pub[160], err[512], id[AUDIT_KEY_ID_HEXLEN + 1], id2[AUDIT_KEY_ID_HEXLEN + 1];
	uint8_t raw[AUDIT_PUBKEY_LEN], raw2[AUDIT_PUBKEY_LEN], sig[AUDIT_SIG_LEN];
	EVP_PKEY *priv, *pubk, *from_raw;
	struct stat st;
	const char msg[] = "{\"event\":\"checkpoint\",\"seq\":3}";

	path_in(key, sizeof(key), "sign.key");
	snprintf(pub, sizeof(pub), "%s.pub", key);
	assert_int_equal(audit_keygen(key, err, sizeof(err)), 0);
	assert_int_equal(stat(key, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(stat(pub, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0644);
	/* Never overwrites. */
	assert_int_equal(audit_keygen(key, err, sizeof(err)), -EEXIST);
	assert_non_null(strstr(err, "already exists"));

	assert_int_equal(audit_key_load_private(key, &priv, err, sizeof(err)), 0);
	assert_int_equal(audit_key_load_public(pub, &pubk, err, sizeof(err)), 0);
	assert_int_equal(audit_key_raw_public(priv, raw), 0);
	assert_int_equal(audit_key_raw_public(pubk, raw2), 0);
	assert_memory_equal(raw, raw2, sizeof(raw));
	audit_key_id(raw, id);
	audit_key_id(raw2, id2);
	assert_string_equal(id, id2);
	assert_int_equal(strlen(id), AUDIT_KEY_ID_HEXLEN);

	assert_int_equal(audit_sign(priv, msg, strlen(msg), sig), 0);
	assert_true(audit_sig_valid(pubk, msg, strlen(msg), sig));
	from_raw = audit_key_from_raw(raw);
	assert_non_null(from_raw);
	assert_true(audit_sig_valid(from_raw, msg, strlen(msg), sig));
	/* One byte of the message, or of the signature, and it fails. */
	assert_false(audit_sig_valid(pubk, msg, strlen(msg) - 1, sig));
	sig[10] ^= 1;
	assert_false(audit_sig_valid(pubk, msg, strlen(msg), sig));
	EVP_PKEY_free(priv);
	EVP_PKEY_free(pubk);
	EVP_PKEY_free(from_raw);
}

static void write_file(const char *path, const void *data, size_t n, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, n), (ssize_t)n);
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

/* A PEM of another key type, made here (never committed). */
static void write_ec_key(const char *path)
{
	EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	FILE *f = fopen(path, "w");

	assert_non_null(k);
	assert_non_null(f);
	assert_int_equal(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL), 1);
	fclose(f);
	chmod(path, 0600);
	EVP_PKEY_free(k);
}

static void write_encrypted_key(const char *path)
{
	EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	FILE *f = fopen(path, "w");

	assert_non_null(k);
	assert_non_null(f);
	assert_int_equal(PEM_write_PKCS8PrivateKey(f, k, EVP_aes_256_cbc(), NULL, 0, NULL,
						   (void *)"secret"),
			 1);
	fclose(f);
	chmod(path, 0600);
	EVP_PKEY_free(k);
}

static void test_private_key_refusals(void **state)
{
	char key[128], other[160], link[128], err[512], ec[128], enc[128], garbage[128];
	EVP_PKEY *k = NULL;
	char *pem;
	size_t pem_len;
	FILE *f;

	path_in(key, sizeof(key), "good.key");
	assert_int_equal(audit_keygen(key, err, sizeof(err)), 0);
	f = fopen(key, "r");
	assert_non_null(f);
	pem = calloc(1, 4096);
	pem_len = fread(pem, 1, 4096, f);
	fclose(f);

	/* Group or others may read (or write) it: refused, naming the mode and the fix. */
	static const mode_t bad_modes[] = {0640, 0604, 0620, 0602, 0644, 0666, 0660};
	for (size_t i = 0; i < sizeof(bad_modes) / sizeof(bad_modes[0]); i++) {
		path_in(other, sizeof(other), "loose.key");
		write_file(other, pem, pem_len, bad_modes[i]);
		assert_int_equal(audit_key_load_private(other, &k, err, sizeof(err)), -EPERM);
		assert_non_null(strstr(err, "lets its group or others at the signing key"));
		assert_non_null(strstr(err, "chmod 600"));
		unlink(other);
	}
	/* 0400 is fine. */
	write_file(other, pem, pem_len, 0400);
	assert_int_equal(audit_key_load_private(other, &k, err, sizeof(err)), 0);
	EVP_PKEY_free(k);
	/* Owned by someone else (not root): refused. */
	if (geteuid() == 0) {
		assert_int_equal(chown(other, 65534, 65534), 0);
		assert_int_equal(audit_key_load_private(other, &k, err, sizeof(err)), -EPERM);
		assert_non_null(strstr(err, "owned by uid 65534"));
	}
	unlink(other);
	/* A symlink to a good key: refused (O_NOFOLLOW), so the check is of the file read. */
	path_in(link, sizeof(link), "link.key");
	assert_int_equal(symlink(key, link), 0);
	assert_true(audit_key_load_private(link, &k, err, sizeof(err)) < 0);
	/* A directory, a missing file. */
	assert_int_equal(audit_key_load_private(tmpdir, &k, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "not a regular file"));
	path_in(other, sizeof(other), "missing.key");
	assert_int_equal(audit_key_load_private(other, &k, err, sizeof(err)), -ENOENT);
	/* Another key type; a passphrase-protected key (nobody to ask); garbage; the public
	 * half alone. */
	path_in(ec, sizeof(ec), "ec.key");
	write_ec_key(ec);
	assert_int_equal(audit_key_load_private(ec, &k, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "not an Ed25519 key"));
	path_in(enc, sizeof(enc), "enc.key");
	write_encrypted_key(enc);
	assert_int_equal(audit_key_load_private(enc, &k, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "encrypted keys are not supported"));
	path_in(garbage, sizeof(garbage), "garbage.key");
	write_file(garbage, "\x1b[2J-----BEGIN nonsense", 23, 0600);
	assert_int_equal(audit_key_load_private(garbage, &k, err, sizeof(err)), -EINVAL);
	snprintf(other, sizeof(other), "%s.pub", key);
	chmod(other, 0600);
	assert_int_equal(audit_key_load_private(other, &k, err, sizeof(err)), -EINVAL);
	/* The message never carries key bytes. */
	assert_null(strstr(err, "BEGIN"));
	/* For verification, a private key serves as its public half. */
	assert_int_equal(audit_key_load_public(key, &k, err, sizeof(err)), 0);
	EVP_PKEY_free(k);
	free(pem);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_canonical_form),
		cmocka_unit_test(test_encoder_matches_jansson),
		cmocka_unit_test(test_unbalanced_record_refused),
		cmocka_unit_test(test_field_escaping),
		cmocka_unit_test(test_chain_links_each_record_to_the_last),
		cmocka_unit_test(test_hex_roundtrip),
		cmocka_unit_test(test_timestamp_format),
		cmocka_unit_test(test_event_names),
		cmocka_unit_test(test_line_parser_cases),
		cmocka_unit_test(test_line_parser_bounds),
		cmocka_unit_test_setup_teardown(test_keygen_sign_verify, setup_tmp, teardown_tmp),
		cmocka_unit_test_setup_teardown(test_private_key_refusals, setup_tmp, teardown_tmp),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
