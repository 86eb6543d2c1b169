package kernels

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"
)

// ConfigText is k's config fragments joined in order, each headed by its
// name: what a kernel built from source is configured with.
func (k Kernel) ConfigText() ([]byte, error) {
	var b bytes.Buffer
	for i, path := range k.ConfigFragments() {
		frag, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("kernel %s: config fragment: %w", k.ID, err)
		}
		fmt.Fprintf(&b, "# ---- %s\n", k.Config[i])
		b.Write(frag)
		if len(frag) > 0 && frag[len(frag)-1] != '\n' {
			b.WriteByte('\n')
		}
	}
	return b.Bytes(), nil
}

// Config is a kernel's configuration as its .config (or a fragment of
// one) says: option -> value, "y", "m", a number, or a string without its
// quotes; "# CONFIG_X is not set" gives "n". The one parser of kernel
// configs here: the page size, the memory-debugging arguments, the
// compiler check, the fragment check and the guest's flags all read one.
type Config map[string]string

// ParseConfig parses the text of a .config or a fragment.
func ParseConfig(b []byte) Config {
	c := Config{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if opt, val, ok := configLine(sc.Text()); ok {
			c[opt] = strings.Trim(val, `"`)
		}
	}
	return c
}

// ReadConfig reads and parses the config at path.
func ReadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("kernel config: %w", err)
	}
	return ParseConfig(b), nil
}

// Enabled reports whether opt is built in (=y).
func (c Config) Enabled(opt string) bool { return c[opt] == "y" }

// Value is opt's value, "" when not set.
func (c Config) Value(opt string) string { return c[opt] }

// PageSize is the page size the kernel was built with, in bytes.
func (c Config) PageSize() int {
	for opt, size := range map[string]int{"CONFIG_ARM64_16K_PAGES": 16384, "CONFIG_ARM64_64K_PAGES": 65536,
		"CONFIG_PAGE_SIZE_16KB": 16384, "CONFIG_PAGE_SIZE_64KB": 65536} {
		if c.Enabled(opt) {
			return size
		}
	}
	return 4096
}

// CheckConfig returns an error naming every option that fragments set
// (CONFIG_X=value or "# CONFIG_X is not set") but the resolved .config
// does not have as set: Kconfig drops an option whose dependencies are
// not met without a word, and a debug kernel silently missing KASAN is
// worse than no debug kernel.
func CheckConfig(fragments, dotconfig []byte) error {
	have := ParseConfig(dotconfig)
	var lost []string
	sc := bufio.NewScanner(bytes.NewReader(fragments))
	for sc.Scan() {
		opt, want, ok := configLine(sc.Text())
		if !ok {
			continue
		}
		want = strings.Trim(want, `"`)
		got, set := have[opt]
		if !set {
			got = "n"
		}
		if got != want && !(want == "n" && !set) {
			lost = append(lost, fmt.Sprintf("%s: fragment says %s, .config has %s", opt, want, got))
		}
	}
	if len(lost) > 0 {
		return fmt.Errorf("%d config option(s) did not survive olddefconfig (a dependency is missing; add it to the fragment):\n  %s",
			len(lost), strings.Join(lost, "\n  "))
	}
	return nil
}

// configLine parses "CONFIG_X=v" or "# CONFIG_X is not set" (value "n").
func configLine(l string) (opt, val string, ok bool) {
	l = strings.TrimSpace(l)
	if rest, found := strings.CutPrefix(l, "# "); found {
		if opt, found := strings.CutSuffix(rest, " is not set"); found && strings.HasPrefix(opt, "CONFIG_") {
			return opt, "n", true
		}
		return "", "", false
	}
	if !strings.HasPrefix(l, "CONFIG_") {
		return "", "", false
	}
	opt, val, ok = strings.Cut(l, "=")
	return opt, val, ok
}
