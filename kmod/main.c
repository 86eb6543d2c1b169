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

#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/poll.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

#include "compat.h"
#include "internal.h"

static unsigned int nr_pages = KMMAP_DEFAULT_PAGES;
module_param(nr_pages, uint, 0444);
MODULE_PARM_DESC(nr_pages, "pages in each new file's buffer (1-1024, default 4)");

atomic_long_t kmmap_live_buffers = ATOMIC_LONG_INIT(0);
atomic_long_t kmmap_pinned_pages = ATOMIC_LONG_INIT(0);

static int kmmap_counter_get(char *buf, const struct kernel_param *kp)
{
	return scnprintf(buf, PAGE_SIZE, "%ld\n", atomic_long_read(kp->arg));
}

static const struct kernel_param_ops kmmap_counter_ops = {
	.get = kmmap_counter_get,
};

/* Leak detectors for tests: both are 0 whenever no file is open. */
module_param_cb(live_buffers, &kmmap_counter_ops, &kmmap_live_buffers, 0444);
MODULE_PARM_DESC(live_buffers, "buffers allocated and not yet freed");
module_param_cb(pinned_pages, &kmmap_counter_ops, &kmmap_pinned_pages, 0444);
MODULE_PARM_DESC(pinned_pages, "user pages pinned and not yet released");

static int kmmap_open(struct inode *inode, struct file *file)
{
	struct kmmap_file *kf;
	int ret;

	kf = kzalloc_obj(*kf, GFP_KERNEL);
	if (!kf)
		return -ENOMEM;
	mutex_init(&kf->lock);
	atomic_set(&kf->maps, 0);
	atomic_set(&kf->users, 0);
	kmmap_pin_init(&kf->pin);
	kmmap_ring_init(&kf->ring);
	ret = kmmap_buf_alloc(kf, KMMAP_BACKING_FAULT, nr_pages);
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
	kmmap_buf_free(kf);
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
 * user memory is accessed without kf->lock; kmmap_put_buf() drops it.
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
	ret = simple_read_from_buffer(ubuf, len, ppos, kf->buf, kf->size);
	kmmap_put_buf(kf);
	return ret;
}

static ssize_t kmmap_write(struct file *file, const char __user *ubuf, size_t len, loff_t *ppos)
{
	struct kmmap_file *kf = file->private_data;
	ssize_t ret;

	kmmap_get_buf(kf);
	if (len && *ppos >= (loff_t)kf->size)
		ret = -ENOSPC;
	else
		ret = simple_write_to_buffer(kf->buf, kf->size, ppos, ubuf, len);
	kmmap_put_buf(kf);
	return ret;
}

static __poll_t kmmap_poll(struct file *file, struct poll_table_struct *wait)
{
	struct kmmap_file *kf = file->private_data;

	poll_wait(file, &kf->ring.wq, wait);
	return kmmap_ring_readable(&kf->ring) ? EPOLLIN | EPOLLRDNORM : 0;
}

static long kmmap_ioctl_info(struct kmmap_file *kf, void __user *uarg)
{
	struct kmmap_info info;
	u64 __user *upfns;
	unsigned long i, n;

	if (copy_from_user(&info, uarg, sizeof(info)))
		return -EFAULT;
	upfns = u64_to_user_ptr(info.pfns);
	n = upfns ? min_t(unsigned long, info.pfns_len, kf->npages) : 0;
	for (i = 0; i < n; i++) {
		if (put_user((u64)page_to_pfn(kmmap_buf_page(kf, i)), upfns + i))
			return -EFAULT;
	}
	info.size = kf->size;
	info.page_size = PAGE_SIZE;
	info.nr_pages = kf->npages;
	info.backing = kf->backing;
	if (copy_to_user(uarg, &info, sizeof(info)))
		return -EFAULT;
	return 0;
}

static long kmmap_ioctl_setup(struct kmmap_file *kf, void __user *uarg)
{
	struct kmmap_setup s;
	long ret;

	if (copy_from_user(&s, uarg, sizeof(s)))
		return -EFAULT;
	if (s.backing > KMMAP_BACKING_RING || s.nr_pages < 1 || s.nr_pages > KMMAP_MAX_PAGES)
		return -EINVAL;
	if (s.backing == KMMAP_BACKING_RING && s.nr_pages < 2)
		return -EINVAL;	/* a header page and at least one page of records */
	mutex_lock(&kf->lock);
	if (atomic_read(&kf->maps) || atomic_read(&kf->users)) {
		ret = -EBUSY;	/* the old buffer is still mapped, or being copied */
	} else {
		kmmap_ring_stop(&kf->ring);
		kmmap_buf_free(kf);
		ret = kmmap_buf_alloc(kf, s.backing, s.nr_pages);
	}
	mutex_unlock(&kf->lock);
	return ret;
}

/* FNV-1a, 64 bit: simple enough for any userland to recompute. */
static u64 kmmap_fnv1a(const u8 *p, size_t len)
{
	u64 h = 0xcbf29ce484222325ULL;

	while (len--) {
		h ^= *p++;
		h *= 0x100000001b3ULL;
	}
	return h;
}

static long kmmap_ioctl_range(struct kmmap_file *kf, unsigned int cmd, void __user *uarg)
{
	struct kmmap_range r;

	if (copy_from_user(&r, uarg, sizeof(r)))
		return -EFAULT;
	mutex_lock(&kf->lock);
	/* Written so that offset + length cannot overflow. */
	if (r.offset > kf->size || r.length > kf->size - r.offset) {
		mutex_unlock(&kf->lock);
		return -EINVAL;
	}
	if (cmd == KMMAP_IOC_FILL)
		kmmap_fill_pattern(kf->buf + r.offset, r.length, r.seed, 0);
	else
		r.sum = kmmap_fnv1a(kf->buf + r.offset, r.length);
	mutex_unlock(&kf->lock);
	if (cmd == KMMAP_IOC_FILL)
		return 0;
	return copy_to_user(uarg, &r, sizeof(r)) ? -EFAULT : 0;
}

static long kmmap_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct kmmap_file *kf = file->private_data;
	void __user *uarg = (void __user *)arg;
	struct kmmap_ring_ctl rc;
	struct kmmap_pin p;
	u64 seed;
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
		ret = kmmap_ioctl_info(kf, uarg);
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
		else
			ret = kmmap_pin(&kf->pin, p.addr, p.length);
		break;
	case KMMAP_IOC_UNPIN:
		ret = kmmap_unpin(&kf->pin);
		break;
	case KMMAP_IOC_PIN_FILL:
		ret = get_user(seed, (u64 __user *)uarg) ? -EFAULT : kmmap_pin_fill(&kf->pin, seed);
		break;
	case KMMAP_IOC_RING_EMIT:
	case KMMAP_IOC_RING_TIMER:
		if (copy_from_user(&rc, uarg, sizeof(rc)))
			return -EFAULT;
		mutex_lock(&kf->lock);
		if (kf->backing != KMMAP_BACKING_RING)
			ret = -EINVAL;
		else if (cmd == KMMAP_IOC_RING_EMIT)
			ret = kmmap_ring_emit(&kf->ring, rc.count);
		else
			ret = kmmap_ring_timer(&kf->ring, rc.count, rc.period_ms);
		mutex_unlock(&kf->lock);
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
	.llseek		= default_llseek,
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
