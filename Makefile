# corral — build, run and test. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := all

BUILD ?= build
SAN ?=
PREFIX ?= /usr/local
PY := /usr/bin/python3

CC := gcc
WARN := -Wall -Wextra -Werror -Wno-unused-parameter -Wshadow -Wformat=2 -Wno-format-nonliteral -Wno-format-truncation
CFLAGS_BASE := -std=gnu11 -D_GNU_SOURCE -g -O2 -fno-strict-aliasing $(WARN) \
	-I. -Isandbox -I$(BUILD)/gen
ifeq ($(SAN),1)
CFLAGS_BASE += -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
LDFLAGS_SAN := -fsanitize=address,undefined
endif
CFLAGS ?=
CFLAGS += $(CFLAGS_BASE)
PKGS := libuv libnghttp2 libprotobuf-c sqlite3
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
LDLIBS := $(PKG_LIBS) -lpthread

# --- sources ------------------------------------------------------------------------------
PROTOS := $(wildcard api/corral/v1/*.proto)
PROTO_C := $(patsubst api/%.proto,$(BUILD)/gen/%.pb-c.c,$(PROTOS))
PROTO_H := $(PROTO_C:.c=.h)
UTIL_SRC := $(wildcard sandbox/util/*.c)
INITPROTO_SRC := sandbox/init/initproto.c
INIT_SRC := $(filter-out $(INITPROTO_SRC),$(wildcard sandbox/init/*.c))
RUNTIME_SRC := $(wildcard sandbox/runtime/*.c)
IMAGES_SRC := $(wildcard images/*.c)
DAEMON_SRC := $(filter-out sandbox/daemon/main.c,$(wildcard sandbox/daemon/*.c))
UNIT_SRC := $(wildcard tests/unit/test-*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
LIB_OBJ := $(call obj,$(UTIL_SRC) $(INITPROTO_SRC) $(RUNTIME_SRC) $(IMAGES_SRC) $(DAEMON_SRC)) \
	$(patsubst %.c,$(BUILD)/obj/%.o,$(PROTO_C))
UNIT_BIN := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))

.PHONY: all deps run test unit asan integration node security lint format clean help bench py-stubs
all: $(BUILD)/corrald $(BUILD)/corral-init py-stubs

help:
	@echo "make deps      install Debian and npm packages (idempotent)"
	@echo "make           build build/corrald, build/corral-init, generated stubs"
	@echo "make run       deps + build, then run corrald in the foreground on its defaults"
	@echo "make test      deps + build + every test suite (unit, asan, integration, node, security)"
	@echo "make asan      unit tests under ASan+UBSan"
	@echo "make lint      buf lint + banned-call check"
	@echo "make bench     tests/bench/startup (by hand; not part of make test)"

deps:
	@scripts/deps.sh

# --- generated code -----------------------------------------------------------------------
$(BUILD)/gen/%.pb-c.c $(BUILD)/gen/%.pb-c.h: api/%.proto
	@mkdir -p $(BUILD)/gen
	protoc-c --c_out=$(BUILD)/gen -Iapi $<

PY_STUB_STAMP := $(BUILD)/py/.stamp
py-stubs: $(PY_STUB_STAMP)
$(PY_STUB_STAMP): $(PROTOS)
	@mkdir -p $(BUILD)/py
	protoc -Iapi --python_out=$(BUILD)/py --plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin \
		--grpc_python_out=$(BUILD)/py $(PROTOS)
	@touch $(BUILD)/py/corral/__init__.py $(BUILD)/py/corral/v1/__init__.py $@

# --- objects ------------------------------------------------------------------------------
$(BUILD)/obj/%.o: %.c $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/obj/$(BUILD)/gen/%.pb-c.o: $(BUILD)/gen/%.pb-c.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -Wno-unused-parameter -c $< -o $@

$(BUILD)/libcorral.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/corrald: $(call obj,sandbox/daemon/main.c) $(BUILD)/libcorral.a
	$(CC) $(LDFLAGS_SAN) -o $@ $^ $(LDLIBS)

# corral-init runs as PID 1 inside every sandbox: static, no dependency beyond libc.
INIT_OBJ := $(patsubst %.c,$(BUILD)/obj-init/%.o,$(INIT_SRC) $(INITPROTO_SRC) $(UTIL_SRC))
$(BUILD)/obj-init/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(filter-out -fsanitize%,$(CFLAGS)) -Os -MMD -MP -c $< -o $@
$(BUILD)/corral-init: $(INIT_OBJ)
	$(CC) -static -o $@ $^

# --- tests --------------------------------------------------------------------------------
$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libcorral.a $(BUILD)/corral-init
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) $(LDFLAGS_SAN) -o $@ $< $(BUILD)/libcorral.a $(LDLIBS)

unit: $(UNIT_BIN) $(BUILD)/corral-init
	@tests/unit/run.sh $(BUILD)

asan:
	$(MAKE) BUILD=build/asan SAN=1 unit

integration: all
	@tests/integration/run.sh

node: all
	@tests/node/run.sh

security: all
	@tests/security/run.sh

test: deps
	$(MAKE) all
	$(MAKE) lint
	$(MAKE) unit
	$(MAKE) asan
	$(MAKE) integration
	$(MAKE) node
	$(MAKE) security

lint:
	@scripts/lint.sh

run: deps all
	$(BUILD)/corrald

bench: all
	$(PY) tests/bench/startup

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj $(BUILD)/obj-init -name '*.d' 2>/dev/null)
