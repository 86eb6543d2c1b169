package hello

import (
	"testing"

	"github.com/kmmap/kmmap/vmtests"
)

// TestHello runs hello.ko and its guest tests on two cells: go test ./...
func TestHello(t *testing.T) {
	vmtests.Run(t,
		vmtests.Module{Dir: "kmod", Params: "greeting=\"hi there\""},
		vmtests.Guest{Package: "./guest", Tags: []string{"hello_guest"}},
		vmtests.WithCells("6.1-amd64", "6.1-arm64"))
}
