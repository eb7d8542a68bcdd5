#!/bin/sh
# Turns the numbered SQL migration files into a C array of strings.
set -eu
echo "/* Generated from sql/ by scripts/embed-sql.sh; do not edit. */"
echo "static const char *const schema_migrations[] = {"
for f in "$@"; do
	printf '\t/* %s */\n\t"' "$f"
	sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/$/\\n"/' -e '2,$s/^/\t"/' "$f"
	printf '\t,\n'
done
echo "};"
