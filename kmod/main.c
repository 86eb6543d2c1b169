// SPDX-License-Identifier: GPL-2.0
/*
 * kmmap - share memory between the kernel and userland, every way
 * practitioners do it, and prove it.
 *
 * Each open of /dev/kmmap owns a buffer with one of four backings (see
 * buffer.c), mapped into userland by mmap() and copied by read()/write();
 * a user range can be lent to the kernel (pin.c); the ring backing carries
 * kernel-to-user events (ring.c).
 *
 * Lifetime: a mapping holds a reference on the struct file, so ->release()
 * runs only after the last munmap() *and* the last close() (in any order,
 * in this process or a child that inherited either); the buffer is freed
 * there and never while mapped.  The file's ->owner pins the module, so it
 * cannot be unloaded while any file or mapping lives.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/capability.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/poll.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/stringify.h>
#include <linux/sysfs.h>
#include <linux/uaccess.h>

#include "compat.h"
#include "internal.h"

static unsigned int nr_pages = KMMAP_DEFAULT_PAGES;
module_param(nr_pages, uint, 0444);
MODULE_PARM_DESC(nr_pages, "pages in each new file's buffer (1-" __stringify(KMMAP_MAX_PAGES)
		 ", default " __stringify(KMMAP_DEFAULT_PAGES) ")");

atomic_long_t kmmap_live_buffers = ATOMIC_LONG_INIT(0);
atomic_long_t kmmap_pinned_pages = ATOMIC_LONG_INIT(0);

static int kmmap_counter_get(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%ld\n", atomic_long_read(kp->arg));
}

static const struct kernel_param_ops kmmap_counter_ops = {
	.get = kmmap_counter_get,
};

/* Leak detectors for tests: both are 0 whenever no file is open. */
module_param_cb(live_buffers, &kmmap_counter_ops, &kmmap_live_buffers, 0444);
MODULE_PARM_DESC(live_buffers, "buffers allocated and not yet freed");
module_param_cb(pinned_pages, &kmmap_counter_ops, &kmmap_pinned_pages, 0444);
MODULE_PARM_DESC(pinned_pages, "user pages pinned and not yet released");

/* The ABI: every argument's size is fixed, the same for 32- and 64-bit. */
static_assert(sizeof(struct kmmap_setup) == 16);
static_assert(sizeof(struct kmmap_info) == 40);
static_assert(sizeof(struct kmmap_range) == 40);
static_assert(sizeof(struct kmmap_pin) == 24);
static_assert(sizeof(struct kmmap_pin_fill) == 16);
static_assert(sizeof(struct kmmap_ring_ctl) == 16);
static_assert(sizeof(struct kmmap_ring_header) == 32);
static_assert(sizeof(struct kmmap_ring_record) == 64);
/* The ring as userland reads it, on every arch: no padding, 64-bit fields 8-aligned. */
static_assert(offsetof(struct kmmap_ring_header, tail) == 4);
static_assert(offsetof(struct kmmap_ring_header, nr_records) == 8);
static_assert(offsetof(struct kmmap_ring_header, dropped) == 16);
static_assert(offsetof(struct kmmap_ring_header, produced) == 24);
static_assert(offsetof(struct kmmap_ring_record, source) == 8);
static_assert(offsetof(struct kmmap_ring_record, len) == 12);
static_assert(offsetof(struct kmmap_ring_record, data) == 16);

/*
 * Work proportional to a user-chosen size is done this many bytes at a
 * time, with a chance to reschedule between.
 */
#define KMMAP_CHUNK	PAGE_SIZE

static int kmmap_open(struct inode *inode, struct file *file)
{
	struct kmmap_file *kf;
	int ret;

	kf = kmmap_kzalloc_obj(*kf, GFP_KERNEL_ACCOUNT);
	if (!kf)
		return -ENOMEM;
	mutex_init(&kf->lock);
	atomic_set(&kf->maps, 0);
	atomic_set(&kf->users, 0);
	kmmap_pin_init(&kf->pin);
	kmmap_ring_init(&kf->ring);
	ret = kmmap_buf_alloc(&kf->buf, KMMAP_BACKING_FAULT, nr_pages);
	if (ret) {
		kfree(kf);
		return ret;
	}
	file->private_data = kf;
	return 0;
}

static int kmmap_release(struct inode *inode, struct file *file)
{
	struct kmmap_file *kf = file->private_data;

	/* No mapping is left (each held the file), and no ioctl can run. */
	kmmap_ring_stop(&kf->ring);
	kmmap_unpin(&kf->pin);
	kmmap_buf_free(&kf->buf);
	mutex_destroy(&kf->pin.mutex);
	mutex_destroy(&kf->lock);
	kfree(kf);
	return 0;
}

static int kmmap_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct kmmap_file *kf = file->private_data;
	int ret;

	mutex_lock(&kf->lock);
	ret = kmmap_buf_mmap(kf, vma);
	mutex_unlock(&kf->lock);
	return ret;
}

/*
 * kmmap_get_buf() takes a reference that keeps the buffer in place while
 * user memory is accessed, or long work done, without kf->lock;
 * kmmap_put_buf() drops it.
 */
static void kmmap_get_buf(struct kmmap_file *kf)
{
	mutex_lock(&kf->lock);
	atomic_inc(&kf->users);
	mutex_unlock(&kf->lock);
}

static void kmmap_put_buf(struct kmmap_file *kf)
{
	atomic_dec(&kf->users);
}

/* The file is as long as its buffer: SEEK_END counts from its end. */
static loff_t kmmap_llseek(struct file *file, loff_t offset, int whence)
{
	struct kmmap_file *kf = file->private_data;
	loff_t ret;

	kmmap_get_buf(kf);
	ret = fixed_size_llseek(file, offset, whence, kf->buf.size);
	kmmap_put_buf(kf);
	return ret;
}

/*
 * The copy path: read() and write() at the file position, for comparison.
 * A copy that faults part way is short, as for a file; one that copies
 * nothing fails with EFAULT. Writing at or past the end is ENOSPC.
 */
static ssize_t kmmap_read(struct file *file, char __user *ubuf, size_t len, loff_t *ppos)
{
	struct kmmap_file *kf = file->private_data;
	ssize_t ret;

	kmmap_get_buf(kf);
	ret = simple_read_from_buffer(ubuf, len, ppos, kf->buf.vaddr, kf->buf.size);
	kmmap_put_buf(kf);
	return ret;
}

static ssize_t kmmap_write(struct file *file, const char __user *ubuf, size_t len, loff_t *ppos)
{
	struct kmmap_file *kf = file->private_data;
	ssize_t ret;

	kmmap_get_buf(kf);
	if (len && *ppos >= (loff_t)kf->buf.size)
		ret = -ENOSPC;
	else
		ret = simple_write_to_buffer(kf->buf.vaddr, kf->buf.size, ppos, ubuf, len);
	kmmap_put_buf(kf);
	return ret;
}

static __poll_t kmmap_poll(struct file *file, struct poll_table_struct *wait)
{
	struct kmmap_file *kf = file->private_data;

	poll_wait(file, &kf->ring.wq, wait);
	return kmmap_ring_readable(&kf->ring) ? EPOLLIN | EPOLLRDNORM : 0;
}

/*
 * Physical addresses only for a file opened with CAP_SYS_ADMIN, as
 * /proc/PID/pagemap decides (since 4.0: they help Rowhammer).
 */
static long kmmap_ioctl_info(struct file *file, struct kmmap_file *kf, void __user *uarg)
{
	bool show_pfn = file_ns_capable(file, &init_user_ns, CAP_SYS_ADMIN);
	struct kmmap_info info;
	u64 __user *upfns;
	unsigned long i, n;

	if (copy_from_user(&info, uarg, sizeof(info)))
		return -EFAULT;
	if (info.flags || info.reserved)
		return -EINVAL;
	upfns = u64_to_user_ptr(info.pfns);
	n = upfns ? min_t(unsigned long, info.pfns_len, kf->buf.npages) : 0;
	for (i = 0; i < n; i++) {
		u64 pfn = show_pfn ? page_to_pfn(kmmap_buf_page(&kf->buf, i)) : 0;

		if (put_user(pfn, upfns + i))
			return -EFAULT;
		if (!(i % 512))
			cond_resched();
	}
	info.size = kf->buf.size;
	info.page_size = PAGE_SIZE;
	info.nr_pages = kf->buf.npages;
	info.backing = kf->buf.backing;
	if (copy_to_user(uarg, &info, sizeof(info)))
		return -EFAULT;
	return 0;
}

/*
 * The new buffer is allocated before the old one is touched: a SETUP that
 * fails for any reason leaves the file, its ring and its timer as they
 * were.
 */
static long kmmap_ioctl_setup(struct kmmap_file *kf, void __user *uarg)
{
	struct kmmap_buf nb, old;
	struct kmmap_setup s;
	long ret;

	if (copy_from_user(&s, uarg, sizeof(s)))
		return -EFAULT;
	if (s.flags || s.reserved)
		return -EINVAL;
	if (s.backing > KMMAP_BACKING_RING || s.nr_pages < 1 || s.nr_pages > KMMAP_MAX_PAGES)
		return -EINVAL;
	if (s.backing == KMMAP_BACKING_RING && s.nr_pages < 2)
		return -EINVAL;	/* a header page and at least one page of records */
	ret = kmmap_buf_alloc(&nb, s.backing, s.nr_pages);
	if (ret)
		return ret;
	mutex_lock(&kf->lock);
	if (atomic_read(&kf->maps) || atomic_read(&kf->users)) {
		mutex_unlock(&kf->lock);
		kmmap_buf_free(&nb);
		return -EBUSY;	/* the old buffer is still mapped, or in use */
	}
	kmmap_ring_stop(&kf->ring);
	old = kf->buf;
	kf->buf = nb;
	if (nb.backing == KMMAP_BACKING_RING)
		kmmap_ring_attach(&kf->ring, nb.vaddr, nb.size);
	mutex_unlock(&kf->lock);
	kmmap_buf_free(&old);
	return 0;
}

/*
 * FILL and CHECKSUM: up to KMMAP_MAX_PAGES pages of work, done a chunk at
 * a time with a chance to reschedule between, under a reference on the
 * buffer rather than kf->lock (which mmap() waits for).
 */
static long kmmap_ioctl_range(struct kmmap_file *kf, unsigned int cmd, void __user *uarg)
{
	struct kmmap_range r;
	u64 done, h = KMMAP_FNV1A_INIT;
	long ret = 0;

	if (copy_from_user(&r, uarg, sizeof(r)))
		return -EFAULT;
	if (r.flags || r.reserved)
		return -EINVAL;
	kmmap_get_buf(kf);
	/* Written so that offset + length cannot overflow. */
	if (r.offset > kf->buf.size || r.length > kf->buf.size - r.offset) {
		ret = -EINVAL;
		goto out;
	}
	for (done = 0; done < r.length; done += KMMAP_CHUNK) {
		size_t n = min_t(u64, r.length - done, KMMAP_CHUNK);
		u8 *p = kf->buf.vaddr + r.offset + done;

		if (cmd == KMMAP_IOC_FILL)
			kmmap_fill_pattern(p, n, r.seed, done);
		else
			h = kmmap_fnv1a(h, p, n);
		cond_resched();
	}
	r.sum = h;
out:
	kmmap_put_buf(kf);
	if (ret || cmd == KMMAP_IOC_FILL)
		return ret;
	return copy_to_user(uarg, &r, sizeof(r)) ? -EFAULT : 0;
}

/*
 * EMIT produces up to 2^20 records: under a buffer reference, not
 * kf->lock.  TIMER is short, and two of them must not interleave their
 * settings with the timer's start or stop: under kf->lock, as before.
 */
static long kmmap_ioctl_ring(struct kmmap_file *kf, unsigned int cmd, void __user *uarg)
{
	struct kmmap_ring_ctl rc;
	long ret;

	if (copy_from_user(&rc, uarg, sizeof(rc)))
		return -EFAULT;
	if (rc.flags || rc.reserved)
		return -EINVAL;
	if (cmd == KMMAP_IOC_RING_TIMER) {
		mutex_lock(&kf->lock);
		if (kf->buf.backing != KMMAP_BACKING_RING)
			ret = -EINVAL;
		else
			ret = kmmap_ring_timer(&kf->ring, rc.count, rc.period_ms);
		mutex_unlock(&kf->lock);
		return ret;
	}
	kmmap_get_buf(kf);
	if (kf->buf.backing != KMMAP_BACKING_RING)
		ret = -EINVAL;
	else
		ret = kmmap_ring_emit(&kf->ring, rc.count);
	kmmap_put_buf(kf);
	return ret;
}

static long kmmap_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct kmmap_file *kf = file->private_data;
	void __user *uarg = (void __user *)arg;
	struct kmmap_pin_fill pf;
	struct kmmap_pin p;
	long ret;

	/*
	 * Lock order: mmap_lock, then kf->lock (mmap() is called with
	 * mmap_lock held).  So user memory - which can fault and take
	 * mmap_lock - is copied before kf->lock is taken or after it is
	 * dropped, and pinning has its own mutex.
	 */
	switch (cmd) {
	case KMMAP_IOC_PIN_WAIT:	/* must not hold the mutex UNPIN needs */
		return kmmap_pin_wait(&kf->pin);
	case KMMAP_IOC_INFO:
		kmmap_get_buf(kf);
		ret = kmmap_ioctl_info(file, kf, uarg);
		kmmap_put_buf(kf);
		break;
	case KMMAP_IOC_SETUP:
		ret = kmmap_ioctl_setup(kf, uarg);
		break;
	case KMMAP_IOC_FILL:
	case KMMAP_IOC_CHECKSUM:
		ret = kmmap_ioctl_range(kf, cmd, uarg);
		break;
	case KMMAP_IOC_PIN:
		if (copy_from_user(&p, uarg, sizeof(p)))
			ret = -EFAULT;
		else if (p.flags || p.reserved)
			ret = -EINVAL;
		else
			ret = kmmap_pin(&kf->pin, p.addr, p.length);
		break;
	case KMMAP_IOC_UNPIN:
		ret = kmmap_unpin(&kf->pin);
		break;
	case KMMAP_IOC_PIN_FILL:
		if (copy_from_user(&pf, uarg, sizeof(pf)))
			ret = -EFAULT;
		else if (pf.flags || pf.reserved)
			ret = -EINVAL;
		else
			ret = kmmap_pin_fill(&kf->pin, pf.seed);
		break;
	case KMMAP_IOC_RING_EMIT:
	case KMMAP_IOC_RING_TIMER:
		ret = kmmap_ioctl_ring(kf, cmd, uarg);
		break;
	default:
		ret = -ENOTTY;
	}
	return ret;
}

static const struct file_operations kmmap_fops = {
	.owner		= THIS_MODULE,
	.open		= kmmap_open,
	.release	= kmmap_release,
	.read		= kmmap_read,
	.write		= kmmap_write,
	.mmap		= kmmap_mmap,
	.poll		= kmmap_poll,
	.unlocked_ioctl	= kmmap_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
	.llseek		= kmmap_llseek,
};

static struct miscdevice kmmap_misc = {
	.minor	= MISC_DYNAMIC_MINOR,
	.name	= "kmmap",
	.fops	= &kmmap_fops,
	.mode	= 0666,
};

static int __init kmmap_init(void)
{
	if (nr_pages < 1 || nr_pages > KMMAP_MAX_PAGES) {
		pr_err("nr_pages=%u out of range 1..%d\n", nr_pages, KMMAP_MAX_PAGES);
		return -EINVAL;
	}
	return misc_register(&kmmap_misc);
}

static void __exit kmmap_exit(void)
{
	misc_deregister(&kmmap_misc);
}

module_init(kmmap_init);
module_exit(kmmap_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Share memory between the kernel and userland: fault, pfn, insert, pinned and ring");
