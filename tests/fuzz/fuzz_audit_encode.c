/*
 * fuzz_audit_encode: the writer's direct encoder against its reference.
 *
 * Input: a program that builds one record. Each step is an opcode byte (low 3 bits: the
 * kind of field; the next 3 bits: which key, from a table that includes the chain fields'
 * names and a repeated key), then for a string a length byte and that many peer bytes,
 * for a number 8 bytes. Open containers are closed at the end.
 *
 * Invariants (abort on violation):
 *   - audit_rec_encode() writes exactly audit_canonical(audit_rec_to_json()), byte for
 *     byte, or both refuse;
 *   - that line parses back (audit_line_parse) as a record with the seq it was given;
 *   - a refused record leaves the output buffer's length as it was.
 */
#include "audit/audit_record.h"

#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"

static const char *const keys[8] = {"text", "seq", "event", "prev", "ts", "a", "text", "z"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t prev[AUDIT_HASH_LEN] = {1, 2, 3};
	struct audit_rec *r = audit_rec_new(AUDIT_EV_STATEMENT, 1767323045123456789ULL);
	struct audit_out out = {.len = 0};
	unsigned depth = 0;
	size_t i = 0;
	json_t *obj;
	char *ref;
	int rc;

	if (!r)
		return 0;
	while (i < size && depth < 8) {
		uint8_t op = data[i++];
		const char *key = keys[(op >> 3) & 7];
		uint64_t v = 0;
		size_t n;

		switch (op & 7) {
		case 0:
			n = i < size ? data[i++] : 0;
			n = n < size - i ? n : size - i;
			audit_rec_strn(r, key, (const char *)data + i, n);
			i += n;
			break;
		case 1:
		case 2:
			n = size - i < 8 ? size - i : 8;
			memcpy(&v, data + i, n);
			i += n;
			if ((op & 7) == 1)
				audit_rec_u64(r, key, v);
			else
				audit_rec_i64(r, key, (int64_t)v);
			break;
		case 3:
			audit_rec_bool(r, key, op & 0x40);
			break;
		case 4:
			audit_rec_null(r, key);
			break;
		case 5:
			n = i < size ? data[i++] % 33 : 0;
			n = n < size - i ? n : size - i;
			audit_rec_hex(r, key, data + i, n);
			i += n;
			break;
		case 6:
			if (op & 0x40)
				audit_rec_array(r, key);
			else
				audit_rec_object(r, key);
			depth++;
			break;
		default:
			if (depth) {
				audit_rec_end(r);
				depth--;
			}
		}
	}
	while (depth--)
		audit_rec_end(r);
	obj = audit_rec_to_json(r, 42, prev);
	ref = obj ? audit_canonical(obj, NULL) : NULL;
	rc = audit_rec_encode(r, 42, prev, &out);
	if (obj && ref) {
		struct audit_line line;
		char why[256];

		CHECK(rc == 0);
		CHECK(out.len == strlen(ref) && memcmp(out.buf, ref, out.len) == 0);
		CHECK(audit_line_parse(out.buf, out.len, &line, why, sizeof(why)) == 0);
		CHECK(line.seq == 42);
		audit_line_release(&line);
	} else if (!obj) {
		/* jansson refused it (a member without a key, say): so must the encoder. */
		CHECK(rc != 0 && out.len == 0);
	}
	free(ref);
	json_decref(obj);
	free(out.buf);
	audit_rec_free(r);
	return 0;
}
