package ioctl

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// table is a registry in ioctl-number.rst's format: the rows the cases
// below meet, and filler rows of codes they do not use.
func table() string {
	var b strings.Builder
	b.WriteString("====  =====  ======== ========\nCode  Seq#    Include File     Comments\n====  =====  ======== ========\n")
	b.WriteString("'T'   all    arch/x86/include/asm/ioctls.h                             conflict!\n")
	b.WriteString("'k'   10-17  linux/hsi/hsi_char.h                                      HSI character device\n")
	b.WriteString("0x89  00-06  arch/x86/include/asm/sockios.h\n")
	for i := 0; i < 100; i++ {
		fmt.Fprintf(&b, "0x%02x  00-1F  linux/filler%d.h\n", 0x10+i, i)
	}
	return b.String()
}

func TestCheck(t *testing.T) {
	rows, err := ParseTable(table())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, src string
		clashes   int
		says      []string // what the clashes say
	}{
		{"tty", "#define TICK_MAGIC 'T'\n#define TICK_START _IO(TICK_MAGIC, 1)\n", 1,
			[]string{"m.h:2: _IO(TICK_MAGIC, 1): code 0x54 'T', command 0x01, is registered to arch/x86/include/asm/ioctls.h conflict! (every command)"}},
		{"free", "#define KMMAP_IOC_MAGIC 0xB8\n#define KMMAP_IOC_SETUP _IOWR(KMMAP_IOC_MAGIC, 1, struct kmmap_setup)\n", 0, nil},
		{"outside the range", "#define K_IO _IOR('k', 0x20, int)\n", 0, nil},
		{"inside the range", "#define K_IO _IOW('k', 0x12, int)\n", 1, []string{"_IOW('k', 0x12, ...): code 0x6b 'k', command 0x12", "commands 10-17"}},
		{"socket", "#define S (0x89)\n#define N 2\nint x = _IO(S, N);\n", 1, []string{"m.h:3", "sockios.h"}},
		{"wrapped", "#define MAGIC 'T'\n#define MY_IO(nr) _IO(MAGIC, nr)\n#define A MY_IO(3)\n", 1, []string{"m.h:2", "a command number not known here"}},
		{"the macros themselves", "#define _IO(type, nr) _IOC(_IOC_NONE, (type), (nr), 0)\n", 0, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.MkdirAll(filepath.Join(dir, "include"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "m.h"), []byte(c.src), 0o644); err != nil {
				t.Fatal(err)
			}
			nums, err := FromSources(dir)
			if err != nil {
				t.Fatal(err)
			}
			clashes := Check(nums, rows)
			if len(clashes) != c.clashes {
				t.Fatalf("%d clashes %v, want %d (numbers read: %+v)", len(clashes), clashes, c.clashes, nums)
			}
			all := fmt.Sprint(clashes)
			for _, w := range c.says {
				if !strings.Contains(all, w) {
					t.Errorf("%s does not say %q", all, w)
				}
			}
		})
	}
}

func TestParseTableFormatChanged(t *testing.T) {
	if _, err := ParseTable("Code Seq# Include\n0x00 00-1F linux/fs.h\n"); err == nil || !strings.Contains(err.Error(), "format changed") {
		t.Errorf("a table of one row: %v, want an error saying its format changed", err)
	}
}
