package kernels

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// extractDeb unpacks the data archive of a .deb into root. Absolute symlink
// targets are rewritten relative to root so the tree stays self-contained
// wherever it is moved.
func extractDeb(debPath, root string) error {
	return withDebData(debPath, func(tr *tar.Reader) error { return untar(tr, root) })
}

// withDebData calls f with the (decompressed) data.tar of a .deb.
func withDebData(debPath string, f func(*tar.Reader) error) error {
	file, err := os.Open(debPath)
	if err != nil {
		return err
	}
	defer file.Close()
	name, data, err := debData(bufio.NewReaderSize(file, 1<<20))
	if err != nil {
		return fmt.Errorf("%s: %w", debPath, err)
	}
	r, closeR, err := decompress(name, data)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", debPath, name, err)
	}
	defer closeR()
	if err := f(tar.NewReader(r)); err != nil {
		return fmt.Errorf("%s: %w", debPath, err)
	}
	return nil
}

// decompress opens a stream compressed as its name's ending says.
func decompress(name string, r io.Reader) (io.Reader, func(), error) {
	switch {
	case strings.HasSuffix(name, ".xz"):
		xr, err := xz.NewReader(r)
		return xr, func() {}, err
	case strings.HasSuffix(name, ".zst"):
		zr, err := zstd.NewReader(r)
		if err != nil {
			return nil, nil, err
		}
		return zr, zr.Close, nil
	case strings.HasSuffix(name, ".gz"):
		gr, err := gzip.NewReader(r)
		return gr, func() {}, err
	case strings.HasSuffix(name, ".tar"):
		return r, func() {}, nil
	}
	return nil, nil, fmt.Errorf("unsupported compression in %q", name)
}

// debData walks the ar archive and returns the data.tar member.
func debData(r io.Reader) (string, io.Reader, error) {
	magic := make([]byte, 8)
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != "!<arch>\n" {
		return "", nil, errors.New("not a .deb (ar) archive")
	}
	hdr := make([]byte, 60)
	for {
		if _, err := io.ReadFull(r, hdr); err != nil {
			return "", nil, errors.New("no data.tar member in .deb")
		}
		name := strings.TrimSuffix(strings.TrimSpace(string(hdr[0:16])), "/")
		size, err := strconv.ParseInt(strings.TrimSpace(string(hdr[48:58])), 10, 64)
		if err != nil || size < 0 {
			return "", nil, fmt.Errorf("corrupt ar header for %q", name)
		}
		if strings.HasPrefix(name, "data.tar") {
			return name, io.LimitReader(r, size), nil
		}
		if _, err := io.CopyN(io.Discard, r, size+size%2); err != nil {
			return "", nil, fmt.Errorf("truncated .deb member %q", name)
		}
	}
}

func untar(tr *tar.Reader, root string) error {
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		rel := filepath.Clean(strings.TrimPrefix(h.Name, "./"))
		if rel == "." || strings.HasPrefix(rel, "..") || strings.HasPrefix(rel, "usr/share/doc") {
			continue
		}
		dst := filepath.Join(root, rel)
		if h.Typeflag != tar.TypeDir {
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return err
			}
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(dst, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode).Perm()|0o600)
			if err != nil {
				return err
			}
			if _, err := io.Copy(out, tr); err != nil {
				out.Close()
				return err
			}
			if err := out.Close(); err != nil {
				return err
			}
		case tar.TypeSymlink:
			target := h.Linkname
			if filepath.IsAbs(target) {
				t, err := filepath.Rel(filepath.Dir(dst), filepath.Join(root, target))
				if err != nil {
					return err
				}
				target = t
			}
			_ = os.Remove(dst)
			if err := os.Symlink(target, dst); err != nil {
				return err
			}
		case tar.TypeLink:
			_ = os.Remove(dst)
			if err := os.Link(filepath.Join(root, filepath.Clean(strings.TrimPrefix(h.Linkname, "./"))), dst); err != nil {
				return err
			}
		}
	}
}

// rewriteFile replaces old with new in a text file, if it holds it.
func rewriteFile(path, old, new string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if !bytes.Contains(b, []byte(old)) {
		return nil
	}
	return os.WriteFile(path, bytes.ReplaceAll(b, []byte(old), []byte(new)), 0o644)
}
