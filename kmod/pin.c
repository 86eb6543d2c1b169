// SPDX-License-Identifier: GPL-2.0
/*
 * The pinned backing: userland lends the kernel a range of its own memory.
 *
 * The naive way writes through a raw user pointer from write(), which
 * works only in that process's context, only while the call lasts, and
 * only if the page happens to be present.  Here the pages are pinned
 * (pin_user_pages_fast with FOLL_LONGTERM: they cannot move or be reclaimed
 * while the kernel holds them), and a worker - another thread, outside the
 * process's context - writes through kmap_local_page(), asynchronously.
 * The pages are unpinned (and marked dirty) on KMMAP_IOC_UNPIN, on close()
 * and so on process exit, only after the worker has finished.
 *
 * A long-term pin is locked memory: it is charged to the pinning process's
 * mm->pinned_vm against RLIMIT_MEMLOCK, as RDMA's ib_umem and io_uring do,
 * and uncharged from that same mm whoever unpins.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/capability.h>
#include <linux/highmem.h>
#include <linux/sched/mm.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>

#include "compat.h"
#include "internal.h"

static void kmmap_pin_work(struct work_struct *work)
{
	struct kmmap_pinned *pin = container_of(work, struct kmmap_pinned, work);
	unsigned long i, target;
	size_t written = 0;
	u64 seed;

	spin_lock(&pin->lock);
	seed = pin->seed;
	target = pin->requested;
	spin_unlock(&pin->lock);

	for (i = 0; i < pin->npages; i++) {
		size_t off = i ? 0 : pin->offset;
		size_t n = min_t(size_t, PAGE_SIZE - off, pin->length - written);
		u8 *kaddr = kmmap_kmap_local(pin->pages[i]);

		kmmap_fill_pattern(kaddr + off, n, seed, written);
		/* As memcpy_to_page(): visible to userland's aliases too. */
		flush_dcache_page(pin->pages[i]);
		kmmap_kunmap_local(kaddr);
		written += n;
		cond_resched();
	}

	spin_lock(&pin->lock);
	pin->done = target;
	spin_unlock(&pin->lock);
	wake_up_all(&pin->wq);
}

void kmmap_pin_init(struct kmmap_pinned *pin)
{
	INIT_WORK(&pin->work, kmmap_pin_work);
	mutex_init(&pin->mutex);
	spin_lock_init(&pin->lock);
	init_waitqueue_head(&pin->wq);
}

/* Charge npages to current's pinned_vm, within RLIMIT_MEMLOCK. */
static int kmmap_pin_charge(struct kmmap_pinned *pin, unsigned long npages)
{
	struct mm_struct *mm = current->mm;
	unsigned long limit = rlimit(RLIMIT_MEMLOCK) >> PAGE_SHIFT;
	s64 pinned = atomic64_add_return(npages, &mm->pinned_vm);

	if (pinned > limit && !capable(CAP_IPC_LOCK)) {
		atomic64_sub(npages, &mm->pinned_vm);
		return -ENOMEM;
	}
	mmgrab(mm);
	pin->mm = mm;
	return 0;
}

static void kmmap_pin_uncharge(struct kmmap_pinned *pin, unsigned long npages)
{
	atomic64_sub(npages, &pin->mm->pinned_vm);
	mmdrop(pin->mm);
	pin->mm = NULL;
}

static int kmmap_pin_locked(struct kmmap_pinned *pin, u64 addr, u64 length)
{
	unsigned long start = addr & PAGE_MASK, npages;
	struct page **pages;
	int got, ret;

	lockdep_assert_held(&pin->mutex);
	if (pin->pages)
		return -EBUSY;
	if (!length || addr + length < addr)
		return -EINVAL;
	if (length > (u64)KMMAP_MAX_PAGES << PAGE_SHIFT)
		return -EINVAL;
	npages = DIV_ROUND_UP(offset_in_page(addr) + length, PAGE_SIZE);

	pages = kvcalloc(npages, sizeof(*pages), GFP_KERNEL_ACCOUNT);
	if (!pages)
		return -ENOMEM;
	ret = kmmap_pin_charge(pin, npages);
	if (ret)
		goto err_free;
	got = pin_user_pages_fast(start, npages, FOLL_WRITE | FOLL_LONGTERM, pages);
	if (got < 0 || got < npages) {
		/* All or nothing: a range that faults part way pins no page. */
		if (got > 0)
			unpin_user_pages(pages, got);
		ret = got < 0 ? got : -EFAULT;
		kmmap_pin_uncharge(pin, npages);
		goto err_free;
	}
	pin->pages = pages;
	pin->npages = npages;
	atomic_long_add(npages, &kmmap_pinned_pages);
	pin->offset = offset_in_page(addr);
	pin->length = length;
	return 0;

err_free:
	kvfree(pages);
	return ret;
}

int kmmap_pin(struct kmmap_pinned *pin, u64 addr, u64 length)
{
	int ret;

	mutex_lock(&pin->mutex);
	ret = kmmap_pin_locked(pin, addr, length);
	mutex_unlock(&pin->mutex);
	return ret;
}

int kmmap_unpin(struct kmmap_pinned *pin)
{
	int ret = 0;

	mutex_lock(&pin->mutex);
	if (pin->pages) {
		flush_work(&pin->work);
		unpin_user_pages_dirty_lock(pin->pages, pin->npages, true);
		kmmap_pin_uncharge(pin, pin->npages);
		atomic_long_sub(pin->npages, &kmmap_pinned_pages);
		kvfree(pin->pages);
		pin->pages = NULL;
		pin->npages = 0;
	} else {
		ret = -EINVAL;
	}
	mutex_unlock(&pin->mutex);
	return ret;
}

int kmmap_pin_fill(struct kmmap_pinned *pin, u64 seed)
{
	int ret = 0;

	mutex_lock(&pin->mutex);
	if (pin->pages) {
		spin_lock(&pin->lock);
		pin->seed = seed;
		pin->requested++;
		spin_unlock(&pin->lock);
		queue_work(kmmap_unbound_wq, &pin->work);
	} else {
		ret = -EINVAL;
	}
	mutex_unlock(&pin->mutex);
	return ret;
}

static bool kmmap_pin_idle(struct kmmap_pinned *pin)
{
	bool idle;

	spin_lock(&pin->lock);
	idle = pin->done == pin->requested;
	spin_unlock(&pin->lock);
	return idle;
}

int kmmap_pin_wait(struct kmmap_pinned *pin)
{
	return wait_event_interruptible(pin->wq, kmmap_pin_idle(pin));
}
