/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * kmmap: the contract between the kmmap kernel module and userland.
 *
 * Each open of /dev/kmmap owns one buffer, KMMAP_DEFAULT_PAGES pages of the
 * "fault" backing unless KMMAP_IOC_SETUP chooses another backing or size
 * before the buffer is first mapped.  The buffer is shared with userland
 * through mmap() (MAP_SHARED only; offset and length in whole pages inside
 * the buffer; never executable) and copied through read()/write() at the
 * file position.  A user buffer can also be lent to the kernel
 * (KMMAP_IOC_PIN), which then writes into it from a worker.
 *
 * Layout: every field is naturally aligned and no structure has padding,
 * so each has one layout for 32- and 64-bit userland on every arch (the
 * module asserts the sizes and the ring's offsets).  Byte order: every
 * field is in the byte order of the machine, the kernel's and the mapping
 * process's alike (big-endian on s390x): a consumer reads the ring as its
 * own integers and converts only what it copies to another machine.  head
 * and tail are two 32-bit words, each loaded and stored on its own: read
 * as one 64-bit word, their halves trade places with the byte order.
 * Offsets into the buffer are in bytes; the page size is the kernel's
 * (struct kmmap_info's page_size: 4K, 16K or 64K), never assumed.
 */
#ifndef _UAPI_LINUX_KMMAP_H
#define _UAPI_LINUX_KMMAP_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define KMMAP_DEVICE		"/dev/kmmap"
#define KMMAP_DEFAULT_PAGES	4
#define KMMAP_MAX_PAGES		4096

/**
 * enum kmmap_backing - how the buffer's pages reach userland
 * @KMMAP_BACKING_FAULT:  vmalloc_user() memory, mapped page by page by a
 *                        .fault handler on first touch
 * @KMMAP_BACKING_PFN:    physically contiguous pages mapped whole by
 *                        remap_pfn_range() (a VM_PFNMAP mapping: pagemap
 *                        shows no PFN for it)
 * @KMMAP_BACKING_INSERT: separately allocated pages mapped whole by
 *                        vm_insert_pages()
 * @KMMAP_BACKING_RING:   vmalloc_user() memory holding a kernel-to-user
 *                        event ring: struct kmmap_ring_header in the first
 *                        page, records in the rest
 */
enum kmmap_backing {
	KMMAP_BACKING_FAULT	= 0,
	KMMAP_BACKING_PFN	= 1,
	KMMAP_BACKING_INSERT	= 2,
	KMMAP_BACKING_RING	= 3
};

/**
 * struct kmmap_setup - choose the backing before the first mmap()
 * @backing:	enum kmmap_backing
 * @nr_pages:	buffer size in pages, 1..KMMAP_MAX_PAGES (2.. for the ring)
 * @flags:	none defined yet: must be 0
 * @reserved:	must be 0
 *
 * The new buffer is allocated before the old one is given up: a SETUP that
 * fails (EINVAL, EBUSY while mapped, ENOMEM) leaves the file as it was.
 */
struct kmmap_setup {
	__u32 backing;
	__u32 nr_pages;
	__u32 flags;
	__u32 reserved;
};

/**
 * struct kmmap_info - what KMMAP_IOC_INFO reports about the buffer
 * @size:	buffer size in bytes (out)
 * @page_size:	the kernel's PAGE_SIZE (out)
 * @nr_pages:	pages in the buffer (out)
 * @pfns:	user pointer to an array of __u64 to receive the kernel-side
 *		page frame number of each buffer page, or 0 (in).  As in
 *		/proc/self/pagemap, the numbers are real only when the file was
 *		opened with CAP_SYS_ADMIN; 0 for everyone else (physical
 *		addresses help Rowhammer and similar attacks).
 * @pfns_len:	entries the @pfns array holds; at most @nr_pages are
 *		written (in)
 * @backing:	enum kmmap_backing (out)
 * @flags:	none defined yet: must be 0 (in)
 * @reserved:	must be 0 (in)
 */
struct kmmap_info {
	__u64 size;
	__u32 page_size;
	__u32 nr_pages;
	__u64 pfns;
	__u32 pfns_len;
	__u32 backing;
	__u32 flags;
	__u32 reserved;
};

/**
 * struct kmmap_range - a byte range of the buffer, and a pattern or a sum
 * @offset:	first byte; @offset + @length must not pass the buffer's end
 * @length:	bytes
 * @seed:	KMMAP_IOC_FILL: byte i of the range becomes kmmap_pattern(seed, i)
 * @sum:	KMMAP_IOC_CHECKSUM: FNV-1a 64 of the range as the kernel sees it (out)
 * @flags:	none defined yet: must be 0
 * @reserved:	must be 0
 */
struct kmmap_range {
	__u64 offset;
	__u64 length;
	__u64 seed;
	__u64 sum;
	__u32 flags;
	__u32 reserved;
};

/* A 64-bit constant C90 can spell (it has no long long literals). */
#define __KMMAP_U64(hi, lo)	(((__u64)(hi##UL) << 32) | (__u64)(lo##UL))

/*
 * The fill pattern: byte i, counted from the start of the filled range,
 * a hash of (seed, i), so that no two pages of a buffer look alike and a
 * page mapped at the wrong offset cannot pass for the right one.
 */
static __inline__ __u8 kmmap_pattern(__u64 seed, __u64 i)
{
	__u64 x = seed * __KMMAP_U64(0x9e3779b9, 0x7f4a7c15) + i;	/* splitmix64 */

	x = (x ^ (x >> 30)) * __KMMAP_U64(0xbf58476d, 0x1ce4e5b9);
	x = (x ^ (x >> 27)) * __KMMAP_U64(0x94d049bb, 0x133111eb);
	return (__u8)(x ^ (x >> 31));
}

/**
 * struct kmmap_pin - lend a user buffer to the kernel (KMMAP_IOC_PIN)
 * @addr:	start of the user range (any alignment)
 * @length:	bytes, at most KMMAP_MAX_PAGES pages' worth
 * @flags:	none defined yet: must be 0
 * @reserved:	must be 0
 *
 * The kernel pins the pages (pin_user_pages) until KMMAP_IOC_UNPIN, close()
 * or process exit.  KMMAP_IOC_PIN_FILL then asks a kernel worker to write
 * kmmap_pattern(seed, i) into byte i of the range, asynchronously;
 * KMMAP_IOC_PIN_WAIT blocks until every requested fill is done.
 *
 * Pinned pages count against RLIMIT_MEMLOCK of the process that pinned
 * them (VmPin in /proc/PID/status), as for io_uring's and RDMA's
 * registered buffers: past the limit, without CAP_IPC_LOCK, ENOMEM.  The
 * charge is returned on UNPIN, close() or exit.
 */
struct kmmap_pin {
	__u64 addr;
	__u64 length;
	__u32 flags;
	__u32 reserved;
};

/**
 * struct kmmap_pin_fill - KMMAP_IOC_PIN_FILL
 * @seed:	byte i of the pinned range becomes kmmap_pattern(seed, i)
 * @flags:	none defined yet: must be 0
 * @reserved:	must be 0
 */
struct kmmap_pin_fill {
	__u64 seed;
	__u32 flags;
	__u32 reserved;
};

/**
 * struct kmmap_ring_header - first page of the ring backing
 * @head:	next record the kernel writes; only the kernel stores it, with
 *		release semantics; userland loads it with acquire
 * @tail:	next record userland reads; only userland stores it, with
 *		release semantics, after it has read the record
 * @nr_records:	capacity, a power of two; record n is at
 *		records[n & (nr_records - 1)]
 * @record_size: sizeof(struct kmmap_ring_record)
 * @dropped:	records the kernel could not write because the ring was full
 * @produced:	records the kernel wrote
 *
 * Records start at the second page.  The kernel keeps its own copy of
 * head, so a userland that scribbles on the header loses records at worst;
 * it never makes the kernel write outside the ring.
 */
struct kmmap_ring_header {
	__u32 head;
	__u32 tail;
	__u32 nr_records;
	__u32 record_size;
	__u64 dropped;
	__u64 produced;
};

/**
 * struct kmmap_ring_record - one event
 * @seq:	0, 1, 2, ... in the order the kernel produced them
 * @source:	KMMAP_RING_SRC_IOCTL or KMMAP_RING_SRC_TIMER
 * @len:	bytes of @data in use
 * @data:	kmmap_pattern(seq, i) for i < len
 */
struct kmmap_ring_record {
	__u64 seq;
	__u32 source;
	__u32 len;
	__u8 data[48];
};

#define KMMAP_RING_SRC_IOCTL	1
#define KMMAP_RING_SRC_TIMER	2

/**
 * struct kmmap_ring_ctl - KMMAP_IOC_RING_EMIT and KMMAP_IOC_RING_TIMER
 * @count:	EMIT: records to produce now; TIMER: records per tick
 * @period_ms:	TIMER: tick period, 1..10000, or 0 to stop the timer
 * @flags:	none defined yet: must be 0
 * @reserved:	must be 0
 */
struct kmmap_ring_ctl {
	__u32 count;
	__u32 period_ms;
	__u32 flags;
	__u32 reserved;
};

/*
 * 0xD6: listed for no one in Documentation/userspace-api/ioctl/ioctl-number.rst
 * (as of 7.3; TestIoctlMagicFree checks the pinned source).  The first ABI
 * used 'k', which that table gives to others, and structures without
 * flags: its numbers are gone.
 */
#define KMMAP_IOC_MAGIC		0xD6
#define KMMAP_IOC_INFO		_IOWR(KMMAP_IOC_MAGIC, 0x01, struct kmmap_info)
#define KMMAP_IOC_SETUP		_IOW(KMMAP_IOC_MAGIC, 0x02, struct kmmap_setup)
#define KMMAP_IOC_FILL		_IOW(KMMAP_IOC_MAGIC, 0x03, struct kmmap_range)
#define KMMAP_IOC_CHECKSUM	_IOWR(KMMAP_IOC_MAGIC, 0x04, struct kmmap_range)
#define KMMAP_IOC_PIN		_IOW(KMMAP_IOC_MAGIC, 0x05, struct kmmap_pin)
#define KMMAP_IOC_UNPIN		_IO(KMMAP_IOC_MAGIC, 0x06)
#define KMMAP_IOC_PIN_FILL	_IOW(KMMAP_IOC_MAGIC, 0x07, struct kmmap_pin_fill)
#define KMMAP_IOC_PIN_WAIT	_IO(KMMAP_IOC_MAGIC, 0x08)
#define KMMAP_IOC_RING_EMIT	_IOW(KMMAP_IOC_MAGIC, 0x09, struct kmmap_ring_ctl)
#define KMMAP_IOC_RING_TIMER	_IOW(KMMAP_IOC_MAGIC, 0x0a, struct kmmap_ring_ctl)

#endif /* _UAPI_LINUX_KMMAP_H */
