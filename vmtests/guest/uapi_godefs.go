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

	IocInfo      = C.KMMAP_IOC_INFO
	IocSetup     = C.KMMAP_IOC_SETUP
	IocFill      = C.KMMAP_IOC_FILL
	IocChecksum  = C.KMMAP_IOC_CHECKSUM
	IocPin       = C.KMMAP_IOC_PIN
	IocUnpin     = C.KMMAP_IOC_UNPIN
	IocPinFill   = C.KMMAP_IOC_PIN_FILL
	IocPinWait   = C.KMMAP_IOC_PIN_WAIT
	IocRingEmit  = C.KMMAP_IOC_RING_EMIT
	IocRingTimer = C.KMMAP_IOC_RING_TIMER
)
