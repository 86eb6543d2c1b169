package lcov

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
)

// gcovJSON is gcov's JSON intermediate format (gcov --json-format),
// the parts a tracefile needs.
type gcovJSON struct {
	Files []struct {
		File      string `json:"file"`
		Functions []struct {
			Name      string `json:"name"`
			StartLine int    `json:"start_line"`
			Count     int64  `json:"execution_count"`
		} `json:"functions"`
		Lines []struct {
			Line     int   `json:"line_number"`
			Count    int64 `json:"count"`
			Branches []struct {
				Count int64 `json:"count"`
			} `json:"branches"`
		} `json:"lines"`
	} `json:"files"`
}

// FromGcov converts gcov JSON documents (one a line, one per object)
// into an lcov tracefile named test, keeping the files under builddir,
// renamed under label: the module's sources, not the kernel's headers.
// A file several objects include (a header's inline functions) adds up.
func FromGcov(docs []byte, builddir, label, test string) ([]byte, error) {
	t := Tracefile{}
	sc := bufio.NewScanner(bytes.NewReader(docs))
	sc.Buffer(nil, 64<<20)
	object := 0
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var doc gcovJSON
		if err := json.Unmarshal(sc.Bytes(), &doc); err != nil {
			return nil, fmt.Errorf("gcov's JSON: %w", err)
		}
		object++
		for _, f := range doc.Files {
			rel, ok := strings.CutPrefix(f.File, builddir+"/")
			if !ok || !filepath.IsLocal(rel) {
				continue
			}
			sf := t.File(filepath.ToSlash(filepath.Join(label, rel)))
			for _, fn := range f.Functions {
				sf.Func(fn.Name, fn.StartLine, fn.Count)
			}
			for _, l := range f.Lines {
				sf.Lines[l.Line] += l.Count
				for i, br := range l.Branches {
					sf.Branch(Branch{Line: l.Line, Block: object, Index: i}, br.Count, l.Count > 0)
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if t.Figures().LinesHit == 0 {
		return nil, fmt.Errorf("gcov reported no line of the module's own sources run (%d files): the counters are not the module's", len(t))
	}
	return t.Encode(test), nil
}
