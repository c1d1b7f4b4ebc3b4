/*
 * Linked into the sanitized binaries only (make asan): the options of
 * AddressSanitizer, UndefinedBehaviorSanitizer and LeakSanitizer, compiled
 * in. The front starts workers and environment builders with a scrubbed
 * environment, so ASAN_OPTIONS and friends never reach them; these weak
 * hooks work whatever the environment holds. Options given in the
 * environment are still parsed after these, and win.
 *
 * Every report goes to a file RM_SANITIZE_LOG_DIR/report.<exe>.<pid>, never
 * to stderr (a worker's stderr is the session's output, relayed to the
 * client). A file is created only when there is something to say, so an
 * empty directory after a run means no report. make sanitize-test checks
 * that.
 *
 * The worker leaves through _exit(2) (worker_exit: Python's finalization
 * could wait forever on user threads), so LeakSanitizer's atexit check
 * never runs there. The sanitized build links with -Wl,--wrap=_exit: our
 * own calls to _exit come here and run the leak check first, in the
 * process that was exec'd only (not in a child forked from it).
 *
 * CPython keeps its small objects in arenas it maps itself (obmalloc),
 * which LeakSanitizer does not scan: a block malloc'd by CPython and pointed
 * to only from such an object would look leaked, and ASan would not see an
 * overflow of a Python object. In the worker (the one binary that links
 * CPython) a constructor makes every CPython allocator domain plain malloc,
 * as PYTHONMALLOC=malloc would, but without an environment variable that
 * user code could see, and CPython's arena allocator too: it also holds the
 * interpreter's frame stacks, and a worker that exits from inside Python
 * (worker_py_failed) would otherwise report every object that only a live
 * frame refers to. PyMem_SetAllocator and PyObject_SetArenaAllocator are
 * weak references: NULL in the front and rmctl.
 */
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>

#include <stdlib.h>
#include <unistd.h>

#ifndef RM_SANITIZE_LOG_DIR
#error "RM_SANITIZE_LOG_DIR must name the report directory"
#endif
#ifndef RM_LSAN_SUPP
#error "RM_LSAN_SUPP must name the LeakSanitizer suppressions file"
#endif

/* Shared by the three runtimes (log_path is a common flag). */
#define RM_COMMON_OPTIONS \
	"log_path=" RM_SANITIZE_LOG_DIR "/report:log_exe_name=1:" \
	"abort_on_error=1:halt_on_error=1:print_summary=1:" \
	"allocator_may_return_null=1"

const char *__asan_default_options(void);
const char *__ubsan_default_options(void);
const char *__lsan_default_options(void);
int __lsan_do_recoverable_leak_check(void);
void __real__exit(int) __attribute__((noreturn));
void __wrap__exit(int) __attribute__((noreturn));

static pid_t rm_sanitize_pid;

/* CPython's PyMemAllocatorEx and PyMem_SetAllocator, without Python.h. */
struct rm_pymem_allocator {
	void *ctx;
	void *(*malloc)(void *, size_t);
	void *(*calloc)(void *, size_t, size_t);
	void *(*realloc)(void *, void *, size_t);
	void (*free)(void *, void *);
};
void PyMem_SetAllocator(int, struct rm_pymem_allocator *) __attribute__((weak));

/* PyObjectArenaAllocator and PyObject_SetArenaAllocator. */
struct rm_pyarena_allocator {
	void *ctx;
	void *(*alloc)(void *, size_t);
	void (*free)(void *, void *, size_t);
};
void
PyObject_SetArenaAllocator(struct rm_pyarena_allocator *) __attribute__((weak));

/*
 * The hooks stay in every allocation stack (tests/sanitize/lsan.supp names
 * them): the empty asm after the call keeps the compiler from turning it
 * into a tail call, which would take the hook's frame out of the stack.
 */
#define RM_NO_TAIL_CALL(p) __asm__ volatile("" : : "r"(p) : "memory")

/* As CPython's raw allocator: a request for 0 bytes gets 1. */
static void *
rm_py_malloc(void *ctx, size_t n)
{
	void *p = malloc(n ? n : 1);

	RM_NO_TAIL_CALL(p);
	return p;
}

static void *
rm_py_calloc(void *ctx, size_t nelem, size_t elsize)
{
	void *p = nelem == 0 || elsize == 0 ? calloc(1, 1)
	                                    : calloc(nelem, elsize);

	RM_NO_TAIL_CALL(p);
	return p;
}

static void *
rm_py_realloc(void *ctx, void *old, size_t n)
{
	void *p = realloc(old, n ? n : 1);

	RM_NO_TAIL_CALL(p);
	return p;
}

static void
rm_py_free(void *ctx, void *p)
{
	free(p);
}

static void *
rm_py_arena_alloc(void *ctx, size_t n)
{
	void *p = malloc(n);

	RM_NO_TAIL_CALL(p);
	return p;
}

static void
rm_py_arena_free(void *ctx, void *p, size_t n)
{
	free(p);
}

/* Called by the ASan runtime at start, before main and before any report. */
__attribute__((used)) const char *
__asan_default_options(void)
{
	/* The directory may not exist yet; any uid may write reports. */
	if (mkdir(RM_SANITIZE_LOG_DIR, 01777) == 0)
		chmod(RM_SANITIZE_LOG_DIR, 01777);
	return RM_COMMON_OPTIONS ":detect_leaks=1:"
	                         "detect_stack_use_after_return=1";
}

__attribute__((used)) const char *
__ubsan_default_options(void)
{
	return RM_COMMON_OPTIONS ":print_stacktrace=1";
}

__attribute__((used)) const char *
__lsan_default_options(void)
{
	return "suppressions=" RM_LSAN_SUPP ":print_suppressions=0";
}

__attribute__((constructor)) static void
rm_sanitize_init(void)
{
	static struct rm_pymem_allocator a = {
	    NULL, rm_py_malloc, rm_py_calloc, rm_py_realloc, rm_py_free};
	static struct rm_pyarena_allocator arena = {
	    NULL, rm_py_arena_alloc, rm_py_arena_free};
	int domain;

	rm_sanitize_pid = (pid_t)syscall(SYS_getpid);
	/* PYMEM_DOMAIN_RAW, _MEM and _OBJ: before Py_InitializeFromConfig. */
	if (PyMem_SetAllocator != NULL)
		for (domain = 0; domain <= 2; domain++)
			PyMem_SetAllocator(domain, &a);
	if (PyObject_SetArenaAllocator != NULL)
		PyObject_SetArenaAllocator(&arena);
}

/* -Wl,--wrap=_exit: a leak check before the worker's quick exit. */
__attribute__((used)) void
__wrap__exit(int code)
{
	if ((pid_t)syscall(SYS_getpid) == rm_sanitize_pid)
		(void)__lsan_do_recoverable_leak_check();
	__real__exit(code);
}
