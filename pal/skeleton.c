/*
 * liberpal-skeleton: the reference enclave runtime of inclavare's rune, in PAL API versions 1, 2 and 3 from one
 * source (-DPAL_VERSION=1|2|3). It is NOT an enclave: it runs the payload as a native process (fork, execve,
 * waitpid), which proves the C ABI path of rune's PAL loader: argv, env, stdio fds, exit codes, signals and many
 * concurrent processes. Its v3 local report is a dummy, marked as such in report_data.
 *
 * Arguments (pal_init's args, space separated): "debug" prints each call on stderr; "fail=FUNC" makes FUNC
 * (pal_init, pal_create_process, pal_exec, pal_kill, pal_destroy, pal_get_local_report) return -EPERM.
 * Environment of the process that loads it: PAL_SKELETON_FAIL=FUNC fails FUNC too (also pal_get_version, which
 * runs before pal_init); PAL_SKELETON_VERSION=N makes pal_get_version return N.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#ifndef PAL_VERSION
#define PAL_VERSION 3
#endif

typedef struct {
	const char *args;
	const char *log_level;
} pal_attr_t;

typedef struct {
	pal_attr_t attr_v1;
	int fd;
	uint64_t addr;
} pal_attr_v3_t;

typedef struct {
	int stdin, stdout, stderr;
} pal_stdio_fds;

typedef struct {
	char *path;
	char **argv;
	char **env;
	pal_stdio_fds *stdio;
	int *pid;
} pal_create_process_args;

typedef struct {
	int pid;
	int *exit_value;
} pal_exec_args;

_Static_assert(sizeof(pal_attr_t) == 16, "pal_attr_t");
_Static_assert(sizeof(pal_attr_v3_t) == 32, "pal_attr_v3_t");
_Static_assert(sizeof(pal_stdio_fds) == 12, "pal_stdio_fds");
_Static_assert(sizeof(pal_create_process_args) == 40, "pal_create_process_args");
_Static_assert(sizeof(pal_exec_args) == 16, "pal_exec_args");

#define MAX_PROCS 4096

static char fail_arg[64];
static int debug;
static int initialized;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t procs[MAX_PROCS];
#if PAL_VERSION >= 3
static unsigned char enclave_nonce[32]; /* of the pre-initialised enclave pal_init was given, else zeros */
#endif

static int failing(const char *fn)
{
	const char *env = getenv("PAL_SKELETON_FAIL");

	if (env && strcmp(env, fn) == 0)
		return 1;
	return fail_arg[0] && strcmp(fail_arg, fn) == 0;
}

static void trace(const char *fn)
{
	if (debug)
		fprintf(stderr, "[skeleton v%d] %s\n", PAL_VERSION, fn);
}

static void track(pid_t pid, int add)
{
	pthread_mutex_lock(&lock);
	for (int i = 0; i < MAX_PROCS; i++) {
		if (add ? procs[i] == 0 : procs[i] == pid) {
			procs[i] = add ? pid : 0;
			break;
		}
	}
	pthread_mutex_unlock(&lock);
}

#if PAL_VERSION >= 2
static int tracked(pid_t pid)
{
	int found = 0;

	pthread_mutex_lock(&lock);
	for (int i = 0; i < MAX_PROCS && !found; i++)
		found = procs[i] == pid;
	pthread_mutex_unlock(&lock);
	return found;
}
#endif

/* Fork and exec; the child's exec error comes back through a close-on-exec pipe as -errno. */
static int spawn(const char *path, char *const argv[], char *const env[], const pal_stdio_fds *stdio, pid_t *out)
{
	static char *const empty[] = { NULL };
	int p[2];
	pid_t pid = 0;
	int err = 0;

	if (!path || !argv || !stdio)
		return -EINVAL;
	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		err = -errno;
		close(p[0]);
		close(p[1]);
		return err;
	}
	if (pid == 0) {
		sigset_t none;
		int fds[3] = { stdio->stdin, stdio->stdout, stdio->stderr };

		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		for (int s = 1; s < NSIG; s++)
			if (s != SIGKILL && s != SIGSTOP)
				signal(s, SIG_DFL);
		/* move the fds out of the way first, so that dup2 never clobbers one still to be copied */
		for (int i = 0; i < 3; i++)
			if (fds[i] >= 0 && fds[i] < 3 && (fds[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 3)) < 0)
				goto fail;
		for (int i = 0; i < 3; i++)
			if (fds[i] >= 0 && dup2(fds[i], i) < 0)
				goto fail;
		if (isatty(0)) {
			setsid();
			ioctl(0, TIOCSCTTY, 0);
		}
		execve(path, argv, env ? env : empty);
fail:
		err = errno;
		(void)!write(p[1], &err, sizeof(err));
		_exit(127);
	}
	close(p[1]);
	if (read(p[0], &err, sizeof(err)) == sizeof(err)) {
		waitpid(pid, NULL, 0);
		close(p[0]);
		return -err;
	}
	close(p[0]);
	track(pid, 1);
	*out = pid;
	return 0;
}

static int wait_for(pid_t pid, int *exit_value)
{
	int status;

	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	track(pid, 0);
	if (exit_value)
		*exit_value = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	return 0;
}

#if PAL_VERSION >= 2
int pal_get_version(void)
{
	const char *v = getenv("PAL_SKELETON_VERSION");

	trace("pal_get_version");
	if (failing("pal_get_version"))
		return -EPERM;
	return v ? atoi(v) : PAL_VERSION;
}
#endif

int pal_init(pal_attr_t *attr)
{
	char buf[1024];

	if (!attr)
		return -EINVAL;
	snprintf(buf, sizeof(buf), "%s", attr->args ? attr->args : "");
	for (char *tok = strtok(buf, " "); tok; tok = strtok(NULL, " ")) {
		if (strcmp(tok, "debug") == 0)
			debug = 1;
		else if (strncmp(tok, "fail=", 5) == 0)
			snprintf(fail_arg, sizeof(fail_arg), "%s", tok + 5);
	}
	trace("pal_init");
#if PAL_VERSION >= 3
	{
		pal_attr_v3_t *v3 = (pal_attr_v3_t *)attr;

		if (debug)
			fprintf(stderr, "[skeleton v3] fd=%d addr=0x%llx\n", v3->fd, (unsigned long long)v3->addr);
		/* a pre-initialised enclave (epm's pool): its header at addr, "EPMENCL1", its size, the runtime's
		 * SHA-256 and a nonce; rune checked the fd, the skeleton checks that the mapping reached it */
		if (v3->fd >= 0) {
			const unsigned char *h = (const unsigned char *)(uintptr_t)v3->addr;

			if (!h || memcmp(h, "EPMENCL1", 8) != 0)
				return -EINVAL;
			memcpy(enclave_nonce, h + 48, 32);
			if (debug) {
				fprintf(stderr, "[skeleton v3] pre-initialised enclave ");
				for (int i = 0; i < 8; i++)
					fprintf(stderr, "%02x", enclave_nonce[i]);
				fprintf(stderr, "\n");
			}
		}
	}
#endif
	if (failing("pal_init"))
		return -EPERM;
	initialized = 1;
	return 0;
}

#if PAL_VERSION == 1
int pal_exec(char *path, char *argv[], pal_stdio_fds *stdio, int *exit_code)
{
	pid_t pid = 0;
	int ret;

	trace("pal_exec");
	if (!initialized)
		return -EINVAL;
	if (failing("pal_exec"))
		return -EPERM;
	ret = spawn(path, argv, NULL, stdio, &pid); /* v1 passes no environment */
	if (ret < 0)
		return ret;
	return wait_for(pid, exit_code);
}
#else
int pal_create_process(pal_create_process_args *args)
{
	pid_t pid = 0;
	int ret;

	trace("pal_create_process");
	if (!initialized || !args || !args->pid)
		return -EINVAL;
	if (failing("pal_create_process"))
		return -EPERM;
	ret = spawn(args->path, args->argv, args->env, args->stdio, &pid);
	if (ret < 0)
		return ret;
	*args->pid = pid;
	return 0;
}

int pal_exec(pal_exec_args *args)
{
	trace("pal_exec");
	if (!args || !args->exit_value)
		return -EINVAL;
	if (failing("pal_exec"))
		return -EPERM;
	if (!tracked(args->pid))
		return -ESRCH;
	return wait_for(args->pid, args->exit_value);
}

int pal_kill(int pid, int sig)
{
	int sent = 0;

	trace("pal_kill");
	if (failing("pal_kill"))
		return -EPERM;
	if (pid > 0) {
		if (!tracked(pid))
			return -ESRCH;
		return kill(pid, sig) < 0 ? -errno : 0;
	}
	/* -1 (all) and 0 (current): every process this PAL started */
	pthread_mutex_lock(&lock);
	for (int i = 0; i < MAX_PROCS; i++)
		if (procs[i] > 0 && kill(procs[i], sig) == 0)
			sent++;
	pthread_mutex_unlock(&lock);
	return sent ? 0 : -ESRCH;
}
#endif

int pal_destroy(void)
{
	trace("pal_destroy");
	if (failing("pal_destroy"))
		return -EPERM;
	initialized = 0;
	return 0;
}

#if PAL_VERSION >= 3
/* A dummy REPORT: the skeleton is no enclave. Body fields are zero but report_data, which says so. */
int pal_get_local_report(void *targetinfo, int targetinfo_len, void *report, int *report_len)
{
	static const char mark[] = "inclavare liberpal-skeleton: not an enclave";
	unsigned char *r = report;

	trace("pal_get_local_report");
	if (failing("pal_get_local_report"))
		return -EPERM;
	if (!targetinfo || targetinfo_len != 512 || !report || !report_len || *report_len < 432)
		return -EINVAL;
	memset(r, 0, 432);
	memcpy(r + 320, mark, sizeof(mark) - 1); /* REPORT body report_data */
	memcpy(r + 384, enclave_nonce, 32);      /* KEYID: the pre-initialised enclave's nonce, zeros when cold */
	*report_len = 432;
	return 0;
}
#endif
