/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The one place that absorbs kernel API drift (5.10 onwards).  Kbuild
 * probes the kernel's headers for each helper (KMMAP_HAVE_*) rather than
 * trusting version numbers, which stable series and distributions blur.
 */
#ifndef _KMMAP_COMPAT_H
#define _KMMAP_COMPAT_H

#include <linux/highmem.h>
#include <linux/mm.h>
#include <linux/slab.h>
#include <linux/workqueue.h>

/* The typed allocators arrived in 7.x; before, the sizeof() they hide. */
#ifdef kzalloc_obj
#define kmmap_kzalloc_obj(P, GFP)	kzalloc_obj(P, GFP)
#else
#define kmmap_kzalloc_obj(P, GFP)	kzalloc(sizeof(P), GFP)
#endif

/*
 * The buffer's pages are charged to the caller's memory cgroup
 * (__GFP_ACCOUNT) from 5.11 on.  Before, a charged page carried the
 * PageKmemcg page type in the field where the core mm counts a page's
 * mappings: vm_insert_page() refuses such a page, and mapping one from
 * .fault would corrupt it.  There (5.10) the pages go uncharged; the
 * module's own structures are charged everywhere.
 */
#ifdef KMMAP_HAVE_KMEMCG_PAGE_TYPE
#define KMMAP_GFP_USER_ACCOUNT	0
#else
#define KMMAP_GFP_USER_ACCOUNT	__GFP_ACCOUNT
#endif

/*
 * 7.x renamed the system workqueues by what they are (system_percpu_wq,
 * system_dfl_wq) and warns, once per work function, when work is queued
 * on the old names.  Before the rename, the old names are the same queues.
 */
#ifdef KMMAP_HAVE_SYSTEM_DFL_WQ
#define kmmap_percpu_wq		system_percpu_wq
#define kmmap_unbound_wq	system_dfl_wq
#else
#define kmmap_percpu_wq		system_wq
#define kmmap_unbound_wq	system_unbound_wq
#endif

/* vm_flags became read-only behind vm_flags_set()/vm_flags_clear() in 6.3. */
#ifdef KMMAP_HAVE_VM_FLAGS_SET
static inline void kmmap_vm_flags_set(struct vm_area_struct *vma, vm_flags_t flags)
{
	vm_flags_set(vma, flags);
}

static inline void kmmap_vm_flags_clear(struct vm_area_struct *vma, vm_flags_t flags)
{
	vm_flags_clear(vma, flags);
}
#else
static inline void kmmap_vm_flags_set(struct vm_area_struct *vma, vm_flags_t flags)
{
	vma->vm_flags |= flags;
}

static inline void kmmap_vm_flags_clear(struct vm_area_struct *vma, vm_flags_t flags)
{
	vma->vm_flags &= ~flags;
}
#endif

/*
 * kmap_local_page() arrived in 5.11.  The kernels before it that kmmap
 * supports are 64-bit, without highmem, where every page is in the direct
 * map and kmap_local_page() is page_address(): say so, and use that.
 */
#ifdef KMMAP_HAVE_KMAP_LOCAL
#define kmmap_kmap_local(page)		kmap_local_page(page)
#define kmmap_kunmap_local(addr)	kunmap_local(addr)
#else
static_assert(!IS_ENABLED(CONFIG_HIGHMEM), "kmmap needs kmap_local_page() on highmem kernels");
#define kmmap_kmap_local(page)		page_address(page)
#define kmmap_kunmap_local(addr)	((void)(addr))
#endif

#endif /* _KMMAP_COMPAT_H */
