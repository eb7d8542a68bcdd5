/*
 * LightDB State as a cJSON tree: set (with recursive object merge), get,
 * delete, and the path helpers.
 *
 * Keys are compared byte for byte (cJSON's own object lookup ignores
 * case). A set allocates everything it may need before it changes the
 * document, so a failed set leaves the document as it was. Members are
 * moved from the value into the document, never copied; merging a large
 * object goes through a hash index of the keys already there, so that a
 * body of many members costs linear time, not quadratic.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "devgate/state.h"

/* Below this many members in the destination, merging scans the list. */
#define INDEX_MIN 16

/* Returns 1 when segment `seg` is exactly the NUL-terminated key `key`. */
static int
seg_is(const dg_path_seg *seg, const char *key)
{
	return key != NULL && strlen(key) == seg->len && memcmp(key, seg->s, seg->len) == 0;
}

/* Returns the first member of object `obj` whose key is exactly `seg`, or NULL. */
static cJSON *
find_seg(const cJSON *obj, const dg_path_seg *seg)
{
	for (cJSON *c = obj->child; c != NULL; c = c->next)
		if (seg_is(seg, c->string))
			return c;
	return NULL;
}

/* Returns the first member of object `obj` whose key is `key`, or NULL. */
static cJSON *
find_key(const cJSON *obj, const char *key)
{
	for (cJSON *c = obj->child; c != NULL; c = c->next)
		if (c->string != NULL && strcmp(c->string, key) == 0)
			return c;
	return NULL;
}

/* Returns 1 when s[0..len) is UTF-8 without NUL: what a key may hold. */
static int
seg_valid(const dg_path_seg *seg)
{
	const uint8_t *s = (const uint8_t *)seg->s;
	size_t i = 0, len = seg->len;

	if (len > 0 && s == NULL)
		return 0;
	while (i < len) {
		uint8_t c = s[i], lo = 0x80, hi = 0xbf;
		size_t n;

		if (c == 0)
			return 0;
		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			lo = c == 0xe0 ? 0xa0 : 0x80;
			hi = c == 0xed ? 0x9f : 0xbf;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			lo = c == 0xf0 ? 0x90 : 0x80;
			hi = c == 0xf4 ? 0x8f : 0xbf;
		} else {
			return 0;
		}
		if (len - i <= n || s[i + 1] < lo || s[i + 1] > hi)
			return 0;
		for (size_t k = 2; k <= n; k++)
			if (s[i + k] < 0x80 || s[i + k] > 0xbf)
				return 0;
		i += n + 1;
	}
	return 1;
}

/* A copy of a segment as a key, allocated as cJSON frees keys. */
static char *
seg_dup(const dg_path_seg *seg)
{
	char *k = cJSON_malloc(seg->len + 1);

	if (k == NULL)
		return NULL;
	if (seg->len > 0)
		memcpy(k, seg->s, seg->len);
	k[seg->len] = '\0';
	return k;
}

/* Gives `item` the key `key` (taken), dropping any key it had. */
static void
set_key(cJSON *item, char *key)
{
	if (item->string != NULL && !(item->type & cJSON_StringIsConst))
		cJSON_free(item->string);
	item->type &= ~cJSON_StringIsConst;
	item->string = key;
}

/*
 * An open-addressing index of an object's members by key, first member
 * of a key winning as in find_key(). When it cannot be allocated, slot is
 * NULL and lookups scan the list instead.
 */
typedef struct keyindex {
	cJSON **slot;
	size_t mask;
} keyindex;

static size_t
hash_key(const char *s)
{
	uint64_t h = 0xcbf29ce484222325u; /* FNV-1a */

	for (; *s != '\0'; s++)
		h = (h ^ (uint8_t)*s) * 0x100000001b3u;
	return (size_t)(h ^ (h >> 29));
}

/* Returns the slot holding `key`, or the empty slot where it would go. */
static cJSON **
index_slot(const keyindex *ix, const char *key)
{
	size_t i = hash_key(key) & ix->mask;

	while (ix->slot[i] != NULL && strcmp(ix->slot[i]->string, key) != 0)
		i = (i + 1) & ix->mask;
	return &ix->slot[i];
}

/* Indexes obj's members, leaving room for `more`; small objects get no index. */
static void
index_init(keyindex *ix, const cJSON *obj, size_t more)
{
	size_t n = more, size = 64;

	ix->slot = NULL;
	ix->mask = 0;
	for (const cJSON *c = obj->child; c != NULL; c = c->next)
		n++;
	if (n - more < INDEX_MIN && more < INDEX_MIN)
		return;
	while (size < 2 * n && size < SIZE_MAX / 4)
		size *= 2;
	ix->slot = calloc(size, sizeof(*ix->slot));
	if (ix->slot == NULL)
		return;
	ix->mask = size - 1;
	for (cJSON *c = obj->child; c != NULL; c = c->next) {
		cJSON **s;

		if (c->string == NULL)
			continue;
		s = index_slot(ix, c->string);
		if (*s == NULL)
			*s = c;
	}
}

/*
 * Moves the members of the detached list `list` into object `dst` by the
 * rules of dg_state_set(): an object merges into an object of the same
 * key, recursively; anything else replaces. Members without a key are
 * dropped. Allocates nothing that it needs: without an index it scans.
 */
static void
merge_list(cJSON *dst, cJSON *list)
{
	keyindex ix;
	size_t more = 0;
	cJSON *item, *next;

	for (item = list; item != NULL; item = item->next)
		more++;
	index_init(&ix, dst, more);
	for (item = list; item != NULL; item = next) {
		cJSON **slot = NULL, *old;

		next = item->next;
		item->next = item->prev = NULL;
		if (item->string == NULL) {
			cJSON_Delete(item);
			continue;
		}
		if (ix.slot != NULL) {
			slot = index_slot(&ix, item->string);
			old = *slot;
		} else {
			old = find_key(dst, item->string);
		}
		if (cJSON_IsObject(item)) {
			cJSON *kids = item->child;

			item->child = NULL;
			if (cJSON_IsObject(old)) {
				cJSON_Delete(item);
				merge_list(old, kids);
				continue;
			}
			/* Lands where no object was: its own members, merged into it. */
			merge_list(item, kids);
		}
		if (old != NULL)
			cJSON_ReplaceItemViaPointer(dst, old, item);
		else
			cJSON_AddItemToArray(dst, item);
		if (slot != NULL)
			*slot = item;
	}
	free(ix.slot);
}

/* Merges the members of object `src` into object `dst`, and frees src. */
static void
merge_object(cJSON *dst, cJSON *src)
{
	cJSON *kids = src->child;

	src->child = NULL;
	cJSON_Delete(src);
	merge_list(dst, kids);
}

/*
 * Makes `value` a document of its own: an object takes its members once
 * each (the last of a repeated key wins, objects merging), and loses any
 * key it had.
 */
static cJSON *
normalize(cJSON *value)
{
	if (cJSON_IsObject(value)) {
		cJSON *kids = value->child;

		value->child = NULL;
		merge_list(value, kids);
	}
	set_key(value, NULL);
	return value;
}

/* Sets the whole document: an object merges into an object root, anything else replaces it. */
static void
set_root(cJSON **doc, cJSON *value)
{
	if (cJSON_IsObject(value) && cJSON_IsObject(*doc)) {
		merge_object(*doc, value);
		return;
	}
	cJSON_Delete(*doc);
	*doc = normalize(value);
}

int
dg_state_set(cJSON **doc, const dg_path_seg *path, size_t n, cJSON *value)
{
	cJSON *parent, *child = NULL, *root = NULL, *top = NULL, *bottom = NULL, *old;
	char *key = NULL;
	size_t i;
	int rc = 0;

	if (doc == NULL || value == NULL || (n > 0 && path == NULL)) {
		rc = -EINVAL;
		goto fail;
	}
	for (i = 0; i < n; i++) {
		if (!seg_valid(&path[i])) {
			rc = -EINVAL;
			goto fail;
		}
	}
	if (n == 0) {
		set_root(doc, value);
		return 0;
	}

	/* Walk down the objects that are there: path[0..i) exist as objects. */
	parent = cJSON_IsObject(*doc) ? *doc : NULL;
	i = 0;
	if (parent != NULL) {
		for (; i + 1 < n; i++) {
			child = find_seg(parent, &path[i]);
			if (!cJSON_IsObject(child))
				break;
			parent = child;
		}
	}

	/* Allocate all that is missing before anything changes. */
	rc = -ENOMEM;
	key = seg_dup(&path[n - 1]);
	if (key == NULL)
		goto fail;
	if (parent == NULL) {
		root = cJSON_CreateObject();
		if (root == NULL)
			goto fail;
	}
	for (size_t j = i; j + 1 < n; j++) {
		cJSON *o = cJSON_CreateObject();
		char *k = seg_dup(&path[j]);

		if (o == NULL || k == NULL) {
			cJSON_Delete(o);
			cJSON_free(k);
			goto fail;
		}
		set_key(o, k);
		if (bottom == NULL)
			top = o;
		else
			cJSON_AddItemToArray(bottom, o);
		bottom = o;
	}
	rc = 0;

	/* Place the value. */
	if (bottom != NULL) {
		/* A new chain: the value lands in an empty object. */
		normalize(value);
		set_key(value, key);
		cJSON_AddItemToArray(bottom, value);
		value = top;
		old = parent != NULL ? find_seg(parent, &path[i]) : NULL;
	} else {
		old = parent != NULL ? find_seg(parent, &path[n - 1]) : NULL;
		if (cJSON_IsObject(value) && cJSON_IsObject(old)) {
			cJSON_free(key);
			merge_object(old, value);
			return 0;
		}
		normalize(value);
		set_key(value, key);
	}
	if (parent == NULL) {
		cJSON_AddItemToArray(root, value);
		cJSON_Delete(*doc);
		*doc = root;
	} else if (old != NULL) {
		cJSON_ReplaceItemViaPointer(parent, old, value);
	} else {
		cJSON_AddItemToArray(parent, value);
	}
	return 0;
fail:
	cJSON_Delete(top);
	cJSON_Delete(root);
	cJSON_free(key);
	cJSON_Delete(value);
	return rc;
}

const cJSON *
dg_state_get(const cJSON *doc, const dg_path_seg *path, size_t n)
{
	const cJSON *v = doc;

	for (size_t i = 0; i < n && v != NULL; i++) {
		if (!cJSON_IsObject(v))
			return NULL;
		v = find_seg(v, &path[i]);
	}
	return v;
}

int
dg_state_delete(cJSON **doc, const dg_path_seg *path, size_t n)
{
	cJSON *parent, *item;

	if (doc == NULL || *doc == NULL)
		return 0;
	if (n == 0) {
		cJSON_Delete(*doc);
		*doc = NULL;
		return 1;
	}
	parent = (cJSON *)(uintptr_t)dg_state_get(*doc, path, n - 1);
	if (!cJSON_IsObject(parent))
		return 0;
	item = find_seg(parent, &path[n - 1]);
	if (item == NULL)
		return 0;
	cJSON_Delete(cJSON_DetachItemViaPointer(parent, item));
	return 1;
}

int
dg_state_path_overlaps(const dg_path_seg *observed, size_t n_obs, const dg_path_seg *changed,
                       size_t n_chg)
{
	size_t n = n_obs < n_chg ? n_obs : n_chg;

	/* Overlap is one path being a prefix of the other, segment by segment. */
	for (size_t i = 0; i < n; i++) {
		if (observed[i].len != changed[i].len ||
		    (observed[i].len > 0 &&
		     memcmp(observed[i].s, changed[i].s, observed[i].len) != 0))
			return 0;
	}
	return 1;
}

size_t
dg_state_path_count(const char *text)
{
	size_t n = 0;

	if (text == NULL)
		return 0;
	for (const char *p = text; *p != '\0'; p++)
		if (*p != '/' && (p == text || p[-1] == '/'))
			n++;
	return n;
}

size_t
dg_state_path_parse(const char *text, dg_path_seg *out, size_t max)
{
	size_t n = 0;
	const char *p = text;

	if (text == NULL)
		return 0;
	while (*p != '\0' && n < max) {
		const char *start;

		while (*p == '/')
			p++;
		if (*p == '\0')
			break;
		start = p;
		while (*p != '\0' && *p != '/')
			p++;
		out[n].s = start;
		out[n].len = (size_t)(p - start);
		n++;
	}
	return n;
}
