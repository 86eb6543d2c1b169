// SPDX-License-Identifier: GPL-2.0
/*
 * demo: every way kmmap shares memory, used from C with nothing but the
 * UAPI header.  Exits 0 when each backing, the pinned buffer and the ring
 * behave; prints what failed otherwise.
 *
 *   cc -static -I kmod/include/uapi -o kmmap-demo kmod/examples/demo.c
 *
 * Built 32-bit too (-m32, or an armhf compiler), it goes through the
 * module's compat_ioctl: the structures have one layout for both.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <linux/kmmap.h>

static int failures;

#define CHECK(cond, ...) do {					\
	if (!(cond)) {						\
		fprintf(stderr, "demo: FAIL %s:%d: ", __func__, __LINE__); \
		fprintf(stderr, __VA_ARGS__);			\
		fputc('\n', stderr);				\
		failures++;					\
	}							\
} while (0)

static uint64_t fnv1a(const uint8_t *p, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	while (len--) {
		h ^= *p++;
		h *= 0x100000001b3ULL;
	}
	return h;
}

static int open_backing(__u32 backing, __u32 pages, struct kmmap_info *info)
{
	struct kmmap_setup setup = { .backing = backing, .nr_pages = pages };
	int fd = open(KMMAP_DEVICE, O_RDWR | O_CLOEXEC);

	if (fd < 0) {
		perror("demo: open " KMMAP_DEVICE);
		exit(2);
	}
	if (ioctl(fd, KMMAP_IOC_SETUP, &setup) || ioctl(fd, KMMAP_IOC_INFO, info)) {
		perror("demo: setup");
		exit(2);
	}
	return fd;
}

/* Kernel fill seen through the mapping; user write seen by the kernel. */
static void share(const char *name, __u32 backing)
{
	struct kmmap_info info = { 0 };
	int fd = open_backing(backing, 4, &info);
	struct kmmap_range r = { .offset = 0, .length = info.size, .seed = 42 };
	uint8_t *m;
	size_t i;

	m = mmap(NULL, info.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	CHECK(m != MAP_FAILED, "%s: mmap: %s", name, strerror(errno));
	if (m == MAP_FAILED)
		goto out;
	CHECK(!ioctl(fd, KMMAP_IOC_FILL, &r), "%s: fill: %s", name, strerror(errno));
	for (i = 0; i < info.size; i++) {
		if (m[i] != kmmap_pattern(42, i))
			break;
	}
	CHECK(i == info.size, "%s: kernel fill not seen at byte %zu", name, i);

	memset(m, 0x5a, info.size);
	r.seed = 0;
	CHECK(!ioctl(fd, KMMAP_IOC_CHECKSUM, &r), "%s: checksum: %s", name, strerror(errno));
	CHECK(r.sum == fnv1a(m, info.size), "%s: user write not seen by the kernel", name);
	munmap(m, info.size);
	printf("demo: %s ok (%llu bytes, page size %u)\n", name,
	       (unsigned long long)info.size, info.page_size);
out:
	close(fd);
}

static void pinned(void)
{
	struct kmmap_info info = { 0 };
	int fd = open_backing(KMMAP_BACKING_FAULT, 1, &info);
	size_t len = 3 * info.page_size, i;
	uint8_t *buf = aligned_alloc(info.page_size, len + info.page_size);
	struct kmmap_pin pin = { .addr = (uintptr_t)buf + 10, .length = len };
	struct kmmap_pin_fill fill = { .seed = 7 };

	memset(buf, 0, len + info.page_size);
	CHECK(!ioctl(fd, KMMAP_IOC_PIN, &pin), "pin: %s", strerror(errno));
	CHECK(!ioctl(fd, KMMAP_IOC_PIN_FILL, &fill), "pin fill: %s", strerror(errno));
	CHECK(!ioctl(fd, KMMAP_IOC_PIN_WAIT), "pin wait: %s", strerror(errno));
	for (i = 0; i < len; i++) {
		if (buf[10 + i] != kmmap_pattern(7, i))
			break;
	}
	CHECK(i == len, "pinned: worker's write not seen at byte %zu", i);
	CHECK(!ioctl(fd, KMMAP_IOC_UNPIN), "unpin: %s", strerror(errno));
	free(buf);
	close(fd);
	printf("demo: pinned ok\n");
}

static void ring(void)
{
	struct kmmap_info info = { 0 };
	int fd = open_backing(KMMAP_BACKING_RING, 2, &info);
	struct kmmap_ring_ctl emit = { .count = 5 };
	struct kmmap_ring_header *hdr;
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	__u32 head, tail;
	void *m;

	m = mmap(NULL, info.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	CHECK(m != MAP_FAILED, "ring: mmap: %s", strerror(errno));
	if (m == MAP_FAILED)
		goto out;
	hdr = m;
	CHECK(!ioctl(fd, KMMAP_IOC_RING_EMIT, &emit), "ring: emit: %s", strerror(errno));
	CHECK(poll(&pfd, 1, 1000) == 1, "ring: not readable");
	head = __atomic_load_n(&hdr->head, __ATOMIC_ACQUIRE);
	for (tail = hdr->tail; tail != head; tail++) {
		struct kmmap_ring_record *rec = (void *)((char *)m + info.page_size) +
			(tail & (hdr->nr_records - 1)) * sizeof(*rec);

		CHECK(rec->seq == tail, "ring: record %u has seq %llu", tail,
		      (unsigned long long)rec->seq);
		CHECK(rec->data[0] == kmmap_pattern(rec->seq, 0), "ring: record %u torn", tail);
	}
	__atomic_store_n(&hdr->tail, tail, __ATOMIC_RELEASE);
	CHECK(tail == 5, "ring: read %u records, want 5", tail);
	munmap(m, info.size);
	printf("demo: ring ok\n");
out:
	close(fd);
}

int main(void)
{
	printf("demo: a %u-bit program\n", (unsigned int)(8 * sizeof(void *)));
	share("fault", KMMAP_BACKING_FAULT);
	share("pfn", KMMAP_BACKING_PFN);
	share("insert", KMMAP_BACKING_INSERT);
	share("ring", KMMAP_BACKING_RING);
	pinned();
	ring();
	return failures ? 1 : 0;
}
