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
	-I. -Isandbox -I$(BUILD)/gen -I$(BUILD)/ebpf
ifeq ($(SAN),1)
CFLAGS_BASE += -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
LDFLAGS_SAN := -fsanitize=address,undefined
endif
CFLAGS ?=
CFLAGS += $(CFLAGS_BASE)
PKGS := libuv libnghttp2 libprotobuf-c sqlite3 libbpf libnl-3.0 libnl-route-3.0 libnftables libseccomp libcap libarchive
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
NETPOLICY_SRC := $(wildcard netpolicy/*.c)
UNIT_SRC := $(wildcard tests/unit/test-*.c)
# BPF programs: ebpf/NAME.bpf.c -> $(BUILD)/ebpf/NAME.bpf.o -> $(BUILD)/ebpf/NAME.skel.h
# (struct NAME_bpf, NAME_bpf__open() ...), included by the user-space loader as "NAME.skel.h".
BPF_SRC := $(wildcard ebpf/*.bpf.c)
BPF_SKEL := $(patsubst ebpf/%.bpf.c,$(BUILD)/ebpf/%.skel.h,$(BPF_SRC))
BPF_CLANG := clang
BPF_ARCH := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')
BPF_CFLAGS := -g -O2 -target bpf -D__TARGET_ARCH_$(BPF_ARCH) -Wall -Werror -I$(BUILD)/ebpf -Iebpf
BTF_VMLINUX ?= /sys/kernel/btf/vmlinux

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
LIB_OBJ := $(call obj,$(UTIL_SRC) $(INITPROTO_SRC) $(RUNTIME_SRC) $(IMAGES_SRC) $(DAEMON_SRC) $(NETPOLICY_SRC)) \
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
	@echo "make sdk       Python SDK + CLI tests against a real corrald, and mypy"

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

# The Python SDK's stubs live inside its package (sdk/python/corral/v1, git-ignored), so the
# generated `from corral.v1 import ...` lines resolve to the SDK itself; --pyi_out types them.
SDK_STUB_STAMP := sdk/python/corral/v1/.stamp
.PHONY: sdk-stubs sdk
all: sdk-stubs
sdk-stubs: $(SDK_STUB_STAMP)
$(SDK_STUB_STAMP): $(PROTOS)
	@mkdir -p sdk/python/corral/v1
	protoc -Iapi --python_out=sdk/python --pyi_out=sdk/python \
		--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin --grpc_python_out=sdk/python $(PROTOS)
	@echo '# Generated from api/corral/v1 at build time (make sdk-stubs); not committed.' \
		> sdk/python/corral/v1/__init__.py
	@touch $@

# --- BPF ----------------------------------------------------------------------------------
# vmlinux.h from the running kernel's BTF (CO-RE), generated once per build dir.
$(BUILD)/ebpf/vmlinux.h:
	@mkdir -p $(dir $@)
	bpftool btf dump file $(BTF_VMLINUX) format c > $@.tmp && mv $@.tmp $@

$(BUILD)/ebpf/%.bpf.o: ebpf/%.bpf.c $(BUILD)/ebpf/vmlinux.h $(wildcard ebpf/*.h)
	@mkdir -p $(dir $@)
	$(BPF_CLANG) $(BPF_CFLAGS) -c $< -o $@

$(BUILD)/ebpf/%.skel.h: $(BUILD)/ebpf/%.bpf.o
	bpftool gen skeleton $< name $*_bpf > $@.tmp && mv $@.tmp $@

.SECONDARY: $(patsubst ebpf/%.bpf.c,$(BUILD)/ebpf/%.bpf.o,$(BPF_SRC))

# --- objects ------------------------------------------------------------------------------
# Every object waits for the skeletons (order-only); -MMD then records who includes which.
$(BUILD)/obj/%.o: %.c $(PROTO_H) | $(BPF_SKEL)
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
$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libcorral.a $(BUILD)/corral-init | $(BPF_SKEL)
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
	$(MAKE) sdk

lint:
	@scripts/lint.sh

run: deps all
	$(BUILD)/corrald

bench: all
	$(PY) tests/bench/startup

sdk: all
	@tests/sdk/run.sh

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj $(BUILD)/obj-init -name '*.d' 2>/dev/null)
