/*
 * fuzz_audit_verify: the audit verifier and its record parser on arbitrary files.
 *
 * Input: one control byte, then the bytes of up to three trail files separated by 0x1e
 * (a byte no canonical record holds). Control bits: 0 --partial; 1 a trusted key of our
 * own (the trail's checkpoints then fail to match it); 2 reverse the files' order.
 *
 * Invariants (abort on violation):
 *   - every line audit_line_parse() accepts re-encodes to exactly itself, has seq >= 1 and
 *     a prev that hex-decodes; a refused line leaves no object behind;
 *   - the verifier returns one of its three verdicts, BROKEN exactly when it names a
 *     problem, INTACT only with a trusted key, records and a stop checkpoint; its message
 *     is a terminated line without control bytes; signed_through <= last_seq;
 *   - the order files are given in does not change an INTACT verdict.
 */
#include "audit/audit_record.h"
#include "audit/audit_verify.h"

#include <openssl/evp.h>
#include <string.h>

#include "fuzz_check.h"

static EVP_PKEY *own_key;

static void check_lines(const char *data, size_t len)
{
	size_t off = 0;

	while (off < len) {
		const char *nl = memchr(data + off, '\n', len - off);
		size_t l = nl ? (size_t)(nl - (data + off)) : len - off;
		struct audit_line line;
		char why[256];

		if (audit_line_parse(data + off, l, &line, why, sizeof(why)) == 0) {
			size_t clen;
			char *canon = audit_canonical(line.obj, &clen);

			CHECK(canon && clen == l && memcmp(canon, data + off, l) == 0);
			CHECK(line.seq >= 1);
			free(canon);
			audit_line_release(&line);
		} else {
			CHECK(line.obj == NULL);
			CHECK(memchr(why, '\0', sizeof(why)) != NULL);
		}
		off += l + (nl ? 1 : 0);
	}
}

static void check_result(const struct audit_verify_result *r, bool trusted)
{
	CHECK(r->verdict == AUDIT_VERIFY_INTACT || r->verdict == AUDIT_VERIFY_BROKEN ||
	      r->verdict == AUDIT_VERIFY_UNVOUCHED);
	CHECK((r->problem != AUDIT_PROBLEM_NONE) == (r->verdict == AUDIT_VERIFY_BROKEN) ||
	      (r->verdict == AUDIT_VERIFY_BROKEN && r->records == 0));
	CHECK(memchr(r->message, '\0', sizeof(r->message)) != NULL);
	for (const char *p = r->message; *p; p++)
		CHECK((unsigned char)*p >= 0x20 && *p != 0x7f);
	CHECK(r->signed_through <= r->last_seq);
	if (r->verdict == AUDIT_VERIFY_INTACT)
		CHECK(trusted && r->records > 0 && r->closed);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct audit_verify_file files[3], reversed[3];
	struct audit_verify_result res, res2;
	struct audit_verify_opts o = {0};
	EVP_PKEY *keys[1];
	unsigned n = 0;
	size_t off = 1;

	if (size < 1)
		return 0;
	if (!own_key)
		own_key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	while (n < 3) {
		const uint8_t *sep = off < size ? memchr(data + off, 0x1e, size - off) : NULL;
		size_t len = sep ? (size_t)(sep - (data + off)) : size - off;

		files[n].name = n == 0 ? "audit.jsonl.1" : n == 1 ? "audit.jsonl.2" : "audit.jsonl";
		files[n].data = (const char *)data + off;
		files[n].len = off <= size ? len : 0;
		check_lines(files[n].data, files[n].len);
		n++;
		if (!sep)
			break;
		off += len + 1;
	}
	o.partial = data[0] & 1;
	if (data[0] & 2) {
		keys[0] = own_key;
		o.keys = keys;
		o.nkeys = 1;
	}
	audit_verify(files, n, &o, &res);
	check_result(&res, o.nkeys > 0);
	if (data[0] & 4) {
		for (unsigned i = 0; i < n; i++)
			reversed[i] = files[n - 1 - i];
		audit_verify(reversed, n, &o, &res2);
		check_result(&res2, o.nkeys > 0);
		if (res.verdict == AUDIT_VERIFY_INTACT)
			CHECK(res2.verdict == AUDIT_VERIFY_INTACT);
	}
	return 0;
}
