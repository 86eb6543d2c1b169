// Package guest holds the userland assertions that run inside the VM, built
// with -tags kmmap_guest into a test binary for the guest's architecture.
// This file mirrors kmod/include/uapi/kmmap.h.
package guest

import "unsafe"

// Info mirrors struct kmmap_info.
type Info struct {
	Size     uint64
	PageSize uint32
	NrPages  uint32
	PFNs     uint64
	PFNsLen  uint32
	Reserved uint32
}

// Device is the misc device the module registers.
const Device = "/dev/kmmap"

// DefaultPages is KMMAP_DEFAULT_PAGES.
const DefaultPages = 4

// ioctl number encoding (asm-generic/ioctl.h; x86 and arm64 use it).
func iowr(typ, nr byte, size uintptr) uint {
	const read, write = 2, 1
	return uint((read|write)<<30 | size<<16 | uintptr(typ)<<8 | uintptr(nr))
}

// IocInfo is KMMAP_IOC_INFO.
var IocInfo = iowr('k', 0x01, unsafe.Sizeof(Info{}))
