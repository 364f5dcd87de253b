/* cancel: issued cancel keys → server cancel keys (see cancel.h). */
#include "relay/cancel.h"

#include "base/rand_pool.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define CANCEL_BUCKETS 4096 /* power of two; chains stay short at tens of thousands of sessions */

/* Sized to its keys (8 bytes for protocol 3.0), not to the 3.2 maximum: one per session,
 * so every idle session holds one. 30 bytes with 3.0 keys (a 48-byte malloc chunk): the
 * session id and its server are read from the owner session under the lock, not copied,
 * the key length is as narrow as its limit, and there is no back link (a removal walks its
 * bucket's short chain). */
struct cancel_entry {
	struct cancel_entry *next;
	const struct session *owner;
	uint32_t pid;
	uint16_t key_len; /* at most PROTO_CANCEL_KEY_MAX */
	uint8_t data[];   /* client key, then server key */
};

_Static_assert(PROTO_CANCEL_KEY_MAX <= UINT16_MAX, "a key's length fits key_len");

static size_t cancel_entry_size(uint32_t key_len)
{
	return offsetof(struct cancel_entry, data) + 2 * (size_t)key_len;
}

struct cancel_map {
	pthread_mutex_t lock;
	struct cancel_entry *buckets[CANCEL_BUCKETS];
};

static unsigned cancel_bucket(uint32_t pid)
{
	/* Server pids are small sequential integers: spread them with a multiplicative hash. */
	return (pid * 2654435761u) >> 20 & (CANCEL_BUCKETS - 1);
}

/* Copy what a cancel needs out of an entry; the caller holds the lock. */
static void cancel_entry_target(const struct cancel_entry *e, struct cancel_target *out)
{
	const struct session *s = e->owner;

	memcpy(out->session_id, s->id_hex, sizeof(out->session_id));
	out->upstream = s->upstream;
	out->upstream_unix[0] = '\0';
	if (s->upstream_unix) /* its length was checked at issue */
		memcpy(out->upstream_unix, s->upstream_unix, strlen(s->upstream_unix) + 1);
	out->pid = e->pid;
	out->key_len = e->key_len;
	memcpy(out->server_key, e->data + e->key_len, e->key_len);
}

struct cancel_map *cancel_map_new(void)
{
	struct cancel_map *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	pthread_mutex_init(&m->lock, NULL);
	return m;
}

void cancel_map_free(struct cancel_map *m)
{
	if (!m)
		return;
	for (unsigned i = 0; i < CANCEL_BUCKETS; i++) {
		while (m->buckets[i]) {
			struct cancel_entry *e = m->buckets[i];

			m->buckets[i] = e->next;
			OPENSSL_cleanse(e, cancel_entry_size(e->key_len));
			free(e);
		}
	}
	pthread_mutex_destroy(&m->lock);
	free(m);
}

void *cancel_map_issue(struct cancel_map *m, const struct session *owner, uint32_t pid,
		       const uint8_t *server_key, uint32_t key_len, uint8_t *client_key)
{
	struct cancel_entry *e, **head;

	if (key_len == 0 || key_len > PROTO_CANCEL_KEY_MAX ||
	    (owner->upstream_unix && strlen(owner->upstream_unix) + 1 > CANCEL_UNIX_PATH_MAX))
		return NULL;
	e = calloc(1, cancel_entry_size(key_len));
	if (!e)
		return NULL;
	if (rand_pool_bytes(e->data, key_len)) {
		free(e);
		return NULL;
	}
	e->owner = owner;
	e->pid = pid;
	e->key_len = (uint16_t)key_len;
	memcpy(e->data + key_len, server_key, key_len);
	memcpy(client_key, e->data, key_len);

	pthread_mutex_lock(&m->lock);
	head = &m->buckets[cancel_bucket(pid)];
	e->next = *head;
	*head = e;
	pthread_mutex_unlock(&m->lock);
	return e;
}

bool cancel_map_lookup(struct cancel_map *m, uint32_t pid, const uint8_t *client_key,
		       uint32_t key_len, struct cancel_target *out)
{
	bool found = false;

	pthread_mutex_lock(&m->lock);
	for (struct cancel_entry *e = m->buckets[cancel_bucket(pid)]; e; e = e->next) {
		if (e->pid != pid || e->key_len != key_len)
			continue;
		if (CRYPTO_memcmp(e->data, client_key, key_len) == 0) {
			cancel_entry_target(e, out);
			found = true;
			break;
		}
	}
	pthread_mutex_unlock(&m->lock);
	return found;
}

void cancel_map_remove(struct cancel_map *m, void *handle)
{
	struct cancel_entry *e = handle;

	if (!e)
		return;
	pthread_mutex_lock(&m->lock);
	for (struct cancel_entry **p = &m->buckets[cancel_bucket(e->pid)]; *p; p = &(*p)->next) {
		if (*p == e) {
			*p = e->next;
			break;
		}
	}
	pthread_mutex_unlock(&m->lock);
	OPENSSL_cleanse(e, cancel_entry_size(e->key_len));
	free(e);
}

void cancel_map_target(struct cancel_map *m, void *handle, struct cancel_target *out)
{
	const struct cancel_entry *e = handle;

	pthread_mutex_lock(&m->lock);
	cancel_entry_target(e, out);
	pthread_mutex_unlock(&m->lock);
}
