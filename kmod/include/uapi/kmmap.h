/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * kmmap: the contract between the kmmap kernel module and userland.
 *
 * Each open of /dev/kmmap gets its own zeroed buffer of
 * KMMAP_DEFAULT_PAGES pages (module parameter nr_pages).  It is shared
 * with userland through mmap() and copied through read()/write() at the
 * file position (pread/pwrite work).
 */
#ifndef _UAPI_LINUX_KMMAP_H
#define _UAPI_LINUX_KMMAP_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define KMMAP_DEVICE		"/dev/kmmap"
#define KMMAP_DEFAULT_PAGES	4

/**
 * struct kmmap_info - what KMMAP_IOC_INFO reports about the buffer
 * @size:	buffer size in bytes (out)
 * @page_size:	the kernel's PAGE_SIZE (out)
 * @nr_pages:	pages in the buffer (out)
 * @pfns:	user pointer to an array of __u64 to receive the kernel-side
 *		page frame number of each buffer page, or 0 (in)
 * @pfns_len:	entries the @pfns array holds; at most @nr_pages are
 *		written (in)
 * @reserved:	must be zero (in)
 */
struct kmmap_info {
	__u64 size;
	__u32 page_size;
	__u32 nr_pages;
	__u64 pfns;
	__u32 pfns_len;
	__u32 reserved;
};

#define KMMAP_IOC_MAGIC	'k'
#define KMMAP_IOC_INFO	_IOWR(KMMAP_IOC_MAGIC, 0x01, struct kmmap_info)

#endif /* _UAPI_LINUX_KMMAP_H */
