// Package lcov reads and writes lcov tracefiles (the format of geninfo(1)
// that genhtml(1) renders): per source file, the count of each line,
// function and branch; FromGcov makes one from gcov's JSON of a module's
// counters. It owns the format; collecting the counters from a guest is
// the harness's.
package lcov

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// Branch names one branch: the line, a block on it and the branch's
// index in the block.
type Branch struct{ Line, Block, Index int }

// File is the coverage of one source file.
type File struct {
	Lines    map[int]int64    // line -> times run
	Funcs    map[string]int64 // function -> times called
	FuncLine map[string]int   // function -> its first line
	Branches map[Branch]int64 // times taken
	// Reached: the branch's line ran (lcov writes "-" for the count of
	// a branch whose line never did).
	Reached map[Branch]bool
}

// Tracefile is the coverage of several files, by path.
type Tracefile map[string]*File

// File returns the coverage of name, added empty if new.
func (t Tracefile) File(name string) *File {
	if f, ok := t[name]; ok {
		return f
	}
	f := &File{Lines: map[int]int64{}, Funcs: map[string]int64{}, FuncLine: map[string]int{},
		Branches: map[Branch]int64{}, Reached: map[Branch]bool{}}
	t[name] = f
	return f
}

// Func adds count calls of function name, which starts at line.
func (f *File) Func(name string, line int, count int64) {
	f.Funcs[name] += count
	f.FuncLine[name] = line
}

// Branch adds count takings of branch b; reached says its line ran.
func (f *File) Branch(b Branch, count int64, reached bool) {
	f.Branches[b] += count
	f.Reached[b] = f.Reached[b] || reached
}

// Figures are found/hit counts, as lcov's summary lines give them.
type Figures struct {
	Lines, LinesHit, Funcs, FuncsHit, Branches, BranchesHit int
}

// Add sums two figures.
func (a Figures) Add(b Figures) Figures {
	return Figures{a.Lines + b.Lines, a.LinesHit + b.LinesHit, a.Funcs + b.Funcs, a.FuncsHit + b.FuncsHit,
		a.Branches + b.Branches, a.BranchesHit + b.BranchesHit}
}

// Figures counts what of f was found and hit.
func (f *File) Figures() Figures {
	var s Figures
	for _, n := range f.Lines {
		s.Lines++
		if n > 0 {
			s.LinesHit++
		}
	}
	for _, n := range f.Funcs {
		s.Funcs++
		if n > 0 {
			s.FuncsHit++
		}
	}
	for _, n := range f.Branches {
		s.Branches++
		if n > 0 {
			s.BranchesHit++
		}
	}
	return s
}

// Figures counts what of every file of t was found and hit.
func (t Tracefile) Figures() Figures {
	var s Figures
	for _, f := range t {
		s = s.Add(f.Figures())
	}
	return s
}

// Percent is hit/found as a percentage, "-" when nothing was found.
func Percent(hit, found int) string {
	if found == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(hit)/float64(found))
}

// Encode writes t in lcov's format under the test name test.
func (t Tracefile) Encode(test string) []byte {
	var b bytes.Buffer
	tn := strings.Map(func(r rune) rune {
		if r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, test)
	for _, name := range slices.Sorted(maps.Keys(t)) {
		f := t[name]
		s := f.Figures()
		fmt.Fprintf(&b, "TN:%s\nSF:%s\n", tn, name)
		fnames := slices.Sorted(maps.Keys(f.Funcs))
		for _, n := range fnames {
			fmt.Fprintf(&b, "FN:%d,%s\n", f.FuncLine[n], n)
		}
		for _, n := range fnames {
			fmt.Fprintf(&b, "FNDA:%d,%s\n", f.Funcs[n], n)
		}
		fmt.Fprintf(&b, "FNF:%d\nFNH:%d\n", s.Funcs, s.FuncsHit)
		brs := slices.SortedFunc(maps.Keys(f.Branches), func(a, b Branch) int {
			if a.Line != b.Line {
				return a.Line - b.Line
			}
			if a.Block != b.Block {
				return a.Block - b.Block
			}
			return a.Index - b.Index
		})
		for _, k := range brs {
			taken := "-"
			if f.Reached[k] {
				taken = strconv.FormatInt(f.Branches[k], 10)
			}
			fmt.Fprintf(&b, "BRDA:%d,%d,%d,%s\n", k.Line, k.Block, k.Index, taken)
		}
		fmt.Fprintf(&b, "BRF:%d\nBRH:%d\n", s.Branches, s.BranchesHit)
		for _, l := range slices.Sorted(maps.Keys(f.Lines)) {
			fmt.Fprintf(&b, "DA:%d,%d\n", l, f.Lines[l])
		}
		fmt.Fprintf(&b, "LF:%d\nLH:%d\nend_of_record\n", s.Lines, s.LinesHit)
	}
	return b.Bytes()
}

// Parse reads a tracefile, adding up the records of a file that appears
// more than once (several tests, or lcov -a's output).
func Parse(r io.Reader) (Tracefile, error) {
	t := Tracefile{}
	var f *File
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		key, val, _ := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		bad := func() error { return fmt.Errorf("tracefile line %d: %q is not lcov's %s record", n, sc.Text(), key) }
		nums := func(s string, k int) ([]int64, bool) {
			parts := strings.SplitN(s, ",", k+1)
			if len(parts) < k {
				return nil, false
			}
			out := make([]int64, k)
			for i := range k {
				v, err := strconv.ParseInt(parts[i], 10, 64)
				if err != nil {
					return nil, false
				}
				out[i] = v
			}
			return out, true
		}
		switch key {
		case "SF":
			f = t.File(val)
		case "end_of_record":
			f = nil
		case "TN", "", "FNF", "FNH", "LF", "LH", "BRF", "BRH":
		default:
			if f == nil {
				return nil, fmt.Errorf("tracefile line %d: %s record outside a SF record", n, key)
			}
			switch key {
			case "DA":
				v, ok := nums(val, 2)
				if !ok {
					return nil, bad()
				}
				f.Lines[int(v[0])] += v[1]
			case "FN":
				line, name, ok := strings.Cut(val, ",")
				l, err := strconv.Atoi(line)
				if !ok || err != nil {
					return nil, bad()
				}
				f.FuncLine[name] = l
				f.Funcs[name] += 0
			case "FNDA":
				count, name, ok := strings.Cut(val, ",")
				c, err := strconv.ParseInt(count, 10, 64)
				if !ok || err != nil {
					return nil, bad()
				}
				f.Funcs[name] += c
			case "BRDA":
				parts := strings.Split(val, ",")
				v, ok := nums(val, 3)
				if !ok || len(parts) != 4 {
					return nil, bad()
				}
				b := Branch{int(v[0]), int(v[1]), int(v[2])}
				if parts[3] == "-" {
					f.Branch(b, 0, false)
					continue
				}
				c, err := strconv.ParseInt(parts[3], 10, 64)
				if err != nil {
					return nil, bad()
				}
				f.Branch(b, c, true)
			}
		}
	}
	return t, sc.Err()
}
