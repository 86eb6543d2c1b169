package kernels

import (
	"strings"
	"testing"
)

func TestCheckConfig(t *testing.T) {
	frag := []byte("# a comment\nCONFIG_KASAN=y\nCONFIG_NR_CPUS=8\n# CONFIG_LOCALVERSION_AUTO is not set\n# CONFIG_GONE is not set\n")
	for _, tc := range []struct {
		name, dotconfig string
		lost            []string // options the error must name
	}{
		{"all kept", "CONFIG_KASAN=y\nCONFIG_NR_CPUS=8\n# CONFIG_LOCALVERSION_AUTO is not set\n", nil},
		{"dropped", "# CONFIG_KASAN is not set\nCONFIG_NR_CPUS=8\n", []string{"CONFIG_KASAN: fragment says y, .config has n"}},
		{"absent", "CONFIG_NR_CPUS=8\n", []string{"CONFIG_KASAN"}},
		{"changed value", "CONFIG_KASAN=y\nCONFIG_NR_CPUS=64\n", []string{"CONFIG_NR_CPUS: fragment says 8, .config has 64"}},
		{"turned on", "CONFIG_KASAN=y\nCONFIG_NR_CPUS=8\nCONFIG_LOCALVERSION_AUTO=y\n", []string{"CONFIG_LOCALVERSION_AUTO: fragment says n, .config has y"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckConfig(frag, []byte(tc.dotconfig))
			if len(tc.lost) == 0 {
				if err != nil {
					t.Fatalf("want no error, got %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("want an error naming %v, got none", tc.lost)
			}
			for _, l := range tc.lost {
				if !strings.Contains(err.Error(), l) {
					t.Errorf("error %q does not name %q", err, l)
				}
			}
		})
	}
}
