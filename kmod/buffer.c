// SPDX-License-Identifier: GPL-2.0
/*
 * The buffer and its four backings: how its pages are allocated and how
 * mmap() puts them in front of userland.
 *
 * fault  (seed 003): vmalloc_user() memory; the .fault handler hands the core
 *        mm one page per first touch, with a reference the mm drops when it
 *        unmaps it.
 * pfn    (seed 001): physically contiguous pages from alloc_pages_exact(),
 *        mapped whole by remap_pfn_range().  Seed 003 asks why drivers call
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

int kmmap_buf_alloc(struct kmmap_file *kf, enum kmmap_backing backing, unsigned long npages)
{
	size_t size = npages << PAGE_SHIFT;
	unsigned long i;

	switch (backing) {
	case KMMAP_BACKING_FAULT:
	case KMMAP_BACKING_RING:
		kf->buf = vmalloc_user(size);	/* zeroed */
		break;
	case KMMAP_BACKING_PFN:
		/*
		 * Contiguous: no larger than the buddy allocator's largest block
		 * (4 MiB with 4K pages); beyond it, ENOMEM without a warning.
		 */
		kf->buf = alloc_pages_exact(size, GFP_KERNEL | __GFP_ZERO | __GFP_NOWARN);
		break;
	case KMMAP_BACKING_INSERT:
		kf->pages = kvcalloc(npages, sizeof(*kf->pages), GFP_KERNEL);
		if (!kf->pages)
			return -ENOMEM;
		for (i = 0; i < npages; i++) {
			kf->pages[i] = alloc_page(GFP_KERNEL | __GFP_ZERO);
			if (!kf->pages[i])
				goto free_pages;
		}
		kf->buf = vmap(kf->pages, npages, VM_MAP, PAGE_KERNEL);
		if (!kf->buf)
			goto free_pages;
		break;
	default:
		return -EINVAL;
	}
	if (!kf->buf)
		return -ENOMEM;
	kf->backing = backing;
	kf->npages = npages;
	kf->size = size;
	atomic_long_inc(&kmmap_live_buffers);
	if (backing == KMMAP_BACKING_RING)
		kmmap_ring_attach(&kf->ring, kf->buf, size);
	return 0;

free_pages:
	while (i--)
		__free_page(kf->pages[i]);
	kvfree(kf->pages);
	kf->pages = NULL;
	return -ENOMEM;
}

void kmmap_buf_free(struct kmmap_file *kf)
{
	unsigned long i;

	if (!kf->buf)
		return;
	switch (kf->backing) {
	case KMMAP_BACKING_FAULT:
	case KMMAP_BACKING_RING:
		vfree(kf->buf);
		break;
	case KMMAP_BACKING_PFN:
		free_pages_exact(kf->buf, kf->size);
		break;
	case KMMAP_BACKING_INSERT:
		vunmap(kf->buf);
		for (i = 0; i < kf->npages; i++)
			__free_page(kf->pages[i]);
		kvfree(kf->pages);
		kf->pages = NULL;
		break;
	}
	kf->buf = NULL;
	kf->size = 0;
	kf->npages = 0;
	atomic_long_dec(&kmmap_live_buffers);
}

struct page *kmmap_buf_page(struct kmmap_file *kf, unsigned long idx)
{
	switch (kf->backing) {
	case KMMAP_BACKING_PFN:
		return virt_to_page(kf->buf + (idx << PAGE_SHIFT));
	case KMMAP_BACKING_INSERT:
		return kf->pages[idx];
	default:
		return vmalloc_to_page(kf->buf + (idx << PAGE_SHIFT));
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
	if (vmf->pgoff >= kf->npages)
		return VM_FAULT_SIGBUS;
	page = kmmap_buf_page(kf, vmf->pgoff);
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
	unsigned long pages = vma_pages(vma);
	unsigned long num = pages;
	int ret = 0;

	if (!(vma->vm_flags & VM_SHARED))
		return -EINVAL;
	if (vma->vm_flags & VM_EXEC)
		return -EPERM;
	/* Offset and length inside the buffer: the classic remap leak. */
	if (vma->vm_pgoff >= kf->npages || pages > kf->npages - vma->vm_pgoff)
		return -EINVAL;

	kmmap_vm_flags_clear(vma, VM_MAYEXEC);
	kmmap_vm_flags_set(vma, VM_DONTEXPAND | VM_DONTDUMP);
	vma->vm_private_data = kf;

	switch (kf->backing) {
	case KMMAP_BACKING_FAULT:
	case KMMAP_BACKING_RING:
		vma->vm_ops = &kmmap_fault_vm_ops;
		break;
	case KMMAP_BACKING_PFN:
		vma->vm_ops = &kmmap_mapped_vm_ops;
		ret = remap_pfn_range(vma, vma->vm_start,
				      page_to_pfn(virt_to_page(kf->buf)) + vma->vm_pgoff,
				      vma->vm_end - vma->vm_start, vma->vm_page_prot);
		break;
	case KMMAP_BACKING_INSERT:
		vma->vm_ops = &kmmap_mapped_vm_ops;
		ret = vm_insert_pages(vma, vma->vm_start, kf->pages + vma->vm_pgoff, &num);
		break;
	}
	if (ret)
		return ret;
	atomic_inc(&kf->maps);
	return 0;
}
