// Package snapshot is the store of saved guests: a guest saved by QEMU
// where the agent waits for its job (booted, its kernel's own modules
// loaded, the module under test not yet), named by everything that made
// it. It is two files: the guest's RAM (<key>.ram, sparse), which the
// booting guest ran in (a memory-backend-file shared with QEMU, so saving
// copies nothing), and QEMU's migration stream of everything else
// (<key>.state, a few hundred KB, with x-ignore-shared); beside them the
// boot's console (<key>.boot.log) and, for a person, <key>.json. The
// store names, locks, writes, publishes and removes snapshots; how a boot
// uses one (restoring, saving at the ready point) is the harness's.
package snapshot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/kmmap/kmmap/internal/cache"
	"github.com/kmmap/kmmap/internal/monitor"
)

// Store is a directory of snapshots, and what it has already hashed and
// asked QEMU.
type Store struct {
	dir string
	mu  sync.Mutex
	// hashes of files by path, size and modification time; versions of
	// QEMU binaries by name.
	hashes   map[string]string
	versions map[string]string
}

// New returns the store in dir (made when the first snapshot is saved).
func New(dir string) *Store {
	return &Store{dir: dir, hashes: map[string]string{}, versions: map[string]string{}}
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

// Machine is everything that makes a saved guest what it is: the QEMU
// binary (by its version), its machine and arguments, the kernel image,
// the initramfs and the kernel's command line. What a run does (its
// tests, the module under test, a command, the time and fresh entropy)
// comes after the snapshot point and is not part of it.
type Machine struct {
	ID               string // the cell, the key's prefix
	QEMU             string
	Machine          []string // the arch's machine arguments
	QEMUArgs         []string // the cell's
	KernelArgs       []string
	Image, Initramfs string
}

// Key names the snapshot of machine m.
func (s *Store) Key(m Machine) (string, error) {
	version, err := s.QEMUVersion(m.QEMU)
	if err != nil {
		return "", err
	}
	img, err := s.hash(m.Image)
	if err != nil {
		return "", err
	}
	initrd, err := s.hash(m.Initramfs)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	fmt.Fprintf(h, "kmmap-snapshot-v2\n%s\n%s %q\n%q\n%q\n%s\n%s\n", version, m.QEMU, m.Machine, m.QEMUArgs, m.KernelArgs, img, initrd)
	return m.ID + "-" + hex.EncodeToString(h.Sum(nil))[:16], nil
}

// hash is a file's SHA-256, remembered by its path, size and time.
func (s *Store) hash(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	id := fmt.Sprintf("%s\x00%d\x00%d", path, fi.Size(), fi.ModTime().UnixNano())
	s.mu.Lock()
	sum, ok := s.hashes[id]
	s.mu.Unlock()
	if ok {
		return sum, nil
	}
	if sum, err = cache.HashFile(path); err != nil {
		return "", err
	}
	s.mu.Lock()
	s.hashes[id] = sum
	s.mu.Unlock()
	return sum, nil
}

// QEMUVersion is what `qemu --version` prints first: a snapshot restores
// only into the QEMU that saved it.
func (s *Store) QEMUVersion(qemu string) (string, error) {
	s.mu.Lock()
	v, ok := s.versions[qemu]
	s.mu.Unlock()
	if ok {
		return v, nil
	}
	out, err := exec.Command(qemu, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w", qemu, err)
	}
	v, _, _ = strings.Cut(string(out), "\n")
	s.mu.Lock()
	s.versions[qemu] = v
	s.mu.Unlock()
	return v, nil
}

// State, RAM and BootLog are where the snapshot named key is kept.
func (s *Store) State(key string) string   { return filepath.Join(s.dir, key+".state") }
func (s *Store) RAM(key string) string     { return filepath.Join(s.dir, key+".ram") }
func (s *Store) BootLog(key string) string { return filepath.Join(s.dir, key+".boot.log") }

// TempRAM is the RAM file a guest that will save snapshot key boots in:
// this process's, until Save publishes it (kernels prune removes one whose
// process is gone).
func (s *Store) TempRAM(key string) string {
	return filepath.Join(s.dir, fmt.Sprintf(".tmp-%s-%d.ram", key, os.Getpid()))
}

// Has reports whether snapshot key is whole, and marks it in use (kernels
// prune keeps it).
func (s *Store) Has(key string) bool {
	files := []string{s.State(key), s.RAM(key), s.BootLog(key)}
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			return false
		}
	}
	now := time.Now()
	for _, f := range files {
		os.Chtimes(f, now, now)
	}
	return true
}

// Lock takes the lock that makes one run of many create the snapshot
// named key, waiting while another holds it.
func (s *Store) Lock(ctx context.Context, key string) (*cache.FileLock, error) {
	for {
		l, err := cache.TryLockFile(filepath.Join(s.dir, key+".lock"))
		if !errors.Is(err, cache.ErrLocked) {
			return l, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Meta is written beside each snapshot, for a person.
type Meta struct {
	Cell    string    `json:"cell"`
	QEMU    string    `json:"qemu"`
	Kernel  string    `json:"kernel"`
	Created time.Time `json:"created"`
	Bytes   int64     `json:"bytes"`
	SaveMs  int64     `json:"save_ms"`
}

// Save writes the stopped guest's state through mon (all but its RAM,
// which is in ram, a TempRAM file) into a temporary file beside the
// snapshot, and publishes both as snapshot key with the boot's console
// and meta. Every restored run's console starts with that console, so
// that its results show the boot and a kernel report during the boot
// fails every run, as it would have failed each cold boot.
func (s *Store) Save(ctx context.Context, mon *monitor.Monitor, key, ram string, console []string, meta Meta) error {
	start := time.Now()
	f, err := os.CreateTemp(s.dir, ".tmp-"+key+"-*.state")
	if err != nil {
		return err
	}
	tmp := f.Name()
	err = mon.Save(ctx, f)
	f.Close()
	if err == nil {
		err = cache.WriteFileAtomic(s.BootLog(key), []byte(strings.Join(console, "\n")+"\n"), 0o644)
	}
	if err == nil {
		meta.Created, meta.SaveMs = time.Now(), time.Since(start).Milliseconds()
		err = s.publish(tmp, ram, key, meta)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// publish moves a saved snapshot into place, the RAM first and the state
// last: a concurrent run sees no snapshot or a whole one.
func (s *Store) publish(tmpState, tmpRAM, key string, meta Meta) error {
	var size int64
	for _, path := range []string{tmpRAM, tmpState} {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		err = f.Sync()
		fi, statErr := f.Stat()
		f.Close()
		if err = errors.Join(err, statErr); err != nil {
			return err
		}
		size += fi.Size()
	}
	meta.Bytes = size
	b, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(s.dir, key+".json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmpRAM, s.RAM(key)); err != nil {
		return err
	}
	return os.Rename(tmpState, s.State(key))
}

// Remove deletes snapshot key (one that did not restore).
func (s *Store) Remove(key string) {
	os.Remove(s.State(key))
	os.Remove(s.RAM(key))
	os.Remove(s.BootLog(key))
	os.Remove(filepath.Join(s.dir, key+".json"))
}

// Boot is the console of the boot that saved snapshot key, a line each.
func (s *Store) Boot(key string) ([]string, error) {
	b, err := os.ReadFile(s.BootLog(key))
	if err != nil {
		return nil, err
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n"), nil
}
