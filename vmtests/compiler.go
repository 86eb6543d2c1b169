package vmtests

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/kmmap/kmmap/kernels"
)

var (
	gccVerRe  = regexp.MustCompile(`\) (\d+)\.\d+(?:\.\d+)?\s*$`)
	gccNameRe = regexp.MustCompile(`GCC: \(.*\) (\d+)\.\d+`)
)

// checkCompiler verifies that the module at ko was compiled by the same GCC
// major as the kernel of config (CONFIG_CC_VERSION_TEXT): a module built
// by another compiler than its kernel is not trusted.
func checkCompiler(ko string, config kernels.Config) (string, error) {
	kernelCC := config.Value("CONFIG_CC_VERSION_TEXT")
	if kernelCC == "" {
		return "", errors.New("the kernel's config has no CONFIG_CC_VERSION_TEXT")
	}
	km := gccVerRe.FindStringSubmatch(kernelCC)
	if km == nil {
		return kernelCC, nil // not GCC (clang): nothing to compare here
	}
	f, err := elf.Open(ko)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sec := f.Section(".comment")
	if sec == nil {
		return "", fmt.Errorf("%s has no .comment section naming its compiler", ko)
	}
	data, err := sec.Data()
	if err != nil {
		return "", err
	}
	var majors []string
	for _, c := range bytes.Split(data, []byte{0}) {
		if mm := gccNameRe.FindSubmatch(c); mm != nil {
			majors = append(majors, string(mm[1]))
			if string(mm[1]) != km[1] {
				return "", fmt.Errorf("the module was compiled by %q but the kernel by %q: build it with gcc-%s", c, kernelCC, km[1])
			}
		}
	}
	if len(majors) == 0 {
		return "", fmt.Errorf("%s: no GCC in .comment", ko)
	}
	return strings.TrimSpace(kernelCC), nil
}
