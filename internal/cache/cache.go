// Package cache is the primitives of kmmap's cache directory, which the
// kernels, the toolchain roots, the module builds, the guest images and
// the snapshots share between processes and users: exclusive locks
// (flock), a file made once and never seen half-written (Build), atomic
// writes, content hashes, removal of read-only trees, and errors that say
// when another user owns a part of it. It knows files, nothing of what
// they hold.
package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Env is the variable the harness's configuration takes another cache
// directory from (vmtests.Vars); errors about the cache name it.
const Env = "KMMAP_CACHE"

// DefaultDir is where downloads, unpacked kernels and built artefacts
// live unless the configuration says otherwise: kmmap/ under the user's
// cache directory.
func DefaultDir() (string, error) {
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no cache directory: set %s: %w", Env, err)
	}
	return filepath.Join(d, "kmmap"), nil
}

// FileLock is an exclusive advisory lock on a file, shared safely between
// processes (flock): concurrent test runs on one cache wait for each other.
type FileLock struct{ f *os.File }

// ErrLocked is TryLockFile's error when another holds the lock.
var ErrLocked = errors.New("held by another")

// LockFile takes an exclusive lock on path, creating it if needed,
// waiting while another holds it.
func LockFile(path string) (*FileLock, error) { return lockFile(path, 0) }

// TryLockFile takes the lock LockFile takes, or returns an error wrapping
// ErrLocked at once when another holds it.
func TryLockFile(path string) (*FileLock, error) { return lockFile(path, unix.LOCK_NB) }

func lockFile(path string, how int) (*FileLock, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, NotYours(filepath.Dir(path), err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, NotYours(path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|how); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			err = ErrLocked
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return &FileLock{f: f}, nil
}

// NotYours explains err, a failure to use path in the cache, when the cause
// is that another user (root, for a cache an older kmmap filled through
// sudo) owns path or a directory above it; other errors are returned as
// they are. It names what to remove only where that is a directory the
// other user made inside one of this user's: never a system directory.
func NotYours(path string, err error) error {
	if !errors.Is(err, fs.ErrPermission) {
		return err
	}
	owner := func(p string) (uint32, bool) {
		var st unix.Stat_t
		if unix.Lstat(p, &st) != nil {
			return 0, false
		}
		return st.Uid, true
	}
	var theirs string
	var uid uint32
	for p := path; ; p = filepath.Dir(p) {
		if u, ok := owner(p); ok {
			if int(u) == os.Geteuid() {
				break
			}
			theirs, uid = p, u
		}
		if p == filepath.Dir(p) {
			return fmt.Errorf("%w\nthis user cannot write the kmmap cache there: set %s to a directory of your own", err, Env)
		}
	}
	if theirs == "" {
		return err
	}
	who := fmt.Sprintf("uid %d", uid)
	if u, err := user.LookupId(fmt.Sprint(uid)); err == nil {
		who = u.Username
	}
	return fmt.Errorf("%w\n%s belongs to %s, not to this user: another user made it in this user's cache "+
		"(older kmmap versions made toolchain roots with `sudo make toolchains`; nothing needs root now). "+
		"Remove it once, `sudo rm -rf %s`, or set %s to another directory", err, theirs, who, theirs, Env)
}

// RemoveAll removes path like os.RemoveAll, first giving its owner write
// permission on each of its directories: an unpacked Debian root has
// read-only ones, which os.RemoveAll cannot empty for a user who is not root.
func RemoveAll(path string) error {
	filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			if info, err := d.Info(); err == nil && info.Mode().Perm()&0o700 != 0o700 {
				os.Chmod(p, info.Mode().Perm()|0o700)
			}
		}
		return nil
	})
	return os.RemoveAll(path)
}

// Unlock releases the lock.
func (l *FileLock) Unlock() error {
	defer l.f.Close()
	return unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
}

// WriteFileAtomic writes data to a temporary file beside path and renames it
// into place, so readers see either the old or the whole new content.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// Build returns dst, making it first if it does not exist yet (its
// directory too). make writes into tmp, a fresh directory beside dst, and returns the file it made
// there; that file is renamed to dst. Concurrent callers, in this process or
// others, wait for one another, so dst is made once and is never seen
// half-written.
func Build(dst string, make func(tmp string) (string, error)) (string, error) {
	if _, err := os.Stat(dst); err == nil {
		return dst, nil
	}
	lk, err := LockFile(dst + ".lock")
	if err != nil {
		return "", err
	}
	defer lk.Unlock()
	if _, err := os.Stat(dst); err == nil {
		return dst, nil
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dst), ".build-"+filepath.Base(dst)+"-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	out, err := make(tmp)
	if err != nil {
		return "", err
	}
	if err := os.Rename(out, dst); err != nil {
		return "", err
	}
	return dst, nil
}

// HashFile is the SHA-256 of a file, in hex.
func HashFile(path string) (string, error) {
	r, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer r.Close()
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
