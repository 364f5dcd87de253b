/* sanitize: peer bytes made safe for logs, JSON and terminals (see sanitize.h). */
#include "base/sanitize.h"
#include "base/utf8.h"

#include <stdint.h>
#include <string.h>

/* Unicode format characters that can reorder, hide or split what a terminal shows. */
static bool is_format_char(uint32_t cp)
{
	return (cp >= 0x200b && cp <= 0x200f) || /* zero-width space/joiners, LRM, RLM */
	       (cp >= 0x2028 && cp <= 0x202e) || /* line/paragraph separators, bidi embeddings */
	       (cp >= 0x2060 && cp <= 0x2069) || /* word joiner, invisible operators, isolates */
	       cp == 0xfeff || cp == 0x061c;     /* BOM / zero-width no-break space, ALM */
}

static bool needs_escape(uint32_t cp, enum sanitize_for to)
{
	if (cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f))
		return true;
	return (to == SANITIZE_TERMINAL || to == SANITIZE_TERMINAL_ESCAPED) && is_format_char(cp);
}

/*
 * The safe form of the piece at s[0..n): sets *used (input bytes) and writes at most 16
 * bytes to piece; returns their count.
 */
static size_t sanitize_piece(const unsigned char *s, size_t n, enum sanitize_for to,
			     size_t *used, char piece[16])
{
	static const char hex[] = "0123456789abcdef";
	uint32_t cp = 0;
	size_t k = utf8_decode(s, n, &cp), len = 0;

	if (k == 1 && ((cp == '\\' && to != SANITIZE_TERMINAL_ESCAPED) ||
		       (cp == '"' && to == SANITIZE_LOG))) {
		piece[0] = '\\';
		piece[1] = (char)cp;
		*used = 1;
		return 2;
	}
	if (k && !needs_escape(cp, to)) {
		memcpy(piece, s, k);
		*used = k;
		return k;
	}
	/* Invalid: one byte at a time, so the next byte gets its own chance to start a valid
	 * sequence. Valid but unsafe: every byte of the sequence. */
	if (!k)
		k = 1;
	for (size_t i = 0; i < k; i++) {
		piece[len++] = '\\';
		piece[len++] = 'x';
		piece[len++] = hex[s[i] >> 4];
		piece[len++] = hex[s[i] & 15];
	}
	*used = k;
	return len;
}

/* A printable ASCII byte that is its own safe form (what sanitize_piece() would copy). */
static bool is_plain(unsigned char c, enum sanitize_for to)
{
	return c >= 0x20 && c < 0x7f && c != '\\' && !(c == '"' && to == SANITIZE_LOG);
}

size_t sanitize(char *out, size_t cap, const char *in, size_t n, enum sanitize_for to,
		bool *truncated)
{
	const unsigned char *s = (const unsigned char *)in;
	size_t len = 0, i = 0;

	if (truncated)
		*truncated = false;
	if (!cap)
		return 0;
	while (i < n) {
		char piece[16];
		size_t used, k, run = i;

		/* Names, addresses and most SQL are plain ASCII: copied a run at a time, one
		 * byte being one piece, so a cut falls where the piece by piece loop's would. */
		while (run < n && is_plain(s[run], to))
			run++;
		if (run > i) {
			bool cut = len + (run - i) >= cap;

			k = cut ? cap - 1 - len : run - i;
			memcpy(out + len, s + i, k);
			len += k;
			i += k;
			if (cut) {
				if (truncated)
					*truncated = true;
				break;
			}
			continue;
		}
		k = sanitize_piece(s + i, n - i, to, &used, piece);
		if (len + k >= cap) {
			if (truncated)
				*truncated = true;
			break;
		}
		memcpy(out + len, piece, k);
		len += k;
		i += used;
	}
	out[len] = '\0';
	return len;
}

size_t sanitize_str(char *out, size_t cap, const char *in, enum sanitize_for to,
		    bool *truncated)
{
	return sanitize(out, cap, in ? in : "", in ? strlen(in) : 0, to, truncated);
}

size_t sanitize_len(const char *in, size_t n, enum sanitize_for to)
{
	const unsigned char *s = (const unsigned char *)in;
	size_t len = 0, i = 0;

	while (i < n) {
		char piece[16];
		size_t used;

		len += sanitize_piece(s + i, n - i, to, &used, piece);
		i += used;
	}
	return len;
}

bool sanitize_is_clean(const char *in, size_t n, enum sanitize_for to)
{
	const unsigned char *s = (const unsigned char *)in;
	size_t i = 0;

	while (i < n) {
		char piece[16];
		size_t used, k = sanitize_piece(s + i, n - i, to, &used, piece);

		if (k != used || memcmp(piece, s + i, k) != 0)
			return false;
		i += used;
	}
	return true;
}
