// SPDX-License-Identifier: GPL-2.0
/*
 * The buffer and its four backings: how its pages are allocated and how
 * mmap() puts them in front of userland.
 *
 * fault:  vmalloc_user() memory; the .fault handler hands the core mm one
 *        page per first touch, with a reference the mm drops when it
 *        unmaps it.
 * pfn:   physically contiguous pages from alloc_pages_exact(), mapped
 *        whole by remap_pfn_range().  Many drivers and tutorials call
 *        SetPageReserved() first: before 2.6.15 remap_page_range() refused
 *        to map pages that were not reserved.  remap_pfn_range() makes the
 *        VMA VM_IO | VM_PFNMAP, so the core mm never looks at these pages'
 *        struct page (no refcount, no rmap, no swap: kernel pages are never
 *        swapped anyway), and a reserved bit would only have to be cleared
 *        again before freeing.  So not here.
 * insert: pages allocated one by one, mapped whole by vm_insert_pages(),
 *        which takes a reference per page and keeps them ordinary, pagemap-
 *        visible pages; the kernel sees them through vmap().
 * ring:  like fault, with the ring header in the first page (ring.c).
 *
 * Every mapping must be MAP_SHARED (a private copy of a device buffer is
 * meaningless: writes would silently stop reaching the kernel), lie inside
 * the buffer, and never be executable.  fork() shares the mapping with the
 * child: both see the same pages.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/gfp.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>

#include "compat.h"
#include "internal.h"

void kmmap_fill_pattern(u8 *dst, size_t len, u64 seed, u64 start)
{
	size_t i;

	for (i = 0; i < len; i++)
		dst[i] = kmmap_pattern(seed, start + i);
}

/* FNV-1a, 64 bit, continued from h: simple enough for any userland. */
u64 kmmap_fnv1a(u64 h, const u8 *p, size_t len)
{
	while (len--) {
		h ^= *p++;
		h *= 0x100000001b3ULL;
	}
	return h;
}

/*
 * The buffer's memory: charged to the caller's memory cgroup, so a user
 * opening the device many times cannot escape its limit (see compat.h for
 * 5.10); zeroed, which Debian's kernels do anyway (init_on_alloc=1) but
 * others need not; and, since userland chooses the size, failing with
 * ENOMEM rather than invoking the OOM killer or warning.
 */
#define KMMAP_GFP_BUF	(GFP_KERNEL | KMMAP_GFP_USER_ACCOUNT | __GFP_ZERO | \
			 __GFP_RETRY_MAYFAIL | __GFP_NOWARN)

/* Allocate a zeroed buffer of npages into b. */
int kmmap_buf_alloc(struct kmmap_buf *b, enum kmmap_backing backing, unsigned long npages)
{
	size_t size = npages << PAGE_SHIFT;
	unsigned long i;

	memset(b, 0, sizeof(*b));
	switch (backing) {
	case KMMAP_BACKING_FAULT:
	case KMMAP_BACKING_RING:
		/*
		 * vmalloc_user() without its VM_USERMAP, which only
		 * remap_vmalloc_range() wants, and with the charge it cannot
		 * take: the fault handler maps these pages one by one.
		 */
		b->vaddr = __vmalloc(size, KMMAP_GFP_BUF);
		break;
	case KMMAP_BACKING_PFN:
		/*
		 * Contiguous: no larger than the buddy allocator's largest block
		 * (4 MiB with 4K pages); beyond it, ENOMEM.
		 */
		b->vaddr = alloc_pages_exact(size, KMMAP_GFP_BUF);
		break;
	case KMMAP_BACKING_INSERT:
		b->pages = kvcalloc(npages, sizeof(*b->pages), GFP_KERNEL_ACCOUNT | __GFP_NOWARN);
		if (!b->pages)
			return -ENOMEM;
		for (i = 0; i < npages; i++) {
			b->pages[i] = alloc_page(KMMAP_GFP_BUF);
			if (!b->pages[i])
				goto err_put_pages;
		}
		b->vaddr = vmap(b->pages, npages, VM_MAP, PAGE_KERNEL);
		if (!b->vaddr)
			goto err_put_pages;
		break;
	default:
		return -EINVAL;
	}
	if (!b->vaddr)
		return -ENOMEM;
	b->backing = backing;
	b->npages = npages;
	b->size = size;
	atomic_long_inc(&kmmap_live_buffers);
	return 0;

err_put_pages:
	while (i--)
		__free_page(b->pages[i]);
	kvfree(b->pages);
	b->pages = NULL;
	return -ENOMEM;
}

void kmmap_buf_free(struct kmmap_buf *b)
{
	unsigned long i;

	if (!b->vaddr)
		return;
	switch (b->backing) {
	case KMMAP_BACKING_FAULT:
	case KMMAP_BACKING_RING:
		vfree(b->vaddr);
		break;
	case KMMAP_BACKING_PFN:
		free_pages_exact(b->vaddr, b->size);
		break;
	case KMMAP_BACKING_INSERT:
		vunmap(b->vaddr);
		for (i = 0; i < b->npages; i++)
			__free_page(b->pages[i]);
		kvfree(b->pages);
		break;
	}
	memset(b, 0, sizeof(*b));
	atomic_long_dec(&kmmap_live_buffers);
}

struct page *kmmap_buf_page(const struct kmmap_buf *b, unsigned long idx)
{
	switch (b->backing) {
	case KMMAP_BACKING_PFN:
		return virt_to_page(b->vaddr + (idx << PAGE_SHIFT));
	case KMMAP_BACKING_INSERT:
		return b->pages[idx];
	default:
		return vmalloc_to_page(b->vaddr + (idx << PAGE_SHIFT));
	}
}

static void kmmap_vm_open(struct vm_area_struct *vma)
{
	struct kmmap_file *kf = vma->vm_private_data;

	atomic_inc(&kf->maps);
}

static void kmmap_vm_close(struct vm_area_struct *vma)
{
	struct kmmap_file *kf = vma->vm_private_data;

	atomic_dec(&kf->maps);
}

static vm_fault_t kmmap_fault(struct vm_fault *vmf)
{
	struct kmmap_file *kf = vmf->vma->vm_private_data;
	struct page *page;

	/* vmf->pgoff is the file offset in pages: vm_pgoff is already in it. */
	if (vmf->pgoff >= kf->buf.npages)
		return VM_FAULT_SIGBUS;
	page = kmmap_buf_page(&kf->buf, vmf->pgoff);
	get_page(page);	/* the core mm drops it when the page is unmapped */
	vmf->page = page;
	return 0;
}

static const struct vm_operations_struct kmmap_fault_vm_ops = {
	.open	= kmmap_vm_open,
	.close	= kmmap_vm_close,
	.fault	= kmmap_fault,
};

/* pfn and insert map everything up front: a fault there is a bug. */
static const struct vm_operations_struct kmmap_mapped_vm_ops = {
	.open	= kmmap_vm_open,
	.close	= kmmap_vm_close,
};

int kmmap_buf_mmap(struct kmmap_file *kf, struct vm_area_struct *vma)
{
	const struct kmmap_buf *b = &kf->buf;
	unsigned long pages = vma_pages(vma);
	unsigned long num = pages;
	int ret = 0;

	lockdep_assert_held(&kf->lock);
	/*
	 * MAP_SHARED, tested by VM_MAYSHARE: on a file opened read-only the
	 * core mm clears VM_SHARED (and VM_MAYWRITE) from a shared mapping,
	 * which can then never be written, so it is still the kernel's pages.
	 */
	if (!(vma->vm_flags & VM_MAYSHARE))
		return -EINVAL;
	if (vma->vm_flags & VM_EXEC)
		return -EPERM;
	/* Offset and length inside the buffer: the classic remap leak. */
	if (vma->vm_pgoff >= b->npages || pages > b->npages - vma->vm_pgoff)
		return -EINVAL;

	kmmap_vm_flags_clear(vma, VM_MAYEXEC);
	kmmap_vm_flags_set(vma, VM_DONTEXPAND | VM_DONTDUMP);
	vma->vm_private_data = kf;

	switch (b->backing) {
	case KMMAP_BACKING_FAULT:
	case KMMAP_BACKING_RING:
		vma->vm_ops = &kmmap_fault_vm_ops;
		break;
	case KMMAP_BACKING_PFN:
		vma->vm_ops = &kmmap_mapped_vm_ops;
		ret = remap_pfn_range(vma, vma->vm_start,
				      page_to_pfn(virt_to_page(b->vaddr)) + vma->vm_pgoff,
				      vma->vm_end - vma->vm_start, vma->vm_page_prot);
		break;
	case KMMAP_BACKING_INSERT:
		vma->vm_ops = &kmmap_mapped_vm_ops;
		ret = vm_insert_pages(vma, vma->vm_start, b->pages + vma->vm_pgoff, &num);
		break;
	}
	if (ret)
		return ret;
	atomic_inc(&kf->maps);
	return 0;
}
