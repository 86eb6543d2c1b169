// SPDX-License-Identifier: GPL-2.0
/*
 * kmmap - share kernel memory with userland, and prove it.
 *
 * Each open of /dev/kmmap gets its own zeroed buffer from vmalloc_user().
 * mmap() maps it lazily: the .fault handler hands the page at the faulting
 * offset to the core mm, which maps it (the design of seed 003).  read() and
 * write() copy to and from the same buffer, so userland can check that what
 * it wrote through a mapping is what the kernel holds, and the reverse.
 *
 * Lifetime: a mapping holds a reference on the struct file, so ->release()
 * runs only after the last munmap() *and* the last close(); the buffer is
 * freed there and never while mapped.  The file's ->owner pins the module.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/overflow.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>

#include <uapi/kmmap.h>

#include "compat.h"

#define KMMAP_MAX_PAGES	1024

static unsigned int nr_pages = KMMAP_DEFAULT_PAGES;
module_param(nr_pages, uint, 0444);
MODULE_PARM_DESC(nr_pages, "pages in each open file's buffer (1-1024, default 4)");

struct kmmap_file {
	struct mutex lock;	/* serialises read/write/ioctl on this file */
	void *buf;		/* vmalloc_user(): zeroed, page aligned */
	unsigned long npages;
	size_t size;
};

static vm_fault_t kmmap_fault(struct vm_fault *vmf)
{
	struct kmmap_file *kf = vmf->vma->vm_private_data;
	struct page *page;

	/* vmf->pgoff is the file offset in pages: vm_pgoff is already in it. */
	if (vmf->pgoff >= kf->npages)
		return VM_FAULT_SIGBUS;

	page = vmalloc_to_page(kf->buf + (vmf->pgoff << PAGE_SHIFT));
	if (!page)
		return VM_FAULT_SIGBUS;
	/* The core mm drops this reference when the page is unmapped. */
	get_page(page);
	vmf->page = page;
	return 0;
}

static const struct vm_operations_struct kmmap_vm_ops = {
	.fault = kmmap_fault,
};

static int kmmap_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct kmmap_file *kf = file->private_data;
	unsigned long pages = vma_pages(vma);

	/* Offset and length must both fall inside the buffer. */
	if (vma->vm_pgoff >= kf->npages || pages > kf->npages - vma->vm_pgoff)
		return -EINVAL;
	if (vma->vm_flags & VM_EXEC)
		return -EPERM;

	/* Never executable; never grown by mremap(); not in core dumps. */
	kmmap_vm_flags_clear(vma, VM_MAYEXEC);
	kmmap_vm_flags_set(vma, VM_DONTEXPAND | VM_DONTDUMP);
	vma->vm_private_data = kf;
	vma->vm_ops = &kmmap_vm_ops;
	return 0;
}

static int kmmap_open(struct inode *inode, struct file *file)
{
	struct kmmap_file *kf;

	kf = kzalloc(sizeof(*kf), GFP_KERNEL);
	if (!kf)
		return -ENOMEM;
	kf->npages = nr_pages;
	kf->size = (size_t)nr_pages << PAGE_SHIFT;
	kf->buf = vmalloc_user(kf->size);
	if (!kf->buf) {
		kfree(kf);
		return -ENOMEM;
	}
	mutex_init(&kf->lock);
	file->private_data = kf;
	return 0;
}

static int kmmap_release(struct inode *inode, struct file *file)
{
	struct kmmap_file *kf = file->private_data;

	vfree(kf->buf);
	mutex_destroy(&kf->lock);
	kfree(kf);
	return 0;
}

static ssize_t kmmap_read(struct file *file, char __user *ubuf, size_t len, loff_t *ppos)
{
	struct kmmap_file *kf = file->private_data;
	loff_t pos = *ppos;
	ssize_t ret;

	if (pos < 0)
		return -EINVAL;
	if (pos >= kf->size)
		return 0;
	len = min_t(size_t, len, kf->size - pos);

	mutex_lock(&kf->lock);
	if (copy_to_user(ubuf, kf->buf + pos, len)) {
		ret = -EFAULT;
	} else {
		*ppos = pos + len;
		ret = len;
	}
	mutex_unlock(&kf->lock);
	return ret;
}

static ssize_t kmmap_write(struct file *file, const char __user *ubuf, size_t len, loff_t *ppos)
{
	struct kmmap_file *kf = file->private_data;
	loff_t pos = *ppos;
	ssize_t ret;

	if (pos < 0)
		return -EINVAL;
	if (pos >= kf->size)
		return len ? -ENOSPC : 0;
	len = min_t(size_t, len, kf->size - pos);

	mutex_lock(&kf->lock);
	if (copy_from_user(kf->buf + pos, ubuf, len)) {
		ret = -EFAULT;
	} else {
		*ppos = pos + len;
		ret = len;
	}
	mutex_unlock(&kf->lock);
	return ret;
}

static long kmmap_ioctl_info(struct kmmap_file *kf, void __user *uarg)
{
	struct kmmap_info info;
	u64 __user *upfns;
	unsigned long i, n;

	if (copy_from_user(&info, uarg, sizeof(info)))
		return -EFAULT;
	if (info.reserved)
		return -EINVAL;

	upfns = u64_to_user_ptr(info.pfns);
	n = upfns ? min_t(unsigned long, info.pfns_len, kf->npages) : 0;
	for (i = 0; i < n; i++) {
		u64 pfn = page_to_pfn(vmalloc_to_page(kf->buf + (i << PAGE_SHIFT)));

		if (put_user(pfn, upfns + i))
			return -EFAULT;
	}

	info.size = kf->size;
	info.page_size = PAGE_SIZE;
	info.nr_pages = kf->npages;
	if (copy_to_user(uarg, &info, sizeof(info)))
		return -EFAULT;
	return 0;
}

static long kmmap_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct kmmap_file *kf = file->private_data;
	long ret;

	switch (cmd) {
	case KMMAP_IOC_INFO:
		mutex_lock(&kf->lock);
		ret = kmmap_ioctl_info(kf, (void __user *)arg);
		mutex_unlock(&kf->lock);
		return ret;
	default:
		return -ENOTTY;
	}
}

static const struct file_operations kmmap_fops = {
	.owner		= THIS_MODULE,
	.open		= kmmap_open,
	.release	= kmmap_release,
	.read		= kmmap_read,
	.write		= kmmap_write,
	.mmap		= kmmap_mmap,
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
MODULE_DESCRIPTION("Share kernel pages with userland (fault-mapped vmalloc_user buffer)");
