// Package guest holds the userland assertions that run inside the VM, built
// with -tags kmmap_guest into a test binary for the guest's architecture.
//
// uapi_linux.go is generated from kmod/include/uapi/linux/kmmap.h:
//
//go:generate sh -c "go tool cgo -objdir \"$(mktemp -d)\" -godefs -- -I../../kmod/include/uapi uapi_godefs.go | grep -v '^// cgo ' | gofmt > uapi_linux.go"
package guest

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
