/*
 * The capture of what the session writes to fds 1 and 2.
 *
 * Before Python starts, fds 1 and 2 become the write ends of two pipes
 * whose read ends the front holds (frame.h), so that print, logging, C
 * extensions and subprocesses are all captured and their stream is known.
 * The front reads the pipes and sends Output under its rate cap
 * (front_output.c). The worker never reads them: no byte is ever in
 * flight in a worker that dies, so its last words all reach the front.
 *
 * So that what a call printed reaches the client before the call's
 * answer, the worker polls the pipes before each answer: if they hold
 * bytes, it sends Flush first, and the front reads them before the frames
 * that follow. Its read ends are other open files of the pipes than the
 * front's: user code that made one blocking would not make the front's.
 *
 * The worker's own log keeps going to the front's stderr, on a copy of the
 * original fd 2; the C stderr is fd 2, the capture.
 */
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <unistd.h>

#include "frame.h"
#include "log.h"
#include "worker.h"
#include "worker.pb-c.h"

/* The worker's read ends of the pipes, which it polls and never reads:
 * other open files than the front's (fw_exec); -1: no capture (a worker
 * run by hand). */
static int wo_fd[2] = {-1, -1};

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
 * Make target the write end of the front's pipe on fds `from` (write end)
 * and from + 1 (read end); returns the read end, moved out of the way.
 */
static int
worker_output_pipe(int target, int from)
{
	int r;

	if ((r = fcntl(from + 1, F_DUPFD_CLOEXEC, 10)) == -1)
		fatal("fcntl");
	close(from + 1);
	/* The write end blocks, as a terminal or a file would. */
	if (fcntl(from, F_SETFL, 0) == -1 || dup2(from, target) == -1)
		fatal("dup2 onto fd %d", target);
	close(from);
	return r;
}

/*
 * Capture fds 1 and 2 into the front's pipes. A worker run by hand,
 * without them, leaves its fds 1 and 2 as they are.
 */
void
worker_output_start(void)
{
	int i;

	fflush(stdout);
	fflush(stderr);
	for (i = WORKER_OUT_FD; i < WORKER_EXEC_FDS; i++)
		if (fcntl(i, F_GETFD) == -1) {
			log_debug(
			    "%s: no output pipes: fds 1 and 2 stay", __func__);
			return;
		}
	worker_output_keep_log();
	wo_fd[0] = worker_output_pipe(STDOUT_FILENO, WORKER_OUT_FD);
	wo_fd[1] = worker_output_pipe(STDERR_FILENO, WORKER_OUT_FD + 2);
	setvbuf(stdout, NULL, _IOLBF, 0);
}

/*
 * Before an answer: if the pipes hold bytes, ask the front to read them
 * first (Flush). One poll, and no frame when, as most often, nothing was
 * written.
 */
void
worker_output_flush(void)
{
	Remotemedia__Worker__V1__WorkerControl ctl =
	    REMOTEMEDIA__WORKER__V1__WORKER_CONTROL__INIT;
	Remotemedia__Worker__V1__Flush fl =
	    REMOTEMEDIA__WORKER__V1__FLUSH__INIT;
	struct pollfd pfd[2];
	int i;

	if (wo_fd[0] == -1)
		return;
	for (i = 0; i < 2; i++) {
		pfd[i].fd = wo_fd[i];
		pfd[i].events = POLLIN;
		pfd[i].revents = 0;
	}
	if (poll(pfd, 2, 0) <= 0 ||
	    !((pfd[0].revents | pfd[1].revents) & POLLIN))
		return;
	ctl.msg_case = REMOTEMEDIA__WORKER__V1__WORKER_CONTROL__MSG_FLUSH;
	ctl.flush = &fl;
	(void)worker_send(FRAME_CTL, &ctl.base);
}
