/*
 * Replays fuzz inputs without libFuzzer: each argument is a file, or a
 * directory whose regular files are replayed in name order, through the
 * target's LLVMFuzzerTestOneInput(). A crash or sanitizer report is the
 * failure; otherwise it prints how many inputs ran and exits 0.
 */
#include <dirent.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reads all of `path` into a malloc'ed buffer; returns 0 or a negative errno. */
static int
read_file(const char *path, uint8_t **out, size_t *outlen)
{
	FILE *f;
	uint8_t *buf = NULL, *p;
	size_t len = 0, cap = 0, n;
	int rc = 0;

	*out = NULL;
	*outlen = 0;
	f = fopen(path, "rb");
	if (f == NULL)
		return -errno;
	for (;;) {
		if (len == cap) {
			cap = cap ? cap * 2 : 4096;
			p = realloc(buf, cap);
			if (p == NULL) {
				rc = -ENOMEM;
				goto out;
			}
			buf = p;
		}
		n = fread(buf + len, 1, cap - len, f);
		len += n;
		if (n == 0)
			break;
	}
	if (ferror(f))
		rc = -EIO;
out:
	fclose(f);
	if (rc != 0) {
		free(buf);
		return rc;
	}
	*out = buf;
	*outlen = len;
	return 0;
}

static int
replay_file(const char *path)
{
	uint8_t *data;
	size_t len;
	int rc;

	rc = read_file(path, &data, &len);
	if (rc != 0) {
		fprintf(stderr, "fuzz: %s: %s\n", path, strerror(-rc));
		return rc;
	}
	LLVMFuzzerTestOneInput(data, len);
	free(data);
	return 0;
}

/* Replays the regular files of `dir`; returns how many, or a negative errno. */
static long
replay_dir(const char *dir)
{
	struct dirent **names;
	struct stat st;
	char *path;
	long count = 0;
	int n, i, rc = 0;

	n = scandir(dir, &names, NULL, alphasort);
	if (n < 0) {
		rc = -errno;
		fprintf(stderr, "fuzz: %s: %s\n", dir, strerror(errno));
		return rc;
	}
	for (i = 0; i < n; i++) {
		if (rc == 0) {
			if (asprintf(&path, "%s/%s", dir, names[i]->d_name) < 0) {
				rc = -ENOMEM;
			} else {
				if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
					rc = replay_file(path);
					count++;
				}
				free(path);
			}
		}
		free(names[i]);
	}
	free(names);
	return rc != 0 ? rc : count;
}

int
main(int argc, char **argv)
{
	struct stat st;
	long total = 0, n;
	int i;

	for (i = 1; i < argc; i++) {
		if (stat(argv[i], &st) != 0) {
			fprintf(stderr, "fuzz: %s: %s\n", argv[i], strerror(errno));
			return 1;
		}
		if (S_ISDIR(st.st_mode)) {
			n = replay_dir(argv[i]);
			if (n < 0)
				return 1;
			total += n;
		} else {
			if (replay_file(argv[i]) != 0)
				return 1;
			total++;
		}
	}
	printf("fuzz: %ld inputs replayed\n", total);
	return 0;
}
