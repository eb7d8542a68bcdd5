# devgate build. `make` builds build/devgate; `make run` and `make check`
# install what is missing first (scripts/deps.sh), so a fresh Debian 12
# needs nothing else.

CC       ?= cc
BUILD    ?= build
WOLFSSL  ?= third_party/wolfssl
PKGS     := libuv sqlite3 libcjson libcbor libcoap-3-notls

WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
            -Wmissing-prototypes -Wpointer-arith -Wcast-qual
CFLAGS   ?= -O2 -g
CFLAGS   += -std=gnu11 $(WARN) -fstack-protector-strong -D_GNU_SOURCE \
            -Iinclude -I$(WOLFSSL)/include -MMD -MP
CFLAGS   += $(shell pkg-config --cflags $(PKGS))
LDLIBS   += $(WOLFSSL)/lib/libwolfssl.a \
            $(shell pkg-config --libs $(PKGS)) -lpthread -lm

SRCS     := $(wildcard src/*.c src/services/*.c)
LIBSRCS  := $(filter-out src/main.c,$(SRCS))
LIBOBJS  := $(LIBSRCS:%.c=$(BUILD)/%.o)
UNITS    := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(wildcard tests/unit/check_*.c))
FUZZERS  := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(wildcard tests/fuzz/fuzz_*.c))

.PHONY: all deps run check unit integration fuzz-smoke asan ubsan clean format install

all: $(BUILD)/devgate

deps:
	@scripts/deps.sh

run: deps
	@$(MAKE) --no-print-directory all
	@scripts/first-run.sh conf/devgate.json
	exec $(BUILD)/devgate serve -c conf/devgate.json

check: deps
	@$(MAKE) --no-print-directory all units fuzzers
	@scripts/run-tests.sh $(BUILD)

units: $(UNITS)
fuzzers: $(FUZZERS)

$(BUILD)/libdevgate.a: $(LIBOBJS)
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^

$(BUILD)/devgate: $(BUILD)/src/main.o $(BUILD)/libdevgate.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/src/%.o: src/%.c $(BUILD)/src/schema.inc
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -I$(BUILD)/src -c -o $@ $<

# The SQL migrations are compiled into the binary, one string per file,
# in the order of their numbered names.
$(BUILD)/src/schema.inc: $(sort $(wildcard sql/*.sql)) scripts/embed-sql.sh
	@mkdir -p $(dir $@)
	scripts/embed-sql.sh $(sort $(wildcard sql/*.sql)) > $@

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libdevgate.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libdevgate.a $(LDLIBS) $(shell pkg-config --libs check)

# Fuzz targets: built here with a small driver that replays a corpus, so
# `make check` runs them on every input; `make fuzz` builds them for
# libFuzzer with clang.
$(BUILD)/fuzz/%: tests/fuzz/%.c tests/fuzz/driver.c $(BUILD)/libdevgate.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< tests/fuzz/driver.c $(BUILD)/libdevgate.a $(LDLIBS)

asan:
	$(MAKE) BUILD=build-asan CFLAGS="-O1 -g -fsanitize=address -fno-omit-frame-pointer" check-build
ubsan:
	$(MAKE) BUILD=build-ubsan CFLAGS="-O1 -g -fsanitize=undefined -fno-sanitize-recover=all" check-build

check-build: all units fuzzers
	@scripts/run-tests.sh $(BUILD)

format:
	clang-format -i src/*.c src/services/*.c include/devgate/*.h tests/unit/*.c tests/fuzz/*.c

clean:
	rm -rf build build-asan build-ubsan

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
