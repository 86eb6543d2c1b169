// Package guest holds the userland assertions that run inside the VM, built
// with -tags kmmap_guest into a test binary for the guest's architecture.
//
// uapi_linux.go is generated from kmod/include/uapi/linux/kmmap.h:
//
//go:generate sh -c "go tool cgo -objdir \"$(mktemp -d)\" -godefs -- -I../../kmod/include/uapi uapi_godefs.go | grep -v '^// cgo ' | gofmt > uapi_linux.go"
package guest

import "runtime"

// The ioctl numbers for the guest's arch.
var (
	IocInfo      = ioc(genericIocInfo)
	IocSetup     = ioc(genericIocSetup)
	IocFill      = ioc(genericIocFill)
	IocChecksum  = ioc(genericIocChecksum)
	IocPin       = ioc(genericIocPin)
	IocUnpin     = ioc(genericIocUnpin)
	IocPinFill   = ioc(genericIocPinFill)
	IocPinWait   = ioc(genericIocPinWait)
	IocRingEmit  = ioc(genericIocRingEmit)
	IocRingTimer = ioc(genericIocRingTimer)
)

// ioc re-encodes an ioctl number from asm-generic's _IOC layout (the
// direction in the top two bits, none 0, write 1, read 2; a 14-bit size)
// to the guest's: powerpc's has three direction bits (none 1, read 2,
// write 4) and a 13-bit size (arch/powerpc/include/uapi/asm/ioctl.h).
// Every ioctl failed with ENOTTY on 6.12-ppc64el-64k when the numbers
// were the generic ones.
func ioc(generic uint) uint { return iocFor(runtime.GOARCH, generic) }

func iocFor(goarch string, generic uint) uint {
	if goarch != "ppc64le" && goarch != "ppc64" {
		return generic
	}
	nr, typ := generic&0xff, generic>>8&0xff
	size, dir := generic>>16&0x3fff, generic>>30&3
	const none, read, write = 1, 2, 4
	d := uint(none)
	if dir != 0 {
		d = 0
		if dir&1 != 0 {
			d |= write
		}
		if dir&2 != 0 {
			d |= read
		}
	}
	return d<<29 | size<<16 | typ<<8 | nr
}

// Device is the misc device the module registers.
const Device = "/dev/kmmap"

// Pattern is kmmap_pattern() from the UAPI header: byte i of a range
// filled with seed.
func Pattern(seed, i uint64) byte {
	x := seed*0x9e3779b97f4a7c15 + i // splitmix64
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return byte(x ^ x>>31)
}

// FNV1a is the checksum KMMAP_IOC_CHECKSUM computes.
func FNV1a(b []byte) uint64 {
	h := uint64(0xcbf29ce484222325)
	for _, c := range b {
		h ^= uint64(c)
		h *= 0x100000001b3
	}
	return h
}
