// Package litmus keeps a module's litmus tests and its C in step and runs
// them with herd7 against the Linux-kernel memory model (LKMM).
//
// A litmus test (tools/memory-model/ in the kernel source) names in its
// leading comment the result the LKMM must give, which of its threads are
// the module's code and which C expressions its shared variables stand
// for:
//
//	Result: Never
//	P0: ring.c kmmap_ring_produce_locked
//	Binds: head = ring->hdr->head, tail = ring->hdr->tail
//
// P0 is then the body of kmmap_ring_produce_locked() in ring.c, as far as
// it touches head and tail: Check reads how the C accesses each bound
// expression (smp_store_release, READ_ONCE, a plain load, spin_lock...)
// and how the thread does, and Derive writes the test the C as it is
// would make, so that a change to the barriers in the C either changes
// the test's verdict or fails as out of step. The package owns the
// format and the derivation; herd7 and the LKMM's files come from the
// caller (a toolchain root, the pinned kernel source).
package litmus

import (
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// Test is one litmus test of a module.
type Test struct {
	Name   string // the file's base name without .litmus
	Path   string
	Text   string
	Result string              // Never, Sometimes or Always
	Source map[string][]string // thread ("P0") → file, then functions
	Binds  map[string]string   // variable → C expression
}

// Load reads every *.litmus in dir, sorted by name.
func Load(dir string) ([]Test, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.litmus"))
	if err != nil {
		return nil, err
	}
	sort.Strings(paths)
	var out []Test
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		t, err := Parse(p, string(b))
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

var (
	resultLine = regexp.MustCompile(`(?m)^\s*\*?\s*Result:\s*(\w+)`)
	sourceLine = regexp.MustCompile(`(?m)^\s*\*?\s*(P\d+):\s*(\S+\.[ch](?:\s+\w+)+)\s*$`)
	bindsLine  = regexp.MustCompile(`(?m)^\s*\*?\s*Binds:\s*(.+)$`)
)

// Parse reads a litmus test's header; path names it in errors.
func Parse(path, text string) (Test, error) {
	t := Test{Name: strings.TrimSuffix(filepath.Base(path), ".litmus"), Path: path, Text: text,
		Source: map[string][]string{}, Binds: map[string]string{}}
	m := resultLine.FindStringSubmatch(text)
	if m == nil || !slices.Contains([]string{"Never", "Sometimes", "Always"}, m[1]) {
		return t, fmt.Errorf("%s: no \"Result: Never|Sometimes|Always\" line in its comment", path)
	}
	t.Result = m[1]
	for _, m := range sourceLine.FindAllStringSubmatch(text, -1) {
		t.Source[m[1]] = strings.Fields(m[2])
	}
	if m := bindsLine.FindStringSubmatch(text); m != nil {
		for _, b := range strings.Split(m[1], ",") {
			v, expr, ok := strings.Cut(b, "=")
			if !ok {
				return t, fmt.Errorf("%s: %q in Binds is not \"variable = C expression\"", path, strings.TrimSpace(b))
			}
			t.Binds[strings.TrimSpace(v)] = strings.TrimSpace(expr)
		}
	}
	if len(t.Binds) > 0 && len(t.Source) == 0 {
		return t, fmt.Errorf("%s: a Binds line but no thread names its source (\"P0: file.c function...\")", path)
	}
	if len(t.Source) > 0 && len(t.Binds) == 0 {
		return t, fmt.Errorf("%s: threads name their source but no Binds line says which variables stand for what", path)
	}
	for th := range t.Source {
		if _, _, err := thread(text, th); err != nil {
			return t, fmt.Errorf("%s: %w", path, err)
		}
	}
	return t, nil
}

// The kinds of access, strongest first within each group; "" is none (a
// lock the C does not take).
const (
	Release = "smp_store_release"
	Acquire = "smp_load_acquire"
	OnceW   = "WRITE_ONCE"
	OnceR   = "READ_ONCE"
	PlainW  = "plain store"
	PlainR  = "plain load"
	Lock    = "spin_lock"
	Unlock  = "spin_unlock"
)

// Weaker is the access one step weaker than kind: what a relaxed barrier
// makes of it ("" for a lock dropped, kind itself for the weakest).
func Weaker(kind string) string {
	switch kind {
	case Release:
		return OnceW
	case Acquire:
		return OnceR
	case OnceW:
		return PlainW
	case OnceR:
		return PlainR
	case Lock, Unlock:
		return ""
	}
	return kind
}

func isStore(kind string) bool { return kind == Release || kind == OnceW || kind == PlainW }
func isLock(kind string) bool  { return kind == Lock || kind == Unlock }

// access is one use of a variable in a litmus thread, at text[start:end].
type access struct {
	kind       string
	start, end int
	value      string // what a store stores
}

// thread returns the body of thread th ("P0") in a litmus test's text: its
// offsets, from after the opening brace to the closing one.
func thread(text, th string) (int, int, error) {
	m := regexp.MustCompile(`(?m)^` + th + `\s*\([^)]*\)\s*\{`).FindStringIndex(text)
	if m == nil {
		return 0, 0, fmt.Errorf("no thread %s", th)
	}
	end := strings.Index(text[m[1]:], "\n}")
	if end < 0 {
		return 0, 0, fmt.Errorf("thread %s has no closing brace at the start of a line", th)
	}
	return m[1], m[1] + end, nil
}

// closing returns the offset just after the parenthesis closing the one
// at s[open].
func closing(s string, open int) int {
	depth := 0
	for i := open; i < len(s); i++ {
		switch s[i] {
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return i + 1
			}
		}
	}
	return len(s)
}

// litmusAccesses lists how body (a litmus thread) uses variable v.
func litmusAccesses(body, v string) []access {
	var out []access
	re := regexp.MustCompile(`(\b\w+\(\s*)?(\*?)\b` + regexp.QuoteMeta(v) + `\b`)
	for _, m := range re.FindAllStringSubmatchIndex(body, -1) {
		if m[2] >= 0 {
			fn := strings.TrimRight(body[m[2]:m[3]], "( \t")
			end := closing(body, strings.IndexByte(body[m[2]:], '(')+m[2])
			a := access{kind: fn, start: m[2], end: end}
			switch fn {
			case Release, OnceW:
				a.value = strings.TrimSpace(body[m[1] : end-1])
				a.value = strings.TrimSpace(strings.TrimPrefix(a.value, ","))
			case Acquire, OnceR, Lock, Unlock:
			default:
				continue // a variable passed on: not an access here
			}
			out = append(out, a)
			continue
		}
		if m[4] == m[5] {
			continue // the pointer itself, not what it points to
		}
		a := access{kind: PlainR, start: m[0], end: m[1]}
		rest := body[m[1]:]
		if eq := assignment.FindStringIndex(rest); eq != nil {
			semi := strings.IndexByte(rest, ';')
			a.kind, a.value, a.end = PlainW, strings.TrimSpace(rest[eq[1]-1:semi]), m[1]+semi
		}
		out = append(out, a)
	}
	return out
}

// render writes access a of kind as litmus C for variable v.
func render(kind, v, value string) string {
	switch kind {
	case Release, OnceW:
		if kind == OnceW {
			v = "*" + v
		}
		return fmt.Sprintf("%s(%s, %s)", kind, v, value)
	case PlainW:
		return fmt.Sprintf("*%s = %s", v, value)
	case Acquire, Lock, Unlock:
		return fmt.Sprintf("%s(%s)", kind, v)
	case OnceR:
		return fmt.Sprintf("READ_ONCE(*%s)", v)
	case PlainR:
		return "*" + v
	}
	return ""
}

// Kinds lists the distinct kinds of access in accesses, sorted.
func kinds(as []access) []string {
	var out []string
	for _, a := range as {
		if !slices.Contains(out, a.kind) {
			out = append(out, a.kind)
		}
	}
	sort.Strings(out)
	return out
}

// Mismatch is a bound thread whose accesses of a variable differ from
// its C's.
type Mismatch struct {
	Thread, Var, Expr, Where string
	Litmus, C                []string // kinds of access
	// Held: the kinds are the same, the locks held at them differ
	// (Litmus and C list "kind holding locks").
	Held bool
}

func (m Mismatch) String() string {
	return fmt.Sprintf("%s accesses %s (%s) with %s; the litmus test's %s with %s", m.Where, m.Expr, m.Var, orNone(m.C), m.Thread, orNone(m.Litmus))
}

func orNone(k []string) string {
	if len(k) == 0 {
		return "nothing"
	}
	return strings.Join(k, ", ")
}

// Check compares each bound thread of t with the C in dir (the module's
// directory) and lists where they differ: how each bound expression is
// accessed, and which bound locks are held at each access.
func (t Test) Check(dir string) ([]Mismatch, error) {
	var out []Mismatch
	for _, th := range slices.Sorted(maps.Keys(t.Source)) {
		src := t.Source[th]
		c, err := functions(filepath.Join(dir, src[0]), src[1:])
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", t.Path, th, err)
		}
		s, e, _ := thread(t.Text, th)
		where := src[0] + " " + strings.Join(src[1:], ", ")
		la, ca := map[string][]access{}, map[string][]access{}
		for _, v := range slices.Sorted(maps.Keys(t.Binds)) {
			la[v], ca[v] = litmusAccesses(t.Text[s:e], v), cAccessList(c, t.Binds[v])
		}
		for _, v := range slices.Sorted(maps.Keys(t.Binds)) {
			lk, ck := kinds(la[v]), kinds(ca[v])
			if len(lk) == 0 && len(ck) == 0 {
				continue
			}
			if !slices.Equal(lk, ck) {
				out = append(out, Mismatch{Thread: th, Var: v, Expr: t.Binds[v], Where: where, Litmus: lk, C: ck})
				continue
			}
			if lc, cc := lockContext(la, v), lockContext(ca, v); !slices.Equal(lc, cc) {
				out = append(out, Mismatch{Thread: th, Var: v, Expr: t.Binds[v], Where: where, Litmus: lc, C: cc, Held: true})
			}
		}
	}
	return out, nil
}

// lockContext lists, for each access of v in as (every bound variable's
// accesses in one body), its kind and the bound locks held there.
func lockContext(as map[string][]access, v string) []string {
	var out []string
	for _, a := range as[v] {
		if isLock(a.kind) {
			return nil
		}
		var held []string
		for _, l := range slices.Sorted(maps.Keys(as)) {
			depth := 0
			for _, e := range as[l] {
				if e.start < a.start && e.kind == Lock {
					depth++
				}
				if e.start < a.start && e.kind == Unlock {
					depth--
				}
			}
			if depth > 0 {
				held = append(held, l)
			}
		}
		k := a.kind + " holding " + orNone(held)
		if !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// Derive returns t's text with every access in the mismatched threads
// written as the C does it: the litmus test of the C as it is. It fails
// when a difference has no such rewriting (the C accesses a variable in
// two ways where the test does in one, say): the test must be rewritten
// by hand.
func (t Test) Derive(ms []Mismatch) (string, error) {
	text := t.Text
	// From the end, so that earlier offsets hold.
	type edit struct {
		start, end int
		repl       string
	}
	var edits []edit
	dropped := map[string]bool{} // lock variables the C no longer takes
	for _, m := range ms {
		if !m.Held && len(m.C) == 0 && len(m.Litmus) > 0 && isLock(m.Litmus[0]) {
			dropped[m.Thread+" "+m.Var] = true
		}
	}
	for _, m := range ms {
		if m.Held {
			// Explained by a lock the C dropped (that rewriting removes
			// it); a lock taken elsewhere is a change of structure.
			if !heldOnlyDropped(m, dropped) {
				return "", fmt.Errorf("%s: %s: cannot be derived: rewrite the litmus test", t.Path, m)
			}
			continue
		}
		if len(m.C) > 1 || len(m.Litmus) != 1 && !(len(m.Litmus) == 2 && isLock(m.Litmus[0]) && isLock(m.Litmus[1]) && len(m.C) == 0) {
			return "", fmt.Errorf("%s: %s: cannot be derived: rewrite the litmus test", t.Path, m)
		}
		s, e, _ := thread(text, m.Thread)
		for _, a := range litmusAccesses(text[s:e], m.Var) {
			to := ""
			if len(m.C) == 1 {
				to = m.C[0]
			}
			if to != "" && isStore(to) != isStore(a.kind) || isLock(a.kind) && to != "" {
				return "", fmt.Errorf("%s: %s: cannot be derived: rewrite the litmus test", t.Path, m)
			}
			repl := render(to, m.Var, a.value)
			start, end := s+a.start, s+a.end
			if repl == "" {
				// A dropped lock: the whole statement and its line.
				ls := strings.LastIndexByte(text[:start], '\n') + 1
				le := strings.IndexByte(text[end:], '\n')
				start, end = ls, end+le+1
			}
			edits = append(edits, edit{start, end, repl})
		}
	}
	sort.Slice(edits, func(i, j int) bool { return edits[i].start > edits[j].start })
	for _, e := range edits {
		text = text[:e.start] + e.repl + text[e.end:]
	}
	return text, nil
}

// heldOnlyDropped reports whether m's difference in locks held is only
// that the locks in dropped are not held in the C.
func heldOnlyDropped(m Mismatch, dropped map[string]bool) bool {
	strip := func(ks []string) []string {
		var out []string
		for _, k := range ks {
			kind, locks, _ := strings.Cut(k, " holding ")
			var kept []string
			for _, l := range strings.Split(locks, ", ") {
				if l != "nothing" && !dropped[m.Thread+" "+l] {
					kept = append(kept, l)
				}
			}
			k = kind + " holding " + orNone(kept)
			if !slices.Contains(out, k) {
				out = append(out, k)
			}
		}
		sort.Strings(out)
		return out
	}
	return slices.Equal(strip(m.Litmus), strip(m.C))
}

// Weakened returns variants of t, one per access of a bound variable in
// a bound thread made one step weaker (Weaker), each named for what it
// weakened: what the LKMM must refuse for the barrier to be needed.
func (t Test) Weakened() map[string]string {
	out := map[string]string{}
	for _, th := range slices.Sorted(maps.Keys(t.Source)) {
		s, e, _ := thread(t.Text, th)
		for _, v := range slices.Sorted(maps.Keys(t.Binds)) {
			as := litmusAccesses(t.Text[s:e], v)
			ks := kinds(as)
			if len(ks) == 0 {
				continue
			}
			w := Weaker(ks[0])
			if w == ks[0] {
				continue
			}
			var cw []string
			if w != "" {
				cw = []string{w}
			}
			text, err := t.Derive([]Mismatch{{Thread: th, Var: v, Litmus: ks, C: cw}})
			if err != nil {
				continue
			}
			name := fmt.Sprintf("%s %s with %s", th, v, orNone(cw))
			if cw == nil {
				name = fmt.Sprintf("%s without %s", th, strings.Join(ks, "/"))
			}
			out[name] = text
		}
	}
	return out
}

// functions returns the bodies of the named functions in a C file,
// joined in the order named.
func functions(path string, names []string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	src := string(b)
	var out strings.Builder
	for _, name := range names {
		def := regexp.MustCompile(`(?m)^\w[^;{]*\b` + regexp.QuoteMeta(name) + `\([^;]*\)\s*\n\{\n`).FindStringIndex(src)
		if def == nil {
			return "", fmt.Errorf("no definition of %s() in %s", name, path)
		}
		end := strings.Index(src[def[1]:], "\n}\n")
		if end < 0 {
			return "", fmt.Errorf("%s() in %s has no closing brace at the start of a line", name, path)
		}
		out.WriteString(src[def[1] : def[1]+end])
		out.WriteString("\n")
	}
	return out.String(), nil
}

// assignment matches what follows a litmus test's plain store's target.
var assignment = regexp.MustCompile(`^\s*=[^=]`)

// plainStore matches what follows a plain store's target: an
// assignment, a compound one or an increment.
var plainStore = regexp.MustCompile(`^\s*(?:[-+*/%&|^]|<<|>>)?=[^=]|^\s*(?:\+\+|--)`)

// cAccessList lists the accesses C code makes of expr, in order: a
// marked access names its primitive; an expression whose address is
// passed to anything else is not an access (lockdep_assert_held(&ring->lock)).
func cAccessList(code, expr string) []access {
	var as []access
	re := regexp.MustCompile(`(\b\w+\(\s*)?(&?)` + regexp.QuoteMeta(expr) + `\b`)
	for _, m := range re.FindAllStringSubmatchIndex(code, -1) {
		if m[1] < len(code) && strings.HasPrefix(code[m[1]:], "->") {
			continue // a member of it: another expression
		}
		if m[2] >= 0 {
			fn := strings.TrimRight(code[m[2]:m[3]], "( \t")
			switch fn {
			case Release, Acquire, OnceW, OnceR, Lock, Unlock:
				as = append(as, access{kind: fn, start: m[0]})
				continue
			}
		}
		if m[4] != m[5] {
			continue // its address, given away
		}
		kind := PlainR
		if plainStore.MatchString(code[m[1]:]) {
			kind = PlainW
		}
		as = append(as, access{kind: kind, start: m[0]})
	}
	return as
}

// Verdict is what herd7 said of one test.
type Verdict struct {
	Result   string // Never, Sometimes or Always
	DataRace bool   // the LKMM flagged a data race: undefined behaviour
	Output   string
}

// Fails reports whether v breaks a test that expects want: another
// result, or any data race.
func (v Verdict) Fails(want string) bool { return v.Result != want || v.DataRace }

func (v Verdict) String() string {
	if v.DataRace {
		return v.Result + " (and a data race)"
	}
	return v.Result
}

// Herd runs herd7 on tests (name → litmus text) in one call: command
// makes the command to run (herd7 may live in a root of its own), lkmm
// is the directory holding the LKMM's linux-kernel.cfg and the files it
// names, dir a scratch directory the command sees at the same path.
func Herd(command func(workdir string, args ...string) *exec.Cmd, lkmm, dir string, tests map[string]string) (map[string]Verdict, error) {
	var files []string
	names := map[string]string{} // the C name herd7 prints → ours
	for i, name := range slices.Sorted(maps.Keys(tests)) {
		text := tests[name]
		first, rest, _ := strings.Cut(text, "\n")
		if !strings.HasPrefix(first, "C ") {
			return nil, fmt.Errorf("%s: a C litmus test starts with \"C <name>\", not %q", name, first)
		}
		id := fmt.Sprintf("t%d", i)
		names[id] = name
		f := filepath.Join(dir, id+".litmus")
		if err := os.WriteFile(f, []byte("C "+id+"\n"+rest), 0o644); err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	cmd := command(lkmm, append([]string{"herd7", "-conf", "linux-kernel.cfg"}, files...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("herd7: %v\n%s", err, out)
	}
	got := map[string]Verdict{}
	var cur string
	var block strings.Builder
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) >= 2 && f[0] == "Test":
			cur = names[f[1]]
			block.Reset()
		case len(f) >= 3 && f[0] == "Observation" && cur != "":
			v := got[cur]
			v.Result = f[2]
			got[cur] = v
		case len(f) == 2 && f[0] == "Flag" && f[1] == "data-race" && cur != "":
			v := got[cur]
			v.DataRace = true
			got[cur] = v
		}
		block.WriteString(l + "\n")
		if cur != "" {
			v := got[cur]
			v.Output = block.String()
			got[cur] = v
		}
	}
	for name := range tests {
		if got[name].Result == "" {
			return nil, fmt.Errorf("herd7 gave no verdict on %s:\n%s", name, out)
		}
	}
	return got, nil
}
