// SPDX-License-Identifier: GPL-2.0
/*
 * kmmap-setup: KMMAP_IOC_SETUP, once per argument (BACKING:PAGES), on one
 * open of /dev/kmmap, printing "BACKING:PAGES ok" or "BACKING:PAGES errno N".
 *
 * A single-threaded C program, for TestMemcgLimit: while a SETUP holds a
 * memory cgroup at its limit, no other thread of the caller may fault a
 * page in (a Go program's runtime threads can), or the memcg OOM killer
 * ends the caller instead of the SETUP failing with ENOMEM.
 *
 * Nor may this thread, just after a SETUP failed: 7.3's __vmalloc returns
 * ENOMEM before the pages it charged are uncharged (memory.current read at
 * once was the limit, 12582912; 10 ms later 1667072), and a page fault or
 * an allocation in that window is charged against a full cgroup - the OOM
 * killer ended this program on a copy-on-write fault in printf once in 50
 * runs under load. So it touches all its memory first (mlockall, stdout's
 * buffer static), and with KMMAP_MEMCG_CURRENT naming the cgroup's
 * memory.current, waits after a failed SETUP, up to 2 s, until the charge
 * is back where it was, saying how long on a line starting with "#".
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <linux/kmmap.h>

static char outbuf[4096];

/* The cgroup's memory.current read through fd, or -1. */
static long current(int fd)
{
	char b[32];
	ssize_t n = fd < 0 ? -1 : pread(fd, b, sizeof(b) - 1, 0);

	if (n <= 0)
		return -1;
	b[n] = '\0';
	return atol(b);
}

/* Waits, up to 2 s, until memory.current is at most want; returns the ms. */
static long settle(int fd, long want)
{
	struct timespec ms = { 0, 1000000 };
	long waited;

	for (waited = 0; waited < 2000; waited++) {
		long cur = current(fd);

		if (cur < 0 || cur <= want)
			break;
		nanosleep(&ms, NULL);
	}
	return waited;
}

int main(int argc, char **argv)
{
	const char *path = getenv("KMMAP_MEMCG_CURRENT");
	int cg = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
	int fd = open(KMMAP_DEVICE, O_RDWR | O_CLOEXEC);
	int i;

	setvbuf(stdout, outbuf, _IOFBF, sizeof(outbuf));
	if (mlockall(MCL_CURRENT))
		perror("kmmap-setup: mlockall");
	if (fd < 0) {
		perror("kmmap-setup: open " KMMAP_DEVICE);
		return 2;
	}
	for (i = 1; i < argc; i++) {
		struct kmmap_setup s = { 0 };
		long before = current(cg);
		int err = 0;

		if (sscanf(argv[i], "%u:%u", &s.backing, &s.nr_pages) != 2) {
			fprintf(stderr, "kmmap-setup: %s is not BACKING:PAGES\n", argv[i]);
			return 2;
		}
		if (ioctl(fd, KMMAP_IOC_SETUP, &s)) {
			long waited;

			err = errno;
			/* The stock of charges a CPU keeps: 64 pages. */
			waited = settle(cg, before + 64 * sysconf(_SC_PAGESIZE));
			if (waited)
				printf("# %s: memory.current settled %ld ms after the failed SETUP\n", argv[i], waited);
		}
		if (err)
			printf("%s errno %d\n", argv[i], err);
		else
			printf("%s ok\n", argv[i]);
	}
	return 0;
}
