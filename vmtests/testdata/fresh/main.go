// Command fresh prints what a guest restored from a snapshot must not
// share with the last one restored: the time (CLOCK_REALTIME, Unix
// nanoseconds) and 16 bytes from the kernel's random pool (getrandom).
// TestSnapshots runs it in guests booted, saved and restored.
package main

import (
	"crypto/rand"
	"fmt"
	"time"
)

func main() {
	b := make([]byte, 16)
	rand.Read(b)
	fmt.Printf("random %x\nclock %d\n", b, time.Now().UnixNano())
}
