/*
 * mask_copy: COPY ... TO STDOUT data rewritten column by column, in the three formats
 * PostgreSQL writes: text (delimiter, \N, backslash escapes), CSV (delimiter, quoting,
 * escape character, NULL string, HEADER) and binary (signature, flags, header extension,
 * tuples of length-prefixed fields with -1 for NULL, the -1 trailer).
 *
 * The input is the COPY data stream: the payloads of the CopyData messages, concatenated.
 * Message boundaries mean nothing here (a row may span messages, a message may hold many
 * rows), so the stage can feed each message's payload as it comes, in pieces of any size,
 * and package the output into CopyData messages of its own.
 *
 * Every field is parsed as the server wrote it; masked fields are decoded (unescaped,
 * unquoted), given to their transformer (mask_value.h), and encoded again: text output
 * escaped as the server escapes it, CSV output always quoted (valid for any value and any
 * delimiter), binary output with its new length. NULL stays NULL, written as the NULL
 * string; `null` and masked-whole columns write the NULL string for every value. Rows with
 * another number of fields than the plan, bad escapes, unterminated quotes, a wrong
 * signature or flags the format does not define are -EPROTO: the stream is not what the
 * server writes, and nothing more is passed.
 *
 * Memory: fixed state plus, for binary values whose output length depends on their content
 * (hash on arrays, binary numeric), the value held whole in the caller's buffer (-E2BIG
 * beyond it). Text and CSV need no such buffer: their fields are delimited, not prefixed.
 *
 * Encodings: text and CSV are parsed byte by byte for ASCII delimiters, quotes and
 * backslashes, which is exact for UTF8, the single-byte encodings and every other
 * ASCII-safe encoding; mask_copy_begin() refuses (-EOPNOTSUPP) text and CSV in the other
 * encodings (SJIS, BIG5, GBK, UHC, GB18030, JOHAB), where a trailing byte can look like a
 * backslash.
 */
#ifndef PGWARDEN_MASK_COPY_H
#define PGWARDEN_MASK_COPY_H

#include "mask/mask_plan.h"
#include "mask/mask_value.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MASK_COPY_NULL_MAX 64 /* longest NULL string masked (a longer one is refused) */

enum mask_copy_format {
	MASK_COPY_TEXT = 0,
	MASK_COPY_CSV,
	MASK_COPY_BINARY,
};

/* The statement's options, as the server applies them (the classifier reads them). */
struct mask_copy_opts {
	enum mask_copy_format format;
	uint8_t delim;  /* text: '\t'; CSV: ',' */
	uint8_t quote;  /* CSV: '"' */
	uint8_t escape; /* CSV: the quote character unless ESCAPE says otherwise */
	uint8_t null_len;
	char null_str[MASK_COPY_NULL_MAX + 1]; /* text: "\N"; CSV: "" */
	bool header;
};

/* PostgreSQL's defaults for a format. */
void mask_copy_opts_default(struct mask_copy_opts *o, enum mask_copy_format f);

/* The format code of a CopyOutResponse: 0 text or CSV, 1 binary. */
static inline uint8_t mask_copy_wire_format(const struct mask_copy_opts *o)
{
	return o->format == MASK_COPY_BINARY ? 1 : 0;
}

struct mask_copy {
	struct mask_copy_opts o;
	const struct mask_plan *plan;
	const struct mask_env *env;
	uint8_t *buf; /* binary values held whole */
	uint32_t buf_cap, buf_len, buf_pos;
	bool from_buf; /* the current value is replayed from buf */
	uint8_t st;
	bool header_row;   /* the HEADER line: every field passes */
	uint16_t field;
	uint64_t rows;
	/* text / CSV field */
	uint8_t probe[MASK_COPY_NULL_MAX + 2];
	uint8_t probe_len;
	bool probing;              /* a masked field that may still be the NULL string */
	uint8_t esc, esc_n, esc_v; /* unescaping state */
	uint8_t end_byte;          /* the delimiter or newline that ended the field */
	bool value_null;           /* the value is written as NULL, its bytes skipped */
	uint8_t ret_st;            /* where content flushing returns to */
	uint8_t cbuf[256];         /* decoded content on its way to the transformer */
	uint16_t cbuf_len, cbuf_off;
	/* binary */
	uint8_t word[11];
	uint8_t word_len;
	uint32_t left;
	int64_t out_left;
	bool xf_fresh; /* the transformer has been given nothing of this value yet */
	uint32_t ext_left;
	/* output waiting for room */
	uint8_t pend[512];
	uint16_t pend_off, pend_len;
	struct mask_xf xf;
};

/* Bind to a buffer for binary values held whole (may be NULL with cap 0 for text/CSV). */
void mask_copy_init(struct mask_copy *c, uint8_t *buf, uint32_t cap);

/*
 * Start a COPY with these options and this plan (one column per COPY column, in order).
 * 0, -EINVAL (options PostgreSQL would refuse: a delimiter or quote that is a newline,
 * CR, backslash in text, delimiter equal to quote), -EOPNOTSUPP (text/CSV in an encoding
 * that is not ASCII-safe, a NULL string longer than MASK_COPY_NULL_MAX).
 */
int mask_copy_begin(struct mask_copy *c, const struct mask_copy_opts *o,
		    const struct mask_plan *plan, const struct mask_env *env)
	__attribute__((warn_unused_result));

/*
 * Feed COPY data in[0..n) and write rewritten data into out[0..cap). Sets *consumed and
 * *produced; with room and input it always makes progress. Returns 0, -EPROTO, -E2BIG,
 * -EIO or -ENOTRECOVERABLE (as mask_row_step()). Errors are final.
 */
int mask_copy_feed(struct mask_copy *c, const uint8_t *in, size_t n, size_t *consumed,
		   uint8_t *out, size_t cap, size_t *produced) __attribute__((warn_unused_result));

/*
 * COPY data in[0..n) that holds whole rows only, each of which the one pass takes (as
 * mask_copy_feed() would take it, at a row's start with nothing pending): rewritten into
 * out[0..cap), the bytes mask_copy_feed() writes for it. Returns the bytes written, or 0
 * with nothing changed (a row cut by the end of in, a row the one pass declines, too little
 * room, no input): then mask_copy_feed() takes the data. For a CopyData message at a time,
 * so that a message of whole rows costs no trip through the streaming machine.
 */
size_t mask_copy_whole(struct mask_copy *c, const uint8_t *in, size_t n, uint8_t *out,
		       size_t cap) __attribute__((warn_unused_result));

/*
 * mask_copy_whole() where the plan's masked values keep their place (plan->in_place), over
 * the CopyData messages, header included, at the start of in[0..n), out[0..n) holding a copy
 * of them: each message's rows have their masked values written where they lie, so the
 * output is as long as the input. Returns the bytes of the messages done, in and out alike;
 * it stops before a message cut by the end of in, one whose data is longer than body_max,
 * and the first message not all of whose rows it takes (that one leaves c unchanged and
 * out's bytes from there on undefined: copy them again, for mask_copy_whole() or
 * mask_copy_feed()).
 */
size_t mask_copy_messages_in_place(struct mask_copy *c, const uint8_t *in, uint8_t *out,
				   size_t n, size_t body_max) __attribute__((warn_unused_result));

/* Is output still waiting for room (call feed with n = 0 until not)? Inline: the stage asks
 * once per CopyData message. */
static inline bool mask_copy_pending(const struct mask_copy *c)
{
	return c->pend_len != 0;
}

/* CopyDone arrived: 0 when the data ended where a row (binary: the trailer) ends and all
 * output was taken; -EPROTO otherwise. */
int mask_copy_end(const struct mask_copy *c) __attribute__((warn_unused_result));

#endif
