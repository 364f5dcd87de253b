/*
 * mask_copy_util: one piece of COPY data through the stage's in-place pass, for the COPY
 * rewriter's unit suite and fuzzer, which check that pass against the one-pass rewriter.
 */
#ifndef PGWARDEN_MASK_COPY_UTIL_H
#define PGWARDEN_MASK_COPY_UTIL_H

#include "mask/mask_copy.h"
#include "proto/proto.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The stage's in-place pass on in[0..n) sent as one CopyData message, into out[0..n) that
 * holds a copy of it: true when it took the message (out then holds the masked data). */
static inline bool copy_message_in_place(struct mask_copy *c, const uint8_t *in,
					  uint8_t *out, size_t n)
{
	uint8_t *msg = malloc(PROTO_HEADER_LEN + n), *copy = malloc(PROTO_HEADER_LEN + n);
	bool took;

	if (!msg || !copy)
		abort();
	msg[0] = 'd';
	proto_write_u32(msg + 1, (uint32_t)n + 4);
	memcpy(msg + PROTO_HEADER_LEN, in, n);
	memcpy(copy, msg, PROTO_HEADER_LEN + n);
	took = mask_copy_messages_in_place(c, msg, copy, PROTO_HEADER_LEN + n, SIZE_MAX) ==
	       PROTO_HEADER_LEN + n;
	if (took)
		memcpy(out, copy + PROTO_HEADER_LEN, n);
	free(msg);
	free(copy);
	return took;
}

#endif
