package event

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// maxFiles bounds the files frame (a guest test binary is ~10 MB).
const maxFiles = 512 << 20

// File is one file the host sends the guest after the snapshot point:
// the guest test binary and the suite's own files. They change with
// every edit of a guest test, so they travel with the run instead of
// being baked into the image and the snapshot.
type File struct {
	Path string      // absolute path in the guest
	Mode fs.FileMode // permission bits
	Data []byte
}

// fileHeader describes one file of a files frame.
type fileHeader struct {
	Path   string      `json:"path"`
	Mode   fs.FileMode `json:"mode"`
	Size   int         `json:"size"`
	SHA256 string      `json:"sha256"`
}

// WriteFiles sends files as one frame: a JSON line naming each with its
// size and SHA-256, then their bytes in that order.
func WriteFiles(w io.Writer, files []File) error {
	hs := make([]fileHeader, len(files))
	for i, f := range files {
		sum := sha256.Sum256(f.Data)
		hs[i] = fileHeader{Path: f.Path, Mode: f.Mode.Perm(), Size: len(f.Data), SHA256: hex.EncodeToString(sum[:])}
	}
	if err := writeLine(w, struct {
		Files []fileHeader `json:"files"`
	}{hs}); err != nil {
		return err
	}
	for _, f := range files {
		if _, err := w.Write(f.Data); err != nil {
			return err
		}
	}
	return nil
}

// ReceiveFiles reads a files frame from br and writes each file at its
// path under root ("/" in the guest), making its directories; each is
// checked against its size and SHA-256 before it is renamed into place.
// It returns the paths written.
func ReceiveFiles(br *bufio.Reader, root string) ([]string, error) {
	var frame struct {
		Files []fileHeader `json:"files"`
	}
	if err := readLine(br, "files", &frame); err != nil {
		return nil, err
	}
	total := 0
	for _, h := range frame.Files {
		total += h.Size
		if !filepath.IsAbs(h.Path) || strings.Contains(h.Path, "..") || h.Size < 0 || total > maxFiles {
			return nil, fmt.Errorf("files: %q (%d bytes): not an absolute clean path, or over %d bytes in all", h.Path, h.Size, maxFiles)
		}
	}
	var paths []string
	for _, h := range frame.Files {
		dst := filepath.Join(root, h.Path)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return nil, err
		}
		tmp, err := os.CreateTemp(filepath.Dir(dst), ".recv-*")
		if err != nil {
			return nil, err
		}
		sum := sha256.New()
		_, err = io.CopyN(io.MultiWriter(tmp, sum), br, int64(h.Size))
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err == nil && hex.EncodeToString(sum.Sum(nil)) != h.SHA256 {
			err = fmt.Errorf("SHA-256 %x, header says %s (corrupted on the way)", sum.Sum(nil), h.SHA256)
		}
		if err == nil {
			err = os.Chmod(tmp.Name(), h.Mode.Perm())
		}
		if err == nil {
			err = os.Rename(tmp.Name(), dst)
		}
		if err != nil {
			os.Remove(tmp.Name())
			return nil, fmt.Errorf("file %s: %d bytes announced: %w", h.Path, h.Size, err)
		}
		paths = append(paths, h.Path)
	}
	return paths, nil
}
