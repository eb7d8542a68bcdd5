# devgate build. `make` builds build/devgate; `make run` and `make check`
# install what is missing first (scripts/deps.sh), so a fresh Debian 12
# needs nothing else.

CC       ?= cc
BUILD    ?= build
WOLFSSL  ?= third_party/wolfssl
# Where `make install` puts things; DESTDIR stages the tree for a package.
PREFIX     ?= /usr/local
DESTDIR    ?=
SYSCONFDIR ?= /etc
UNITDIR    ?= /lib/systemd/system
DATADIR    ?= $(PREFIX)/share/devgate
PKGS     := libuv sqlite3 libcjson libcbor libcoap-3-notls libsystemd libmicrohttpd

WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
            -Wmissing-prototypes -Wpointer-arith -Wcast-qual
# CFLAGS is the caller's (optimisation, sanitizers); DG_CFLAGS is what the
# code needs whatever CFLAGS says.
CFLAGS   ?= -O2 -g
DG_CFLAGS := -std=gnu11 $(WARN) -fstack-protector-strong -D_GNU_SOURCE \
            -Iinclude -I$(WOLFSSL)/include -MMD -MP $(shell pkg-config --cflags $(PKGS))
LDLIBS   += $(WOLFSSL)/lib/libwolfssl.a \
            $(shell pkg-config --libs $(PKGS)) -lpthread -lm

SRCS     := src/main.c $(wildcard src/*/*.c)
LIBSRCS  := $(filter-out src/main.c,$(SRCS))
LIBOBJS  := $(LIBSRCS:%.c=$(BUILD)/%.o)
UNITS    := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(wildcard tests/unit/check_*.c))
FUZZERS  := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(wildcard tests/fuzz/fuzz_*.c))

.PHONY: all deps run check units fuzzers asan ubsan check-build clean format fuzz fuzz-build libfuzzers bench

all: $(BUILD)/devgate $(BUILD)/bench/loadgen

deps:
	@scripts/deps.sh

run: deps
	@$(MAKE) --no-print-directory all
	@scripts/first-run.sh conf/devgate.json
	exec $(BUILD)/devgate serve -c conf/devgate.json

# The whole suite runs twice: on the normal build, and on a build with
# AddressSanitizer and UndefinedBehaviorSanitizer (leaks included, since the
# integration tests stop the daemon with SIGTERM and expect exit 0).
check: deps
	@$(MAKE) --no-print-directory all units fuzzers
	@$(MAKE) --no-print-directory BUILD=build-san CFLAGS="$(SANFLAGS)" all units fuzzers
	@if scripts/fuzz.sh --available $(FUZZ_CC); then \
		$(MAKE) --no-print-directory fuzz-build && \
		DG_LIBFUZZER=$(FUZZ_BUILD) scripts/run-tests.sh $(BUILD) build-san; \
	else \
		echo "check: no libFuzzer for $(FUZZ_CC); the fuzz targets run over their corpora only"; \
		scripts/run-tests.sh $(BUILD) build-san; \
	fi

units: $(UNITS)

# The load generator (OpenSSL as the DTLS client) and `make bench`: devgate
# against coap-server-openssl in the same run, several minutes; not part of
# `make check`, which runs it once with tiny counts (scripts/run-tests.sh).
# BENCH_ARGS passes counts and options (bench/run.py's docstring lists them),
# e.g. BENCH_ARGS="--large 20000 --idle-large 20000 --markdown".
$(BUILD)/bench/loadgen: bench/loadgen.c
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 $(WARN) -D_GNU_SOURCE $(CFLAGS) -o $@ $< -lssl -lcrypto

BENCH_PYTHON ?= $(firstword $(wildcard /usr/bin/python3) python3)
bench: all
	$(BENCH_PYTHON) bench/run.py $(BUILD) $(BENCH_ARGS)
fuzzers: $(FUZZERS)

$(BUILD)/libdevgate.a: $(LIBOBJS)
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^

$(BUILD)/devgate: $(BUILD)/src/main.o $(BUILD)/libdevgate.a
	$(CC) $(DG_CFLAGS) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/src/%.o: src/%.c $(BUILD)/src/schema.inc
	@mkdir -p $(dir $@)
	$(CC) $(DG_CFLAGS) $(CFLAGS) -I$(BUILD)/src -c -o $@ $<

# The SQL migrations are compiled into the binary, one string per file,
# in the order of their numbered names.
$(BUILD)/src/schema.inc: $(sort $(wildcard sql/*.sql)) scripts/embed-sql.sh
	@mkdir -p $(dir $@)
	scripts/embed-sql.sh $(sort $(wildcard sql/*.sql)) > $@

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libdevgate.a
	@mkdir -p $(dir $@)
	$(CC) $(DG_CFLAGS) $(CFLAGS) -o $@ $< $(BUILD)/libdevgate.a $(LDLIBS) $(shell pkg-config --libs check)

# Fuzz targets: built here with a small driver that replays a corpus, so
# `make check` runs them on every input; `make fuzz` builds them for
# libFuzzer with clang.
$(BUILD)/fuzz/%: tests/fuzz/%.c tests/fuzz/driver.c $(BUILD)/libdevgate.a
	@mkdir -p $(dir $@)
	$(CC) $(DG_CFLAGS) $(CFLAGS) -o $@ $< tests/fuzz/driver.c $(BUILD)/libdevgate.a $(LDLIBS)

# libFuzzer: `make fuzz` builds every target with clang, ASan and UBSan in
# $(FUZZ_BUILD)/libfuzzer/ (wolfSSL's gcc-built static library is linked
# as is), then runs each for FUZZ_SECONDS over its committed corpus
# (read only) and a working corpus in $(FUZZ_BUILD)/corpus/; crashes land
# in $(FUZZ_BUILD)/crashes/. FUZZ_SECONDS=0 only builds.
FUZZ_CC      ?= clang
FUZZ_BUILD   ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_CFLAGS  := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
                -fno-sanitize-recover=all -fsanitize=fuzzer-no-link
LIBFUZZERS   := $(patsubst tests/fuzz/%.c,$(BUILD)/libfuzzer/%,$(wildcard tests/fuzz/fuzz_*.c))

fuzz-build:
	@$(MAKE) --no-print-directory BUILD=$(FUZZ_BUILD) CC=$(FUZZ_CC) CFLAGS="$(FUZZ_CFLAGS)" libfuzzers

fuzz: fuzz-build
	@scripts/fuzz.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

libfuzzers: $(LIBFUZZERS)

$(BUILD)/libfuzzer/%: tests/fuzz/%.c $(BUILD)/libdevgate.a
	@mkdir -p $(dir $@)
	$(CC) $(DG_CFLAGS) $(CFLAGS) -fsanitize=fuzzer -o $@ $< $(BUILD)/libdevgate.a $(LDLIBS)

SANFLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all

asan:
	$(MAKE) BUILD=build-asan CFLAGS="-O1 -g -fno-omit-frame-pointer -fsanitize=address" check-build
ubsan:
	$(MAKE) BUILD=build-ubsan CFLAGS="-O1 -g -fsanitize=undefined -fno-sanitize-recover=all" check-build

check-build: all units fuzzers
	@scripts/run-tests.sh $(BUILD)

# The log settings change under threads that log (SIGHUP): check_log built
# with ThreadSanitizer shows no data race. Not part of `make check`.
.PHONY: tsan-log
tsan-log:
	@mkdir -p build-tsan
	$(CC) -std=gnu11 $(WARN) -D_GNU_SOURCE -Iinclude -O1 -g -fsanitize=thread \
		-o build-tsan/check_log tests/unit/check_log.c src/ops/log.c \
		$(shell pkg-config --libs check) -lpthread
	CK_FORK=no build-tsan/check_log

# The binary, the systemd unit (pointed at this PREFIX and SYSCONFDIR), the
# SQL migrations for reference (they are compiled in), and a default
# config with an empty projects directory, which is never overwritten: an
# operator's devgate.json and projects/README.md stay as they are.
.PHONY: install
install: $(BUILD)/devgate
	install -d -m 0755 $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DATADIR)/sql \
		$(DESTDIR)$(SYSCONFDIR)/devgate/projects
	install -m 0755 $(BUILD)/devgate $(DESTDIR)$(PREFIX)/bin/devgate
	sed -e 's|^ExecStart=/usr/local/bin/devgate |ExecStart=$(PREFIX)/bin/devgate |' \
		-e 's|/etc/devgate/|$(SYSCONFDIR)/devgate/|g' \
		systemd/devgate.service >$(DESTDIR)$(UNITDIR)/devgate.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/devgate.service
	install -m 0644 $(sort $(wildcard sql/*.sql)) $(DESTDIR)$(DATADIR)/sql/
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/devgate/devgate.json ]; then \
		echo "install: keeping the existing $(DESTDIR)$(SYSCONFDIR)/devgate/devgate.json"; \
	else \
		echo "install: $(DESTDIR)$(SYSCONFDIR)/devgate/devgate.json"; \
		sed 's|/etc/devgate/|$(SYSCONFDIR)/devgate/|g' conf/install/devgate.json \
			>$(DESTDIR)$(SYSCONFDIR)/devgate/devgate.json && \
		chmod 0644 $(DESTDIR)$(SYSCONFDIR)/devgate/devgate.json; \
	fi
	@if [ ! -e $(DESTDIR)$(SYSCONFDIR)/devgate/projects/README.md ]; then \
		install -m 0644 conf/install/projects-README.md \
			$(DESTDIR)$(SYSCONFDIR)/devgate/projects/README.md; \
	fi

format:
	clang-format -i src/*.c src/services/*.c include/devgate/*.h tests/unit/*.c tests/fuzz/*.c

clean:
	rm -rf build build-san build-asan build-ubsan build-tsan build-fuzz

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
