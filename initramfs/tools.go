//go:build tools

package initramfs

// The u-root commands the initramfs is built from, kept in go.mod.
import _ "github.com/u-root/u-root/cmds/core/init"
