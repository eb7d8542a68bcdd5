/*
 * Fuzz target for psk.json parsing: the input is the file's text for
 * project "acme". A rejected file must say why, prefixed by its path; an
 * accepted one must hold only entries that the handshake can use: an
 * identity of this project, a usable device name, a key of 1..64 bytes,
 * no identity twice.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "devgate/confdir.h"
#include "devgate/registry.h"

#define PATH "fuzz/acme/psk.json"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_entries(const dg_psk_entry *e, size_t n)
{
	const char *id, *slug;
	size_t id_len, slug_len;

	for (size_t i = 0; i < n; i++) {
		if (e[i].identity == NULL || e[i].device == NULL || e[i].key == NULL)
			abort();
		if (dg_identity_split(e[i].identity, strlen(e[i].identity), &id, &id_len, &slug,
		                      &slug_len) != 0 ||
		    slug_len != 4 || memcmp(slug, "acme", 4) != 0)
			abort();
		if (e[i].key_len == 0 || e[i].key_len > DG_PSK_MAX_KEY)
			abort();
		if (strlen(e[i].device) == 0 || strlen(e[i].device) > 128)
			abort();
		for (const char *p = e[i].device; *p != '\0'; p++)
			if ((unsigned char)*p < 0x20 || *p == 0x7f)
				abort();
		for (size_t j = 0; j < i; j++)
			if (strcmp(e[i].identity, e[j].identity) == 0)
				abort();
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	dg_psk_entry *entries = NULL;
	size_t n = 0;
	char err[512], small[8];
	int rc;

	memset(err, 0, sizeof(err));
	rc = dg_confdir_parse_psk(PATH, "acme", (const char *)data, size, &entries, &n, err,
	                          sizeof(err));
	if (rc == 0) {
		check_entries(entries, n);
		dg_confdir_psk_free(entries, n);
	} else if (rc == -EINVAL) {
		if (strncmp(err, PATH ": ", strlen(PATH ": ")) != 0 ||
		    strlen(err) <= strlen(PATH ": "))
			abort();
	} else if (rc != -ENOMEM) {
		abort();
	}

	/* The same input with an error buffer too small for any message. */
	memset(small, 'Z', sizeof(small));
	rc = dg_confdir_parse_psk(PATH, "acme", (const char *)data, size, &entries, &n, small, 4);
	if (rc == 0)
		dg_confdir_psk_free(entries, n);
	else if (rc == -EINVAL && (small[3] != '\0' || small[4] != 'Z'))
		abort();
	return 0;
}
