//go:build linux

// Command sh is the guest's /bin/sh: u-root's gosh (mvdan's POSIX shell
// interpreter), under the name that sh -c '...' and #!/bin/sh scripts
// look for. u-root's busybox dispatches on the name a program is run by,
// so a link named sh to gosh would not do: this re-executes gosh by its
// own name with the same arguments.
package main

import (
	"fmt"
	"os"
	"syscall"
)

func main() {
	err := syscall.Exec("/bbin/gosh", append([]string{"gosh"}, os.Args[1:]...), os.Environ())
	fmt.Fprintf(os.Stderr, "sh: exec /bbin/gosh: %v\n", err)
	os.Exit(127)
}
