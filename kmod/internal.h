/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kmmap internals shared by the module's files.
 */
#ifndef _KMMAP_INTERNAL_H
#define _KMMAP_INTERNAL_H

#include <linux/atomic.h>
#include <linux/mm.h>
#include <linux/mutex.h>
#include <linux/spinlock.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

#include <uapi/linux/kmmap.h>

/*
 * A buffer with its backing.  SETUP builds the new one aside and swaps it
 * in only once it exists, so a failed SETUP leaves the file as it was.
 */
struct kmmap_buf {
	enum kmmap_backing backing;
	unsigned long npages;
	size_t size;
	void *vaddr;		/* the whole buffer in kernel address space; NULL: none */
	struct page **pages;	/* insert backing: its pages (vaddr is their vmap) */
};

/* A user range lent to the kernel with KMMAP_IOC_PIN. */
struct kmmap_pinned {
	struct page **pages;	/* NULL when nothing is pinned */
	unsigned long npages;
	struct mm_struct *mm;	/* charged npages of pinned_vm; grabbed */
	unsigned long offset;	/* of the range in its first page */
	size_t length;
	struct work_struct work;
	/* Serialises pin, unpin and fill; held across pin_user_pages(). */
	struct mutex mutex;
	spinlock_t lock;	/* guards seed, requested, done */
	u64 seed;
	unsigned long requested;	/* fills asked for */
	unsigned long done;		/* fills the worker finished */
	wait_queue_head_t wq;
};

/* The kernel side of the ring backing. */
struct kmmap_ring {
	struct kmmap_ring_header *hdr;	/* in the shared pages */
	struct kmmap_ring_record *rec;	/* in the shared pages */
	u32 nr;			/* records, a power of two */
	spinlock_t lock;	/* serialises producers */
	u32 head;		/* the kernel's own copy: never read back */
	u64 seq, produced, dropped;
	struct delayed_work tick;
	u32 tick_count;		/* records per tick */
	unsigned int period_ms;	/* 0: timer stopped */
	wait_queue_head_t wq;
};

/* Per open file. */
struct kmmap_file {
	/*
	 * Guards the buffer's setup.  mmap() takes it with mmap_lock held, so it
	 * is never held across an access to user memory (a fault takes
	 * mmap_lock): such accesses hold a reference in users instead, which
	 * keeps SETUP from replacing the buffer.
	 */
	struct mutex lock;
	struct kmmap_buf buf;	/* replaced only under lock, with maps and users 0 */
	atomic_t maps;		/* live VMAs; setup is refused while any */
	atomic_t users;		/* read/write/ioctl work in flight; likewise */
	struct kmmap_pinned pin;
	struct kmmap_ring ring;
};

/* The module's own allocation counters, read-only module parameters. */
extern atomic_long_t kmmap_live_buffers;
extern atomic_long_t kmmap_pinned_pages;

int kmmap_buf_alloc(struct kmmap_buf *b, enum kmmap_backing backing, unsigned long npages);
void kmmap_buf_free(struct kmmap_buf *b);
struct page *kmmap_buf_page(const struct kmmap_buf *b, unsigned long idx);
int kmmap_buf_mmap(struct kmmap_file *kf, struct vm_area_struct *vma);
void kmmap_fill_pattern(u8 *dst, size_t len, u64 seed, u64 start);
u64 kmmap_fnv1a(u64 h, const u8 *p, size_t len);

/* FNV-1a 64's offset basis: the hash of nothing. */
#define KMMAP_FNV1A_INIT	0xcbf29ce484222325ULL

void kmmap_pin_init(struct kmmap_pinned *pin);
int kmmap_pin(struct kmmap_pinned *pin, u64 addr, u64 length);
int kmmap_unpin(struct kmmap_pinned *pin);
int kmmap_pin_fill(struct kmmap_pinned *pin, u64 seed);
int kmmap_pin_wait(struct kmmap_pinned *pin);

void kmmap_ring_init(struct kmmap_ring *ring);
void kmmap_ring_attach(struct kmmap_ring *ring, void *buf, size_t size);
void kmmap_ring_stop(struct kmmap_ring *ring);
int kmmap_ring_emit(struct kmmap_ring *ring, u32 count);
int kmmap_ring_timer(struct kmmap_ring *ring, u32 count, u32 period_ms);
bool kmmap_ring_readable(struct kmmap_ring *ring);

#endif /* _KMMAP_INTERNAL_H */
