//go:build ignore

// Input to cgo -godefs: the Go mirror of kmod/include/uapi/linux/kmmap.h is
// generated from the header itself, so C and Go cannot drift
// (TestUAPIGenerated checks that uapi_linux.go is current).

package guest

/*
#include <linux/types.h>
#include <linux/kmmap.h>
*/
import "C"

type Info C.struct_kmmap_info
type Setup C.struct_kmmap_setup
type Range C.struct_kmmap_range
type PinRange C.struct_kmmap_pin
type PinFill C.struct_kmmap_pin_fill
type RingHeader C.struct_kmmap_ring_header
type RingRecord C.struct_kmmap_ring_record
type RingCtl C.struct_kmmap_ring_ctl

const (
	DefaultPages = C.KMMAP_DEFAULT_PAGES
	MaxPages     = C.KMMAP_MAX_PAGES

	BackingFault  = C.KMMAP_BACKING_FAULT
	BackingPFN    = C.KMMAP_BACKING_PFN
	BackingInsert = C.KMMAP_BACKING_INSERT
	BackingRing   = C.KMMAP_BACKING_RING

	RingSrcIoctl = C.KMMAP_RING_SRC_IOCTL
	RingSrcTimer = C.KMMAP_RING_SRC_TIMER

	// The ioctl numbers as the generating host's _IOC encodes them
	// (asm-generic's: x86, arm64, s390x, riscv64); uapi.go re-encodes them
	// for the guest's arch.
	genericIocInfo      = C.KMMAP_IOC_INFO
	genericIocSetup     = C.KMMAP_IOC_SETUP
	genericIocFill      = C.KMMAP_IOC_FILL
	genericIocChecksum  = C.KMMAP_IOC_CHECKSUM
	genericIocPin       = C.KMMAP_IOC_PIN
	genericIocUnpin     = C.KMMAP_IOC_UNPIN
	genericIocPinFill   = C.KMMAP_IOC_PIN_FILL
	genericIocPinWait   = C.KMMAP_IOC_PIN_WAIT
	genericIocRingEmit  = C.KMMAP_IOC_RING_EMIT
	genericIocRingTimer = C.KMMAP_IOC_RING_TIMER
)
