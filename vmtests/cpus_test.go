package vmtests

import (
	"strings"
	"testing"

	"github.com/kmmap/kmmap/kernels"
)

func TestCPUsFor(t *testing.T) {
	distro := kernels.Kernel{ID: "6.1-amd64", Flavour: "amd64"}
	smp := kernels.Kernel{ID: "6.12-arm64", Flavour: "arm64", CPUs: 2} // the lock's cpus
	built := kernels.Kernel{ID: "6.12-amd64-kcsan", Flavour: "kcsan", Config: []string{"config/kcsan.config"}}
	for _, c := range []struct {
		env  string
		k    kernels.Kernel
		want int
		err  string
	}{
		{"", distro, 1, ""},
		{"", smp, 2, ""},
		{"", built, 2, ""},
		{"4", distro, 4, ""},
		{"1", built, 1, ""},
		{"0", distro, 0, "from 1 to 8"},
		{"9", distro, 0, "from 1 to 8"},
		{"two", distro, 0, "KMMAP_CPUS=\"two\""},
	} {
		cfg, err := parseConfig(map[string]string{"KMMAP_CPUS": c.env})
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("KMMAP_CPUS=%q: err %v, want one saying %q", c.env, err, c.err)
			}
			continue
		}
		h := &Harness{cfg: cfg}
		if got := h.cpusFor(c.k); err != nil || got != c.want {
			t.Errorf("KMMAP_CPUS=%q, %s: %d, %v; want %d", c.env, c.k.ID, got, err, c.want)
		}
	}
}
