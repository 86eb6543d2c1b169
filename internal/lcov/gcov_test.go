package lcov

import (
	"bytes"
	"testing"
)

// Two objects' gcov JSON (gcc 14's --json-format): the module's sources
// are kept under the label, kernel headers dropped, and a header both
// include adds up.
func TestFromGcov(t *testing.T) {
	docs := `{"format_version":"2","files":[{"file":"/b/main.c","functions":[{"name":"kmmap_open","start_line":5,"execution_count":2}],"lines":[{"line_number":6,"count":2,"branches":[{"count":2},{"count":0}]},{"line_number":7,"count":0,"branches":[{"count":0},{"count":0}]}]},{"file":"/b/internal.h","functions":[],"lines":[{"line_number":3,"count":1,"branches":[]}]},{"file":"./include/linux/mm.h","functions":[],"lines":[{"line_number":9,"count":5,"branches":[]}]}]}
{"format_version":"2","files":[{"file":"/b/internal.h","functions":[],"lines":[{"line_number":3,"count":4,"branches":[]}]},{"file":"/b/buffer.c","functions":[{"name":"kmmap_fault","start_line":1,"execution_count":0}],"lines":[{"line_number":2,"count":0,"branches":[]}]}]}
`
	info, err := FromGcov([]byte(docs), "/b", "kmod", "6.12-amd64-debug")
	if err != nil {
		t.Fatal(err)
	}
	tf, err := Parse(bytes.NewReader(info))
	if err != nil {
		t.Fatal(err)
	}
	if len(tf) != 3 || tf["kmod/main.c"] == nil || tf["kmod/internal.h"] == nil || tf["kmod/buffer.c"] == nil {
		t.Fatalf("files %v, want kmod/main.c, kmod/internal.h, kmod/buffer.c:\n%s", len(tf), info)
	}
	if got := tf["kmod/internal.h"].Lines[3]; got != 5 {
		t.Errorf("internal.h:3 ran %d times, want 1+4", got)
	}
	if got, want := tf["kmod/main.c"].Figures(), (Figures{Lines: 2, LinesHit: 1, Funcs: 1, FuncsHit: 1, Branches: 4, BranchesHit: 1}); got != want {
		t.Errorf("main.c figures %+v, want %+v\n%s", got, want, info)
	}
	if _, err := FromGcov([]byte(`{"files":[{"file":"./include/linux/mm.h"}]}`), "/b", "kmod", "x"); err == nil {
		t.Error("counters with no line of the module's sources gave no error")
	}
}
