package lcov

import (
	"bytes"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	tf := Tracefile{}
	f := tf.File("kmod/main.c")
	f.Func("kmmap_open", 10, 3)
	f.Func("kmmap_exit", 40, 0)
	f.Lines[11] = 3
	f.Lines[12] = 0
	f.Branch(Branch{11, 1, 0}, 2, true)
	f.Branch(Branch{11, 1, 1}, 0, true)
	f.Branch(Branch{12, 1, 0}, 0, false)
	enc := tf.Encode("6.12-amd64-debug")
	for _, want := range []string{"TN:6_12_amd64_debug\n", "SF:kmod/main.c\n", "FN:10,kmmap_open\n", "FNDA:0,kmmap_exit\n", "FNF:2\nFNH:1\n",
		"BRDA:11,1,0,2\n", "BRDA:11,1,1,0\n", "BRDA:12,1,0,-\n", "BRF:3\nBRH:1\n", "DA:12,0\n", "LF:2\nLH:1\nend_of_record\n"} {
		if !strings.Contains(string(enc), want) {
			t.Errorf("encoded tracefile lacks %q:\n%s", want, enc)
		}
	}
	// Parsed twice over (two cells' records of one file): counts add up.
	back, err := Parse(bytes.NewReader(append(enc, enc...)))
	if err != nil {
		t.Fatal(err)
	}
	g := back["kmod/main.c"]
	if g == nil || g.Lines[11] != 6 || g.Funcs["kmmap_open"] != 6 || g.Branches[Branch{11, 1, 0}] != 4 || g.Reached[Branch{12, 1, 0}] {
		t.Fatalf("parsed back wrong: %+v", g)
	}
	if got, want := g.Figures(), (Figures{2, 1, 2, 1, 3, 1}); got != want {
		t.Errorf("figures %+v, want %+v", got, want)
	}
}

func TestParseRefusesGarbage(t *testing.T) {
	for _, in := range []string{"DA:1,1\n", "SF:x\nDA:one,1\n", "SF:x\nBRDA:1,2,3\n", "SF:x\nFNDA:x,f\n"} {
		if _, err := Parse(strings.NewReader(in)); err == nil {
			t.Errorf("%q parsed without an error", in)
		}
	}
}
