package kernels

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// MirrorEnv is the variable the harness's configuration takes another
// Debian mirror from (vmtests.Vars); errors about the mirror name it.
const MirrorEnv = "KMMAP_DEBIAN_MIRROR"

var debianSuites = map[string]bool{
	"bullseye": true, "bookworm": true, "trixie": true, "forky": true,
	"duke": true, "sid": true, "unstable": true, "testing": true, "stable": true,
}

// Mirror returns the base URL of a Debian archive (the directory holding
// dists/ and pool/): the first Debian source
// in apt's configuration under aptDir (normally /etc/apt).
func Mirror(aptDir string) (string, error) {
	files := []string{filepath.Join(aptDir, "sources.list")}
	for _, pat := range []string{"*.list", "*.sources"} {
		m, _ := filepath.Glob(filepath.Join(aptDir, "sources.list.d", pat))
		files = append(files, m...)
	}
	for _, f := range files {
		srcs, err := readSources(f)
		if err != nil {
			continue
		}
		for _, s := range srcs {
			if s.debian() {
				return strings.TrimRight(s.uri, "/"), nil
			}
		}
	}
	return "", fmt.Errorf("no Debian mirror found in %s/sources.list*: set %s to a Debian archive URL (the directory holding dists/ and pool/)", aptDir, MirrorEnv)
}

type source struct {
	uri    string
	suites []string
}

// debian reports whether s is a main Debian archive (not security, not a
// third-party repository).
func (s source) debian() bool {
	for _, suite := range s.suites {
		base, _, _ := strings.Cut(suite, "-")
		if debianSuites[base] && !strings.HasSuffix(suite, "-security") {
			return true
		}
	}
	return false
}

// readSources reads one-line (.list) or deb822 (.sources) apt sources.
func readSources(path string) ([]source, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []source
	sc := bufio.NewScanner(f)
	if strings.HasSuffix(path, ".sources") {
		var cur map[string]string
		flush := func() {
			if cur != nil && strings.Contains(" "+cur["types"]+" ", " deb ") && cur["enabled"] != "no" {
				for _, u := range strings.Fields(cur["uris"]) {
					out = append(out, source{uri: u, suites: strings.Fields(cur["suites"])})
				}
			}
			cur = nil
		}
		for sc.Scan() {
			line := sc.Text()
			if strings.TrimSpace(line) == "" {
				flush()
				continue
			}
			if strings.HasPrefix(line, "#") || strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t") {
				continue
			}
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			if cur == nil {
				cur = map[string]string{}
			}
			cur[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
		}
		flush()
		return out, sc.Err()
	}
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 || fields[0] != "deb" {
			continue
		}
		fields = fields[1:]
		if strings.HasPrefix(fields[0], "[") { // options: [arch=amd64 signed-by=...]
			for len(fields) > 0 && !strings.HasSuffix(fields[0], "]") {
				fields = fields[1:]
			}
			if len(fields) > 0 {
				fields = fields[1:]
			}
		}
		if len(fields) >= 2 {
			out = append(out, source{uri: fields[0], suites: fields[1:2]})
		}
	}
	return out, sc.Err()
}
