# remotemedia: make, make test, make demo, make bench, make clean.
PYTHON      ?= /usr/bin/python3
CC          ?= gcc
BUILD       ?= build
GEN          = $(BUILD)/gen
PYPROTO      = python/remotemedia/_proto

PKGS         = libevent libnghttp2 libprotobuf-c
PY_CFLAGS   := $(shell pkg-config --cflags python3-embed)
PY_LIBS     := $(shell pkg-config --libs python3-embed)
DEP_CFLAGS  := $(shell pkg-config --cflags $(PKGS))
DEP_LIBS    := $(shell pkg-config --libs $(PKGS))

WARN         = -Wall -Wextra -Werror -Wshadow -Wpointer-arith \
               -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter
CFLAGS      ?= -O2 -g
CFLAGS      += -std=gnu11 $(WARN) -D_GNU_SOURCE -Iinclude -Isandbox -I$(GEN) $(DEP_CFLAGS)
LDFLAGS     ?=

PROTO_C      = $(GEN)/remotemedia.pb-c.c $(GEN)/worker.pb-c.c \
               $(GEN)/grpc/health/v1/health.pb-c.c
PROTO_H      = $(PROTO_C:.c=.h)

COMMON_SRC   = src/log.c src/util.c src/frame.c
# Session cgroups: the front creates and destroys them, the worker joins.
CGROUP_SRC   = sandbox/sandbox_cgroup.c
FRONT_SRC    = src/front.c src/front_config.c src/front_h2.c \
               src/front_grpc.c src/front_session.c src/front_worker.c \
               src/front_env.c src/front_trash.c src/front_sandbox.c \
               src/front_auth.c src/front_tls.c \
               src/req.c $(CGROUP_SRC)
# The sandbox: one file per mechanism (architecture section 5).
SANDBOX_SRC  = sandbox/sandbox.c sandbox/sandbox_ns.c sandbox/sandbox_net.c
SANDBOX_SRC += sandbox/sandbox_seccomp.c sandbox/sandbox_landlock.c
SANDBOX_SRC += sandbox/sandbox_rlimit.c
SANDBOX_SRC += sandbox/sandbox_cgroup.c
WORKER_SRC   = src/worker.c src/worker_py.c src/worker_output.c src/worker_venv.c \
               $(SANDBOX_SRC)
RMCTL_SRC    = src/rmctl.c

OBJ          = $(BUILD)/obj
objs         = $(patsubst %.c,$(OBJ)/%.o,$(1))

PROGS        = $(BUILD)/remotemediad $(BUILD)/remotemedia-worker $(BUILD)/rmctl

all: $(PROGS) pyproto

$(GEN)/%.pb-c.c $(GEN)/%.pb-c.h: proto/%.proto
	@mkdir -p $(GEN)
	protoc-c --proto_path=proto --c_out=$(GEN) $<

$(GEN)/worker_runtime.h: python/remotemedia/_worker_runtime.py scripts/embed-source
	@mkdir -p $(GEN)
	$(PYTHON) scripts/embed-source $< worker_runtime_source > $@

$(OBJ)/%.o: %.c $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

PY_VERSION  := $(shell pkg-config --modversion python3-embed)
$(OBJ)/src/front_env.o: CFLAGS += -DRM_PYTHON_VERSION='"$(PY_VERSION)"'
$(OBJ)/src/worker_py.o: CFLAGS += $(PY_CFLAGS)
$(OBJ)/src/worker_py.o: $(GEN)/worker_runtime.h
$(OBJ)/$(GEN)/%.o: CFLAGS += -Wno-missing-prototypes

$(BUILD)/remotemediad: $(call objs,$(FRONT_SRC) $(COMMON_SRC) $(PROTO_C))
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(DEP_LIBS) -levent_openssl -lssl \
		-lcrypto -lbsd

$(BUILD)/remotemedia-worker: $(call objs,$(WORKER_SRC) $(COMMON_SRC) $(PROTO_C))
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(DEP_LIBS) $(PY_LIBS) -lpthread -lseccomp

$(BUILD)/rmctl: $(call objs,$(RMCTL_SRC) $(COMMON_SRC) $(PROTO_C))
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(DEP_LIBS)

pyproto: $(PYPROTO)/__init__.py

$(PYPROTO)/__init__.py: proto/remotemedia.proto
	@mkdir -p $(PYPROTO)
	protoc --proto_path=proto --python_out=$(PYPROTO) proto/remotemedia.proto
	touch $(PYPROTO)/__init__.py

# Unit tests: one cmocka program per module.
UNIT_TESTS   = $(BUILD)/test_frame \
               $(BUILD)/test_session_state $(BUILD)/test_config \
               $(BUILD)/test_req $(BUILD)/test_cgroup \
               $(BUILD)/test_sandbox_policy
CMOCKA_LIBS := $(shell pkg-config --libs cmocka)

$(BUILD)/test_frame: $(call objs,tests/unit/test_frame.c src/frame.c src/log.c src/util.c $(PROTO_C))
	$(CC) $(CFLAGS) -o $@ $^ $(CMOCKA_LIBS) $(DEP_LIBS)
$(BUILD)/test_session_state: $(call objs,tests/unit/test_session_state.c src/front_session.c src/req.c src/frame.c src/log.c src/util.c $(PROTO_C))
	$(CC) $(CFLAGS) -o $@ $^ $(CMOCKA_LIBS) $(DEP_LIBS) -lbsd
$(BUILD)/test_config: $(call objs,tests/unit/test_config.c src/front_config.c src/log.c src/util.c)
	$(CC) $(CFLAGS) -o $@ $^ $(CMOCKA_LIBS) $(DEP_LIBS)
$(BUILD)/test_req: $(call objs,tests/unit/test_req.c src/req.c src/log.c src/util.c)
	$(CC) $(CFLAGS) -o $@ $^ $(CMOCKA_LIBS) $(DEP_LIBS)
$(BUILD)/test_cgroup: $(call objs,tests/unit/test_cgroup.c $(CGROUP_SRC) src/log.c src/util.c)
	$(CC) $(CFLAGS) -o $@ $^ $(CMOCKA_LIBS)
$(BUILD)/test_sandbox_policy: $(call objs,tests/unit/test_sandbox_policy.c sandbox/sandbox_seccomp.c sandbox/sandbox_landlock.c sandbox/sandbox_rlimit.c src/log.c)
	$(CC) $(CFLAGS) -o $@ $^ $(CMOCKA_LIBS) -lseccomp -lpthread

unit: $(UNIT_TESTS)
	@set -e; for t in $(UNIT_TESTS); do echo "== $$t"; $$t; done

integration: all
	PYTHONPATH=python $(PYTHON) -m pytest -q tests/integration

test: all unit integration

demo:
	scripts/install-deps
	$(MAKE) all
	scripts/demo

bench: all
	PYTHONPATH=python $(PYTHON) bench/bench.py

clean:
	rm -rf $(BUILD) $(PYPROTO)

.PHONY: all pyproto unit integration test demo bench clean
.SECONDARY:
-include $(shell find $(OBJ) -name '*.d' 2>/dev/null)

PREFIX      ?= /usr/local
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)/etc/systemd/system
	install -m 0755 $(BUILD)/remotemediad $(BUILD)/remotemedia-worker \
		$(BUILD)/rmctl $(DESTDIR)$(PREFIX)/bin/
	install -m 0644 systemd/remotemediad.service $(DESTDIR)/etc/systemd/system/
.PHONY: install
