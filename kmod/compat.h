/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The one place that absorbs kernel API drift (5.10 onwards).
 */
#ifndef _KMMAP_COMPAT_H
#define _KMMAP_COMPAT_H

#include <linux/mm.h>

/*
 * vm_flags became read-only behind vm_flags_set()/vm_flags_clear() in 6.3;
 * some stable series carry the helpers too, so Kbuild probes the headers for
 * them (KMMAP_HAVE_VM_FLAGS_SET) rather than trusting the version number.
 */
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

#endif /* _KMMAP_COMPAT_H */
