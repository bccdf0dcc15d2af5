/* What a process inside the container can learn of, or do to, another process of its pid namespace (PID 1 by
 * default): its environment, memory, executable, open fds, ptrace. Usage: probe [PID]. One line per probe. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <dirent.h>
#include <unistd.h>

static void readall(const char *what, const char *path)
{
	char buf[65536];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		printf("%s: denied (%s)\n", what, strerror(errno));
		return;
	}
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n < 0) {
		printf("%s: denied (%s)\n", what, strerror(errno));
		return;
	}
	for (ssize_t i = 0; i < n; i++)
		if (buf[i] == 0)
			buf[i] = ' ';
	buf[n] = 0;
	printf("%s: %s\n", what, buf);
}

int main(int argc, char **argv)
{
	const char *pid = argc > 1 ? argv[1] : "1";
	char p[128], link[512];
	setvbuf(stdout, NULL, _IOLBF, 0);
	snprintf(p, sizeof p, "/proc/%s/cmdline", pid);
	readall("cmdline", p);
	snprintf(p, sizeof p, "/proc/%s/environ", pid);
	readall("environ", p);
	snprintf(p, sizeof p, "/proc/%s/mem", pid);
	int fd = open(p, O_RDWR | O_CLOEXEC);
	printf("mem: %s\n", fd < 0 ? "denied" : "OPENED");
	snprintf(p, sizeof p, "/proc/%s/exe", pid);
	fd = open(p, O_RDONLY | O_CLOEXEC);
	ssize_t n = readlink(p, link, sizeof link - 1);
	link[n > 0 ? n : 0] = 0;
	printf("exe: %s %s\n", fd < 0 ? "denied" : "OPENED", n > 0 ? link : "?");
	snprintf(p, sizeof p, "/proc/%s/fd", pid);
	DIR *d = opendir(p);
	if (!d) {
		printf("fds: denied\n");
	} else {
		struct dirent *e;
		printf("fds:");
		while ((e = readdir(d)))
			if (e->d_name[0] != '.') {
				char q[800];
				snprintf(q, sizeof q, "%s/%s", p, e->d_name);
				n = readlink(q, link, sizeof link - 1);
				link[n > 0 ? n : 0] = 0;
				printf(" %s=%s", e->d_name, link);
			}
		printf("\n");
		closedir(d);
	}
	long r = ptrace(PTRACE_ATTACH, atoi(pid), 0, 0);
	if (r == 0) {
		waitpid(atoi(pid), NULL, __WALL);
		ptrace(PTRACE_DETACH, atoi(pid), 0, 0);
		printf("ptrace: ATTACHED\n");
	} else {
		printf("ptrace: denied (%s)\n", strerror(errno));
	}
	return 0;
}
