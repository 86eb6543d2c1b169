// Package ioctl checks the ioctl numbers a module defines against the
// kernel's registry of ioctl codes (ioctl-number.rst): a number another
// driver or the tty and socket layers already use reaches the wrong code
// when a program calls it on the wrong file, and theirs reach the module
// (`_IO('T', 1)` is TCGETS: every isatty() on the device runs it).
//
// It reads C sources, not the built module: the numbers are where the
// author wrote them, with their file and line.
package ioctl

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// Row is one row of the registry: a code (the ioctl "type", 8 bits),
// the command numbers it covers, and who has them.
type Row struct {
	Code   int
	Lo, Hi int    // command numbers, inclusive (0-255 for "all")
	Owner  string // the include file, and the row's comment
}

// rowRe is a row of ioctl-number.rst's table: code (0xNN or a quoted
// character), then "all", NN or NN-NN, then the include file and comment.
var rowRe = regexp.MustCompile(`(?m)^(0x[0-9A-Fa-f]{2}|'.')\s+(all|[0-9A-Fa-f]{2}(?:-[0-9A-Fa-f]{2})?)\s+(.*)$`)

// ParseTable reads the registry's rows; an error when it holds too few
// for its format to be the one known.
func ParseTable(rst string) ([]Row, error) {
	var rows []Row
	for _, m := range rowRe.FindAllStringSubmatch(rst, -1) {
		code, err := value(m[1], nil)
		if err != nil {
			continue
		}
		r := Row{Code: code, Lo: 0, Hi: 255, Owner: strings.Join(strings.Fields(m[3]), " ")}
		if m[2] != "all" {
			lo, hi, _ := strings.Cut(m[2], "-")
			if hi == "" {
				hi = lo
			}
			l, _ := strconv.ParseInt(lo, 16, 32)
			h, _ := strconv.ParseInt(hi, 16, 32)
			r.Lo, r.Hi = int(l), int(h)
		}
		rows = append(rows, r)
	}
	if len(rows) < 100 {
		return nil, fmt.Errorf("read %d rows from the ioctl registry: its format changed", len(rows))
	}
	return rows, nil
}

// Number is one ioctl number the sources define: _IO, _IOR, _IOW or
// _IOWR with its code and command number (Nr -1 when the command number
// is not a constant the sources define).
type Number struct {
	Code, Nr int
	At       string // file:line
	Text     string // as written
}

var (
	defineRe = regexp.MustCompile(`^\s*#\s*define\s+(\w+)\s+(.+?)\s*(?:/[/*].*)?$`)
	ioRe     = regexp.MustCompile(`\b_IO(?:R|W|WR)?\s*\(\s*([^,()]+?)\s*,\s*([^,()]+?)\s*[,)]`)
	numberRe = regexp.MustCompile(`^(0[xX][0-9A-Fa-f]+|[0-9]+)[uUlL]*$`)
)

// FromSources reads the ioctl numbers defined in dir's .c and .h files
// (its subdirectories too), resolving the codes and command numbers
// given through #define.
func FromSources(dir string) ([]Number, error) {
	type use struct{ code, nr, at, text string }
	defs := map[string]string{}
	var uses []use
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !(strings.HasSuffix(p, ".c") || strings.HasSuffix(p, ".h")) {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		rel, _ := filepath.Rel(dir, p)
		s := bufio.NewScanner(f)
		for n := 1; s.Scan(); n++ {
			line := s.Text()
			if m := defineRe.FindStringSubmatch(line); m != nil {
				defs[m[1]] = m[2]
			}
			if strings.Contains(line, "#define _IO") {
				continue // the macros themselves
			}
			for _, m := range ioRe.FindAllStringSubmatch(line, -1) {
				uses = append(uses, use{m[1], m[2], fmt.Sprintf("%s:%d", rel, n), strings.TrimSpace(m[0])})
			}
		}
		return s.Err()
	})
	if err != nil {
		return nil, err
	}
	var out []Number
	for _, u := range uses {
		code, err := value(u.code, defs)
		if err != nil {
			continue // a parameter of a macro of the module's own (#define MY_IO(nr) _IO(MAGIC, nr))
		}
		nr, err := value(u.nr, defs)
		if err != nil {
			nr = -1
		}
		text := u.text
		if strings.HasSuffix(text, ",") {
			text += " ...)"
		}
		out = append(out, Number{Code: code, Nr: nr, At: u.at, Text: text})
	}
	return out, nil
}

// value is a C constant: 'c', 0xNN, a decimal, or a name #defined as one
// (through a few levels), in parentheses or not.
func value(s string, defs map[string]string) (int, error) {
	for range 8 {
		s = strings.TrimSpace(s)
		for strings.HasPrefix(s, "(") && strings.HasSuffix(s, ")") {
			s = strings.TrimSpace(s[1 : len(s)-1])
		}
		switch {
		case len(s) == 3 && s[0] == '\'' && s[2] == '\'':
			return int(s[1]), nil
		case numberRe.MatchString(s):
			v, err := strconv.ParseInt(strings.TrimRight(s, "uUlL"), 0, 32)
			return int(v), err
		}
		d, ok := defs[s]
		if !ok {
			return 0, fmt.Errorf("%q is not a constant", s)
		}
		s = d
	}
	return 0, fmt.Errorf("%q: too many levels of #define", s)
}

// Clash is a number of the module's that the registry gives to others.
type Clash struct {
	Number
	Rows []Row // every row that covers it
}

func (c Clash) String() string {
	nr := fmt.Sprintf("command %#02x", c.Nr)
	if c.Nr < 0 {
		nr = "a command number not known here"
	}
	var owners []string
	for _, r := range c.Rows {
		owners = append(owners, fmt.Sprintf("%s (%s)", r.Owner, rangeString(r)))
	}
	return fmt.Sprintf("%s: %s: code %s, %s, is registered to %s", c.At, c.Text, codeString(c.Code), nr, strings.Join(owners, "; "))
}

func codeString(code int) string {
	if code > ' ' && code < 0x7f {
		return fmt.Sprintf("%#02x '%c'", code, code)
	}
	return fmt.Sprintf("%#02x", code)
}

func rangeString(r Row) string {
	if r.Lo == 0 && r.Hi == 255 {
		return "every command"
	}
	return fmt.Sprintf("commands %02x-%02x", r.Lo, r.Hi)
}

// Check returns the numbers that clash with the registry's rows: the same
// code, and a command number in the row's range (any, if not known).
func Check(nums []Number, rows []Row) []Clash {
	var out []Clash
	for _, n := range nums {
		c := Clash{Number: n}
		for _, r := range rows {
			if n.Code == r.Code && (n.Nr < 0 || n.Nr >= r.Lo && n.Nr <= r.Hi) {
				c.Rows = append(c.Rows, r)
			}
		}
		if len(c.Rows) > 0 {
			out = append(out, c)
		}
	}
	return out
}
