package vmtests

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/kmmap/kmmap/internal/arch"
)

// Measure boots a prepared cell once with suite job j and returns how
// long each stage took; an error if the run was not a clean pass (a
// benchmark of a failing cell means nothing).
func Measure(ctx context.Context, c *Cell, j SuiteJob) (Timeline, error) {
	r := boot(ctx, c, j)
	if what, detail := c.failures(r); len(what) > 0 {
		return r.times, fmt.Errorf("%s: %s:\n%s", c.ID, strings.Join(what, ", "), detail)
	}
	return r.times, nil
}

// BenchResult is one guest benchmark's line.
type BenchResult struct {
	Name    string             // e.g. "Consume/1MiB/mmap"
	N       int                // iterations
	Metrics map[string]float64 // unit -> value: "ns/op", "MB/s", "records/s"
}

var benchLineRe = regexp.MustCompile(`^Benchmark(\S+?)(?:-\d+)?\s+(\d+)\s+(.+)$`)

// GuestBench boots c with benchmark job j and returns the benchmarks'
// results.
func GuestBench(ctx context.Context, c *Cell, j BenchJob) ([]BenchResult, error) {
	r := boot(ctx, c, j)
	if p := c.problems(r); len(p) > 0 && !(len(r.res.list) == 0 && len(p) == 1) {
		return nil, fmt.Errorf("%s: %s", c.ID, strings.Join(p, "\n"))
	}
	if r.res.exitErr != "" {
		return nil, fmt.Errorf("%s: guest benchmarks failed: %s\n%s", c.ID, r.res.exitErr, r.benchOut.String())
	}
	out := parseBench(r.benchOut.String())
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no benchmark results from the guest:\n%s", c.ID, r.benchOut.String())
	}
	return out, nil
}

// parseBench reads `go test -bench` output lines.
func parseBench(s string) []BenchResult {
	var out []BenchResult
	for _, l := range strings.Split(s, "\n") {
		m := benchLineRe.FindStringSubmatch(strings.TrimSpace(l))
		if m == nil {
			continue
		}
		n, _ := strconv.Atoi(m[2])
		res := BenchResult{Name: m[1], N: n, Metrics: map[string]float64{}}
		f := strings.Fields(m[3])
		for i := 0; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				res.Metrics[f[i+1]] = v
			}
		}
		out = append(out, res)
	}
	return out
}

// BuildGuestImage builds the guest binaries and the base initramfs for
// arch, through the disk cache, not the harness's memo of them.
func (h *Harness) BuildGuestImage(name string, logf func(string, ...any)) (string, error) {
	a, err := arch.Lookup(name)
	if err != nil {
		return "", err
	}
	if _, err := h.buildGuestSuite(a); err != nil {
		return "", err
	}
	return h.baseImage(a, logf)
}
