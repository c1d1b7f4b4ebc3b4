# remotemedia: make, make test, make demo, make bench, make clean.
PYTHON      ?= /usr/bin/python3
CC          ?= gcc
BUILD       ?= build
GEN          = $(BUILD)/gen
PYPROTO      = python/remotemedia/_proto

PKGS         = libevent libnghttp2 libprotobuf-c
# Quiet: before `make demo` has installed the dependencies, pkg-config (or
# a package) is missing, and the goals that build say so below.
pkgconf      = $(shell pkg-config $(1) 2>/dev/null)
PY_CFLAGS   := $(call pkgconf,--cflags python3-embed)
PY_LIBS     := $(call pkgconf,--libs python3-embed)
DEP_CFLAGS  := $(call pkgconf,--cflags $(PKGS))
DEP_LIBS    := $(call pkgconf,--libs $(PKGS))

WARN         = -Wall -Wextra -Werror -Wshadow -Wpointer-arith \
               -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter
CFLAGS      ?= -O2 -g
CFLAGS      += -std=gnu11 $(WARN) -D_GNU_SOURCE -Iinclude -Isandbox -I$(GEN) $(DEP_CFLAGS)
LDFLAGS     ?=

PROTO_C      = $(GEN)/remotemedia.pb-c.c $(GEN)/worker.pb-c.c \
               $(GEN)/grpc/health/v1/health.pb-c.c
PROTO_H      = $(PROTO_C:.c=.h)

COMMON_SRC   = src/log.c src/util.c src/frame.c
# Session cgroups: the front creates, checks and destroys them (v1 and v2
# apart); the worker only joins (sandbox_cgroup.c, which the front uses too).
CGROUP_JOIN_SRC = sandbox/sandbox_cgroup.c
CGROUP_SRC   = src/front_cgroup.c src/front_cgroup_v1.c src/front_cgroup_v2.c \
               $(CGROUP_JOIN_SRC)
FRONT_SRC    = src/front.c src/front_config.c src/front_h2.c \
               src/front_grpc.c src/front_session.c src/front_call.c \
               src/front_worker.c src/front_output.c src/front_exec.c \
               src/front_env.c src/front_trash.c src/front_sandbox.c \
               src/front_auth.c src/front_tls.c src/front_pool.c \
               src/front_systemd.c \
               src/front_metrics.c src/front_admin.c src/envelope.c \
               src/req.c $(CGROUP_SRC)
# The sandbox: one file per mechanism (architecture section 5).
SANDBOX_SRC  = sandbox/sandbox.c sandbox/sandbox_ns.c sandbox/sandbox_net.c
SANDBOX_SRC += sandbox/sandbox_seccomp.c sandbox/sandbox_landlock.c
SANDBOX_SRC += sandbox/sandbox_rlimit.c
SANDBOX_SRC += $(CGROUP_JOIN_SRC) sandbox/sandbox_egress.c sandbox/sandbox_forward.c
WORKER_SRC   = src/worker.c src/worker_py.c src/worker_output.c src/worker_venv.c \
               src/envelope.c \
               $(SANDBOX_SRC)
RMCTL_SRC    = src/rmctl.c src/rmctl_grpc.c src/rmctl_bench.c src/rmctl_admin.c src/envelope.c

OBJ          = $(BUILD)/obj
objs         = $(patsubst %.c,$(OBJ)/%.o,$(1))

PROGS        = $(BUILD)/remotemediad $(BUILD)/remotemedia-worker $(BUILD)/rmctl

# A recipe that fails leaves no half-written target behind (a header of
# embed-source cut short by a syntax error, say) for the next make to trust.
.DELETE_ON_ERROR:

all: $(PROGS) pyproto

$(GEN)/%.pb-c.c $(GEN)/%.pb-c.h: proto/%.proto
	@mkdir -p $(GEN)
	protoc-c --proto_path=proto --c_out=$(GEN) $<

$(GEN)/worker_runtime.h: python/remotemedia/_worker_runtime.py scripts/embed-source
	@mkdir -p $(GEN)
	$(PYTHON) scripts/embed-source $< worker_runtime_source \
	    '<remotemedia/_worker_runtime.py>' > $@

$(GEN)/worker_oob.h: python/remotemedia/_oob.py scripts/embed-source
	@mkdir -p $(GEN)
	$(PYTHON) scripts/embed-source $< worker_oob_source \
	    '<remotemedia/_oob.py>' > $@

$(OBJ)/%.o: %.c $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

PY_VERSION  := $(call pkgconf,--modversion python3-embed)
# Goals that need no build dependencies: demo installs them first.
NODEP_GOALS  = demo clean
ifeq ($(PY_VERSION),)
ifneq ($(filter-out $(NODEP_GOALS),$(or $(MAKECMDGOALS),all)),)
$(error pkg-config finds no python3-embed: run scripts/install-deps first)
endif
endif
$(OBJ)/src/front_env.o: CFLAGS += -DRM_PYTHON_VERSION='"$(PY_VERSION)"'
# What sessions may read of the Python installation (sandbox_landlock.c):
# its standard library and site directories, and the shared libraries'
# directories (Python's LIBDIR and the system's multiarch ones).
PY_READ_PATHS := $(shell $(PYTHON) -c 'import site, sysconfig as s; \
	print(":".join(dict.fromkeys([s.get_path("stdlib"), \
	s.get_path("platstdlib")] + site.getsitepackages())))' 2>/dev/null)
PY_LIB_PATHS := $(shell $(PYTHON) -c 'import sysconfig as s; \
	m = s.get_config_var("MULTIARCH"); \
	print(":".join(dict.fromkeys([s.get_config_var("LIBDIR")] + \
	(["/usr/lib/" + m, "/lib/" + m] if m else []))))' 2>/dev/null)
ifneq ($(filter-out $(NODEP_GOALS),$(or $(MAKECMDGOALS),all)),)
ifeq ($(PY_READ_PATHS),)
$(error $(PYTHON) does not say where its library is)
endif
endif
$(OBJ)/sandbox/sandbox_landlock.o: CFLAGS += \
	-DRM_PY_READ_PATHS='"$(PY_READ_PATHS)"' -DRM_LIB_PATHS='"$(PY_LIB_PATHS)"'
$(OBJ)/src/worker_py.o: CFLAGS += $(PY_CFLAGS)
$(OBJ)/src/worker_py.o: $(GEN)/worker_runtime.h $(GEN)/worker_oob.h
$(OBJ)/$(GEN)/%.o: CFLAGS += -Wno-missing-prototypes

$(BUILD)/remotemediad: $(call objs,$(FRONT_SRC) $(COMMON_SRC) $(PROTO_C))
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(DEP_LIBS) -levent_openssl -lssl \
		-lcrypto -lbsd

$(BUILD)/remotemedia-worker: $(call objs,$(WORKER_SRC) $(COMMON_SRC) $(PROTO_C))
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(DEP_LIBS) $(PY_LIBS) -lpthread -lseccomp \
		-lnftables

$(BUILD)/rmctl: $(call objs,$(RMCTL_SRC) $(COMMON_SRC) $(PROTO_C))
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(DEP_LIBS) -lssl -lcrypto

pyproto: $(PYPROTO)/__init__.py

$(PYPROTO)/__init__.py: proto/remotemedia.proto
	@mkdir -p $(PYPROTO)
	protoc --proto_path=proto --python_out=$(PYPROTO) proto/remotemedia.proto
	touch $(PYPROTO)/__init__.py

# Unit tests: one cmocka program per module.
UNIT_TESTS   = $(BUILD)/test_frame \
               $(BUILD)/test_session_state $(BUILD)/test_config \
               $(BUILD)/test_req $(BUILD)/test_cgroup \
               $(BUILD)/test_sandbox_policy $(BUILD)/test_envelope \
               $(BUILD)/test_front_env $(BUILD)/test_mem
CMOCKA_LIBS := $(call pkgconf,--libs cmocka)

# The fake front (tests/fake/fake.h) for the unit tests and fuzz targets
# that link a part of the front alone: a program links the fake's files
# for the modules it does not link, front_session.c's or front_env.c's
# (front_session.c's also link the real front_output.c, whose pipes a
# fake worker never has).
FAKE_FOR_SESSION = tests/fake/fake_front.c tests/fake/fake_worker.c \
                   tests/fake/fake_env.c src/front_output.c
FAKE_FOR_ENV     = tests/fake/fake_front.c tests/fake/fake_session.c
$(OBJ)/tests/%.o: CFLAGS += -Itests/fake

$(BUILD)/test_frame: $(call objs,tests/unit/test_frame.c src/frame.c src/log.c src/util.c $(PROTO_C))
	$(CC) $(CFLAGS) -o $@ $^ $(CMOCKA_LIBS) $(DEP_LIBS)
$(BUILD)/test_session_state: $(call objs,tests/unit/test_session_state.c src/front_session.c src/front_call.c src/front_metrics.c src/envelope.c src/req.c src/frame.c src/log.c src/util.c $(FAKE_FOR_SESSION) tests/fake/fake_grpc.c tests/fake/fake_h2.c $(PROTO_C))
	$(CC) $(CFLAGS) -o $@ $^ $(CMOCKA_LIBS) $(DEP_LIBS) -lbsd
$(BUILD)/test_front_env: $(call objs,tests/unit/test_front_env.c src/front_env.c src/front_exec.c src/front_metrics.c src/req.c src/log.c src/util.c $(FAKE_FOR_ENV) tests/fake/fake_h2.c $(PROTO_C))
	$(CC) $(CFLAGS) -o $@ $^ $(CMOCKA_LIBS) $(DEP_LIBS) -lcrypto -lbsd
$(BUILD)/test_envelope: $(call objs,tests/unit/test_envelope.c src/envelope.c $(PROTO_C))
	$(CC) $(CFLAGS) -o $@ $^ $(CMOCKA_LIBS) $(DEP_LIBS)
$(BUILD)/test_config: $(call objs,tests/unit/test_config.c src/front_config.c src/log.c src/util.c)
	$(CC) $(CFLAGS) -o $@ $^ $(CMOCKA_LIBS) $(DEP_LIBS)
$(BUILD)/test_req: $(call objs,tests/unit/test_req.c src/req.c src/log.c src/util.c)
	$(CC) $(CFLAGS) -o $@ $^ $(CMOCKA_LIBS) $(DEP_LIBS)
$(BUILD)/test_mem: $(call objs,tests/unit/test_mem.c src/log.c src/util.c)
	$(CC) $(CFLAGS) -o $@ $^ $(CMOCKA_LIBS)
$(BUILD)/test_cgroup: $(call objs,tests/unit/test_cgroup.c $(CGROUP_SRC) src/log.c src/util.c)
	$(CC) $(CFLAGS) -o $@ $^ $(CMOCKA_LIBS)
$(BUILD)/test_sandbox_policy: $(call objs,tests/unit/test_sandbox_policy.c sandbox/sandbox_seccomp.c sandbox/sandbox_landlock.c sandbox/sandbox_rlimit.c sandbox/sandbox_egress.c src/log.c src/util.c)
	$(CC) $(CFLAGS) -o $@ $^ $(CMOCKA_LIBS) -lseccomp -lpthread -lnftables

unit: $(UNIT_TESTS)
	@set -e; for t in $(UNIT_TESTS); do echo "== $$t"; $$t; done

# The Python client's own tests (tests/client): no server, no worker.
client: pyproto
	PYTHONPATH=python $(PYTHON) -m pytest -q tests/client

integration: all
	PYTHONPATH=python $(PYTHON) -m pytest -q tests/integration

# Escape attempts from inside sessions, and legitimate work in the sandbox
# (tests/escape; needs root).
escape: all
	PYTHONPATH=python $(PYTHON) -m pytest -q tests/escape

test: all unit client integration escape sanitize-test fuzz-smoke

demo:
	scripts/install-deps
	$(MAKE) all
	scripts/demo

bench: all
	PYTHONPATH=python $(PYTHON) bench/bench.py

clean:
	rm -rf $(BUILD) $(PYPROTO)

# Sanitizers (ASan + UBSan + LSan): make asan builds $(ASAN_BUILD)/ with
# SANITIZE's flags appended to CFLAGS (a CFLAGS on the command line would
# replace all of the Makefile's); make sanitize-test runs the integration
# suite against it, the workers with the sandbox off (LeakSanitizer needs
# ptrace, which the sandbox's seccomp filter refuses), and fails on any
# report file (tests/sanitize/run).
ASAN_BUILD  ?= build-asan
ASAN_CC     ?= clang
ASAN_FLAGS   = -fsanitize=address,undefined -fno-omit-frame-pointer \
               -fno-sanitize-recover=undefined -O1 -g
SANITIZE    ?=
SANITIZE_LOG_DIR ?= $(abspath $(BUILD))/sanitize-logs
ASAN_LOG_DIR = $(abspath $(ASAN_BUILD))/sanitize-logs
ifneq ($(strip $(SANITIZE)),)
CFLAGS      += $(SANITIZE)
# The worker's worker_exit() calls _exit: check for leaks first.
LDFLAGS     += -Wl,--wrap=_exit
SANITIZE_OBJ = $(OBJ)/tests/sanitize/asan_defaults.o
$(PROGS): $(SANITIZE_OBJ)
$(SANITIZE_OBJ): CFLAGS += -DRM_SANITIZE_LOG_DIR='"$(SANITIZE_LOG_DIR)"' \
               -DRM_LSAN_SUPP='"$(abspath tests/sanitize/lsan.supp)"'
$(SANITIZE_OBJ): Makefile tests/sanitize/lsan.supp
endif

asan: pyproto
	$(MAKE) BUILD=$(ASAN_BUILD) CC=$(ASAN_CC) SANITIZE="$(ASAN_FLAGS)" \
		SANITIZE_LOG_DIR=$(ASAN_LOG_DIR) $(ASAN_BUILD)/remotemediad \
		$(ASAN_BUILD)/remotemedia-worker $(ASAN_BUILD)/rmctl

sanitize-test: asan
	PYTHON=$(PYTHON) RM_SANITIZE_LOG_DIR=$(ASAN_LOG_DIR) \
		tests/sanitize/run $(ASAN_BUILD)
# make -j test: not two suites at once, timing-sensitive tests would suffer.
ifneq ($(filter test,$(MAKECMDGOALS)),)
sanitize-test: unit integration
integration: client
endif

clean-asan:
	rm -rf $(ASAN_BUILD)
clean: clean-asan
.PHONY: asan sanitize-test clean-asan

.PHONY: all pyproto unit client integration escape test demo bench clean
.SECONDARY:
-include $(shell find $(OBJ) -name '*.d' 2>/dev/null)

# make install [DESTDIR=...] [PREFIX=...]: the programs, the man page, the
# systemd units (their paths follow PREFIX) and, unless one is there, the
# example config as /etc/remotemedia/remotemediad.conf.
PREFIX      ?= /usr/local
UNITDIR     ?= /etc/systemd/system
MAN8        = $(BUILD)/remotemediad.8
$(MAN8): $(BUILD)/remotemediad
	$(BUILD)/remotemediad --man > $@.tmp && mv $@.tmp $@
install: all $(MAN8)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(UNITDIR) \
		$(DESTDIR)$(PREFIX)/share/man/man8 \
		$(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)/etc/remotemedia
	install -m 0755 $(BUILD)/remotemediad $(BUILD)/remotemedia-worker \
		$(BUILD)/rmctl $(DESTDIR)$(PREFIX)/bin/
	install -m 0644 $(MAN8) $(DESTDIR)$(PREFIX)/share/man/man8/
	install -m 0644 docs/rmctl.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	for u in remotemediad.service remotemediad.socket; do \
		sed 's|/usr/local/bin/|$(PREFIX)/bin/|g' systemd/$$u > $(DESTDIR)$(UNITDIR)/$$u.tmp && \
		chmod 0644 $(DESTDIR)$(UNITDIR)/$$u.tmp && \
		mv $(DESTDIR)$(UNITDIR)/$$u.tmp $(DESTDIR)$(UNITDIR)/$$u || exit 1; \
	done
	test -e $(DESTDIR)/etc/remotemedia/remotemediad.conf || \
		install -m 0644 systemd/remotemediad.conf $(DESTDIR)/etc/remotemedia/
.PHONY: install

# Fuzzing (libFuzzer, clang): one target per input path; see tests/fuzz/.
# Built with their own flags into $(FUZZ_OUT), never mixed with the gcc
# objects. make fuzz runs each target for FUZZ_SECONDS on a working copy of
# its committed seed corpus (build/fuzz/corpus/, kept between runs); make
# fuzz-smoke runs each for FUZZ_SMOKE_SECONDS from the seeds alone, for make
# test. Crashes land in build/fuzz/artifacts/.
FUZZ_CC      ?= clang
FUZZ_OUT     = $(BUILD)/fuzz
FUZZ_OBJ     = $(FUZZ_OUT)/obj
FUZZ_SAN     = -fsanitize=fuzzer,address,undefined \
               -fno-sanitize-recover=undefined
FUZZ_CFLAGS  = -g -O1 $(FUZZ_SAN) -std=gnu11 $(WARN) -D_GNU_SOURCE \
               -Iinclude -Isandbox -I$(GEN) -Itests/fuzz -Itests/fake \
               $(DEP_CFLAGS)
FUZZ_SECONDS       ?= 60
FUZZ_SMOKE_SECONDS ?= 10
FUZZ_TIMEOUT       ?= 10
FUZZ_RUN_FLAGS     ?= -rss_limit_mb=2048 -print_final_stats=1
FUZZ_TARGETS = fuzz_deframe fuzz_req fuzz_worker_frames fuzz_front_h2 \
               fuzz_envelope
FUZZ_BINS    = $(addprefix $(FUZZ_OUT)/,$(FUZZ_TARGETS))
fuzzobjs     = $(patsubst %.c,$(FUZZ_OBJ)/%.o,$(1))

FUZZ_DEFRAME_SRC = tests/fuzz/fuzz_deframe.c src/frame.c src/log.c src/util.c
FUZZ_REQ_SRC     = tests/fuzz/fuzz_req.c src/req.c src/log.c src/util.c
FUZZ_ENV_SRC     = tests/fuzz/fuzz_envelope.c src/envelope.c $(PROTO_C)
FUZZ_WORKER_SRC  = tests/fuzz/fuzz_worker_frames.c $(FAKE_FOR_SESSION) \
                   tests/fake/fake_grpc.c tests/fake/fake_h2.c \
                   src/front_session.c src/front_call.c \
                   src/front_metrics.c src/envelope.c src/front_config.c \
                   src/req.c src/frame.c src/log.c src/util.c $(PROTO_C)
FUZZ_H2_SRC      = tests/fuzz/fuzz_front_h2.c $(FAKE_FOR_SESSION) \
                   src/front_h2.c src/front_grpc.c src/front_session.c src/front_call.c \
                   src/front_metrics.c src/front_admin.c src/envelope.c \
                   src/front_auth.c src/front_tls.c src/front_config.c \
                   src/req.c src/frame.c src/log.c src/util.c $(PROTO_C)

$(FUZZ_OBJ)/%.o: %.c $(PROTO_H)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -MMD -MP -c -o $@ $<
$(FUZZ_OBJ)/$(GEN)/%.o: FUZZ_CFLAGS += -Wno-missing-prototypes

$(FUZZ_OUT)/fuzz_deframe: $(call fuzzobjs,$(FUZZ_DEFRAME_SRC))
	$(FUZZ_CC) $(FUZZ_SAN) -o $@ $^
$(FUZZ_OUT)/fuzz_req: $(call fuzzobjs,$(FUZZ_REQ_SRC))
	$(FUZZ_CC) $(FUZZ_SAN) -o $@ $^
$(FUZZ_OUT)/fuzz_envelope: $(call fuzzobjs,$(FUZZ_ENV_SRC))
	$(FUZZ_CC) $(FUZZ_SAN) -o $@ $^ $(DEP_LIBS)
$(FUZZ_OUT)/fuzz_worker_frames: $(call fuzzobjs,$(FUZZ_WORKER_SRC))
	$(FUZZ_CC) $(FUZZ_SAN) -o $@ $^ $(DEP_LIBS) -lbsd
$(FUZZ_OUT)/fuzz_front_h2: $(call fuzzobjs,$(FUZZ_H2_SRC))
	$(FUZZ_CC) $(FUZZ_SAN) -o $@ $^ $(DEP_LIBS) -levent_openssl -lssl \
		-lcrypto -lbsd

fuzz-build: $(FUZZ_BINS)

# $(call fuzz_run,target,seconds,corpus dir): run one target on a corpus.
fuzz_run = $(FUZZ_OUT)/$(1) -max_total_time=$(2) -timeout=$(FUZZ_TIMEOUT) \
	$(FUZZ_RUN_FLAGS) -artifact_prefix=$(FUZZ_OUT)/artifacts/$(1)- \
	$(if $(wildcard tests/fuzz/$(1).dict),-dict=tests/fuzz/$(1).dict) $(3)

fuzz: $(FUZZ_BINS)
	@set -e; mkdir -p $(FUZZ_OUT)/artifacts; for t in $(FUZZ_TARGETS); do \
		echo "== $$t ($(FUZZ_SECONDS) s)"; \
		mkdir -p $(FUZZ_OUT)/corpus/$$t; \
		cp tests/fuzz/corpus/$$t/* $(FUZZ_OUT)/corpus/$$t/; \
		$(call fuzz_run,$$t,$(FUZZ_SECONDS),$(FUZZ_OUT)/corpus/$$t); \
	done

fuzz-smoke: $(FUZZ_BINS)
	@set -e; mkdir -p $(FUZZ_OUT)/artifacts; for t in $(FUZZ_TARGETS); do \
		echo "== $$t ($(FUZZ_SMOKE_SECONDS) s)"; \
		rm -rf $(FUZZ_OUT)/smoke/$$t; mkdir -p $(FUZZ_OUT)/smoke/$$t; \
		cp tests/fuzz/corpus/$$t/* $(FUZZ_OUT)/smoke/$$t/; \
		$(call fuzz_run,$$t,$(FUZZ_SMOKE_SECONDS),$(FUZZ_OUT)/smoke/$$t) \
			2>$(FUZZ_OUT)/smoke/$$t.log || \
			{ tail -n 60 $(FUZZ_OUT)/smoke/$$t.log; exit 1; }; \
		grep -E 'DONE|^stat::(number_of_executed_units|average_exec)' \
			$(FUZZ_OUT)/smoke/$$t.log; \
	done

.PHONY: fuzz fuzz-smoke fuzz-build
-include $(shell find $(FUZZ_OBJ) -name '*.d' 2>/dev/null)
