/*
 * The capture of what the session writes to fds 1 and 2.
 *
 * Before Python starts, fds 1 and 2 become the write ends of two pipes, so
 * that print, logging, C extensions and subprocesses are all captured and
 * their stream is known. A thread reads the pipes and sends Output frames
 * under a token-bucket rate cap: what is over the cap is dropped, never
 * waited for, and counted in the next Output's dropped_bytes.
 *
 * The main thread drains the pipes too, before each answer it sends, so
 * that what a call printed reaches the client before the call's result.
 * Both readers hold wo_lock, which keeps the bytes in order.
 *
 * The worker's own log keeps going to the front's stderr, on a copy of the
 * original fd 2; the C stderr is fd 2, the capture.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "frame.h"
#include "log.h"
#include "remotemedia.pb-c.h"
#include "worker.h"

#define WORKER_OUTPUT_READ (64 * 1024)
/* Reads per stream in one drain, so that a flood cannot hold the lock. */
#define WORKER_OUTPUT_ROUNDS 4
/* The smallest part of a write that the cap cuts. */
#define WORKER_OUTPUT_PART 4096
/* How often the thread reports drops when nothing else is written. */
#define WORKER_OUTPUT_REPORT_MS 1000

static struct {
	int wo_fd[2]; /* read ends: stdout, stderr; -1 at EOF */
	int wo_wake[2]; /* a byte here asks the thread to stop */
	pthread_t wo_thread;
	int wo_running;
	pthread_mutex_t wo_lock; /* the read ends and the bucket */
	double wo_rate; /* bytes per second */
	double wo_burst;
	double wo_tokens;
	struct timespec wo_last; /* last refill */
	uint64_t wo_dropped; /* not yet reported */
	int wo_dropped_stream;
	atomic_int wo_stop;
} wo = {
    .wo_fd = {-1, -1},
    .wo_wake = {-1, -1},
    .wo_lock = PTHREAD_MUTEX_INITIALIZER,
};

static const int worker_output_streams[2] = {
    REMOTEMEDIA__V1__OUTPUT__STREAM__STDOUT,
    REMOTEMEDIA__V1__OUTPUT__STREAM__STDERR,
};

/*
 * Keep the worker's log on the front's stderr, as fd 2 is about to become
 * the capture pipe; the C stderr stays on fd 2, so that what extensions
 * write there (fprintf(stderr), assert, Py_FatalError) is the session's
 * output, rate-capped like the rest.
 */
static void
worker_output_keep_log(void)
{
	FILE *f;
	int fd;

	if ((fd = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 10)) == -1)
		fatal("dup stderr");
	if ((f = fdopen(fd, "w")) == NULL)
		fatal("fdopen");
	setvbuf(f, NULL, _IOLBF, 0);
	log_set_file(f);
}

/*
 * Make target the write end of a pipe; returns the read end. The pipe is
 * the front's, on fds `from` (write end) and from + 1 (read end), as
 * frame.h says: the front reads what is left in it once the worker is
 * dead. Run by hand, without them, the worker makes its own.
 */
static int
worker_output_pipe(int target, int from)
{
	int p[2];

	if (fcntl(from, F_GETFD) != -1 && fcntl(from + 1, F_GETFD) != -1) {
		p[1] = from;
		if ((p[0] = fcntl(from + 1, F_DUPFD_CLOEXEC, 10)) == -1)
			fatal("fcntl");
		close(from + 1);
		if (fcntl(p[0], F_SETFL, O_NONBLOCK) == -1)
			fatal("fcntl O_NONBLOCK");
	} else if (pipe2(p, O_CLOEXEC | O_NONBLOCK) == -1)
		fatal("pipe2");
	/* The write end blocks, as a terminal or a file would. */
	if (fcntl(p[1], F_SETFL, 0) == -1 || dup2(p[1], target) == -1)
		fatal("dup2 onto fd %d", target);
	close(p[1]);
	return p[0];
}

/* Add the tokens earned since the last refill, up to the burst. */
static void
worker_output_refill(void)
{
	struct timespec now;
	double dt;

	clock_gettime(CLOCK_MONOTONIC, &now);
	dt = (double)(now.tv_sec - wo.wo_last.tv_sec) +
	    (double)(now.tv_nsec - wo.wo_last.tv_nsec) / 1e9;
	wo.wo_last = now;
	if (dt > 0)
		wo.wo_tokens += dt * wo.wo_rate;
	if (wo.wo_tokens > wo.wo_burst)
		wo.wo_tokens = wo.wo_burst;
}

/* Send one Output, carrying the drops not yet reported. */
static void
worker_output_send(int i, const uint8_t *p, size_t n)
{
	Remotemedia__V1__ServerMessage sm =
	    REMOTEMEDIA__V1__SERVER_MESSAGE__INIT;
	Remotemedia__V1__Output out = REMOTEMEDIA__V1__OUTPUT__INIT;

	out.stream = worker_output_streams[i];
	out.data.data = (uint8_t *)p;
	out.data.len = n;
	out.dropped_bytes = wo.wo_dropped;
	wo.wo_dropped = 0;
	sm.msg_case = REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_OUTPUT;
	sm.output = &out;
	worker_send(FRAME_MSG, &sm.base);
}

/*
 * Pass what the bucket allows of n bytes of stream i; count the rest. A
 * part cut by the cap is at least WORKER_OUTPUT_PART (or the burst, if
 * smaller): a flood otherwise goes out as a stream of Outputs of the few
 * bytes earned between two reads.
 */
static void
worker_output_meter(int i, const uint8_t *p, size_t n)
{
	double part = wo.wo_burst < WORKER_OUTPUT_PART ? wo.wo_burst
	                                               : WORKER_OUTPUT_PART;
	size_t allow;

	worker_output_refill();
	allow = wo.wo_tokens >= (double)n ? n : (size_t)wo.wo_tokens;
	if (allow < n && (double)allow < part)
		allow = 0;
	wo.wo_tokens -= (double)allow;
	if (allow < n) {
		wo.wo_dropped += n - allow;
		wo.wo_dropped_stream = i;
	}
	if (allow > 0)
		worker_output_send(i, p, allow);
}

/* Read what stream i has now, a bounded amount; the lock is held. */
static void
worker_output_read(int i)
{
	static uint8_t buf[WORKER_OUTPUT_READ];
	ssize_t n;
	int nread;

	for (nread = 0; nread < WORKER_OUTPUT_ROUNDS && wo.wo_fd[i] != -1;
	     nread++) {
		n = read(wo.wo_fd[i], buf, sizeof(buf));
		if (n > 0) {
			if (!worker_dead())
				worker_output_meter(i, buf, (size_t)n);
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && errno == EAGAIN)
			break;
		if (n == -1)
			log_warn("%s: read", __func__);
		/* Every writer closed it: stop polling it. */
		close(wo.wo_fd[i]);
		wo.wo_fd[i] = -1;
	}
}

/*
 * Send what the pipes hold now. Called by the thread, and by the main
 * thread before each answer so that output comes before the result.
 */
void
worker_output_drain(void)
{
	struct pollfd pfd[2];
	int i;

	/* Under the lock, so that what the thread is sending goes first;
	 * one poll rather than a read of each pipe when, as most often,
	 * nothing was written. */
	pthread_mutex_lock(&wo.wo_lock);
	for (i = 0; i < 2; i++) {
		pfd[i].fd = wo.wo_fd[i];
		pfd[i].events = POLLIN;
		pfd[i].revents = 0;
	}
	if (poll(pfd, 2, 0) != 0) {
		worker_output_read(0);
		worker_output_read(1);
	}
	pthread_mutex_unlock(&wo.wo_lock);
}

/* Report drops that no later Output carried. */
static void
worker_output_report(void)
{
	pthread_mutex_lock(&wo.wo_lock);
	if (wo.wo_dropped > 0 && !worker_dead())
		worker_output_send(wo.wo_dropped_stream, NULL, 0);
	pthread_mutex_unlock(&wo.wo_lock);
}

/* The thread: wait for output or for the stop byte, and send. */
static void *
worker_output_main(void *arg)
{
	struct pollfd pfd[3];
	int i, n;

	while (!atomic_load(&wo.wo_stop)) {
		for (i = 0; i < 2; i++) {
			pfd[i].fd = wo.wo_fd[i];
			pfd[i].events = POLLIN;
		}
		pfd[2].fd = wo.wo_wake[0];
		pfd[2].events = POLLIN;
		n = poll(pfd, 3, wo.wo_dropped ? WORKER_OUTPUT_REPORT_MS : -1);
		if (n == -1 && errno != EINTR) {
			log_warn("%s: poll", __func__);
			break;
		}
		worker_output_drain();
		if (n == 0)
			worker_output_report();
	}
	worker_output_drain();
	worker_output_report();
	return NULL;
}

/*
 * Capture fds 1 and 2 and start the thread that forwards them, with rate
 * bytes per second and a bucket of burst bytes.
 */
void
worker_output_start(uint32_t rate, uint32_t burst)
{
	sigset_t all, old;

	wo.wo_rate = rate;
	wo.wo_burst = burst;
	wo.wo_tokens = burst;
	clock_gettime(CLOCK_MONOTONIC, &wo.wo_last);
	fflush(stdout);
	fflush(stderr);
	worker_output_keep_log();
	wo.wo_fd[0] = worker_output_pipe(STDOUT_FILENO, WORKER_OUT_FD);
	wo.wo_fd[1] = worker_output_pipe(STDERR_FILENO, WORKER_OUT_FD + 2);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (pipe2(wo.wo_wake, O_CLOEXEC) == -1)
		fatal("pipe2");

	/* Signals (SIGALRM for deadlines) belong to the Python thread. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	if (pthread_create(&wo.wo_thread, NULL, worker_output_main, NULL) != 0)
		fatalx("cannot start the output thread");
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	wo.wo_running = 1;
	log_debug(
	    "%s: output capped at %u bytes/s, burst %u", __func__, rate, burst);
}

/* Ask the thread to send what is left, and wait for it at most ms. */
void
worker_output_stop(unsigned int ms)
{
	struct timespec ts;
	ssize_t n;

	if (!wo.wo_running)
		return;
	wo.wo_running = 0;
	atomic_store(&wo.wo_stop, 1);
	do
		n = write(wo.wo_wake[1], "x", 1);
	while (n == -1 && errno == EINTR);
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	if (pthread_timedjoin_np(wo.wo_thread, NULL, &ts) != 0)
		log_debug("%s: output not sent within %u ms", __func__, ms);
}
