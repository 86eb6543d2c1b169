//go:build tools

package initramfs

// The u-root commands the initramfs is built from (init, and the shell
// commands of shellCommands), kept in go.mod with their dependencies.
import (
	_ "github.com/u-root/u-root/cmds/core/cat"
	_ "github.com/u-root/u-root/cmds/core/gosh"
	_ "github.com/u-root/u-root/cmds/core/init"
	_ "github.com/u-root/u-root/cmds/core/ls"
	_ "github.com/u-root/u-root/cmds/core/ps"
)
