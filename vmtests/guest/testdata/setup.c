// SPDX-License-Identifier: GPL-2.0
/*
 * kmmap-setup: KMMAP_IOC_SETUP, once per argument (BACKING:PAGES), on one
 * open of /dev/kmmap, printing "BACKING:PAGES ok" or "BACKING:PAGES errno N".
 *
 * A single-threaded C program, for TestMemcgLimit: while a SETUP holds a
 * memory cgroup at its limit, no other thread of the caller may fault a
 * page in (a Go program's runtime threads can), or the memcg OOM killer
 * ends the caller instead of the SETUP failing with ENOMEM.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <linux/kmmap.h>

int main(int argc, char **argv)
{
	int fd = open(KMMAP_DEVICE, O_RDWR | O_CLOEXEC);
	int i;

	if (fd < 0) {
		perror("kmmap-setup: open " KMMAP_DEVICE);
		return 2;
	}
	for (i = 1; i < argc; i++) {
		struct kmmap_setup s = { 0 };

		if (sscanf(argv[i], "%u:%u", &s.backing, &s.nr_pages) != 2) {
			fprintf(stderr, "kmmap-setup: %s is not BACKING:PAGES\n", argv[i]);
			return 2;
		}
		if (ioctl(fd, KMMAP_IOC_SETUP, &s))
			printf("%s errno %d\n", argv[i], errno);
		else
			printf("%s ok\n", argv[i]);
	}
	return 0;
}
