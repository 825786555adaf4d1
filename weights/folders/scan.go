package folders

import (
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// scan is one folder's cached listing and what it depends on. Like ComfyUI's
// folder_paths.cached_filename_list_, it records the modification time of every
// directory walked: adding, removing or renaming an entry changes its parent
// directory's time, so comparing the times (and whether each root exists) is enough to
// know the listing is still right, without reading any directory.
type scan struct {
	names  []string
	roots  []string             // the folder's dirs at scan time
	exists []bool               // whether each root was a directory
	mtimes map[string]time.Time // every directory walked, links followed
}

// fresh reports whether the listing still describes dirs.
func (s *scan) fresh(dirs []string) bool {
	if !slices.Equal(s.roots, dirs) {
		return false
	}
	for i, d := range dirs {
		st, err := os.Stat(d)
		isDir := err == nil && st.IsDir()
		if isDir != s.exists[i] {
			return false
		}
	}
	for d, mt := range s.mtimes {
		st, err := os.Stat(d)
		if err != nil || !st.ModTime().Equal(mt) {
			return false
		}
	}
	return true
}

func (p *Paths) scanFolder(f *folder) *scan {
	s := &scan{roots: slices.Clone(f.dirs), exists: make([]bool, len(f.dirs)), mtimes: map[string]time.Time{}}
	seen := map[string]bool{}
	for i, root := range f.dirs {
		st, err := os.Stat(root)
		if err != nil || !st.IsDir() {
			continue
		}
		s.exists[i] = true
		w := walker{p: p, f: f, s: s, seen: seen, visited: map[string]bool{}}
		w.realRoot, err = filepath.EvalSymlinks(root)
		if err != nil {
			p.log.Debug("model folder unreadable", "folder", f.name, "dir", root, "err", err)
			continue
		}
		w.walk(root, "")
	}
	s.names = make([]string, 0, len(seen))
	for n := range seen {
		s.names = append(s.names, n)
	}
	slices.Sort(s.names)
	return s
}

type walker struct {
	p        *Paths
	f        *folder
	s        *scan
	seen     map[string]bool
	realRoot string
	visited  map[string]bool // real paths of the directories being walked (the stack), against link cycles
}

// walk lists dir, whose name relative to the root is rel ("" for the root).
func (w *walker) walk(dir, rel string) {
	st, err := os.Stat(dir)
	if err != nil {
		return
	}
	w.s.mtimes[dir] = st.ModTime()
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		if w.visited[real] {
			return // a link back to a directory being walked: a cycle
		}
		w.visited[real] = true
		defer delete(w.visited, real)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		w.p.log.Debug("model folder unreadable", "folder", w.f.name, "dir", dir, "err", err)
		return
	}
	for _, e := range entries {
		name := e.Name()
		full := filepath.Join(dir, name)
		relName := name
		if rel != "" {
			relName = path.Join(rel, name)
		}
		typ := e.Type()
		if typ&fs.ModeSymlink != 0 {
			target, err := filepath.EvalSymlinks(full)
			if err != nil {
				w.p.log.Debug("broken link in model folder", "path", full, "err", err)
				continue
			}
			if w.p.confineLinks && !within(w.realRoot, target) {
				w.p.log.Debug("link leaves model folder, skipped", "path", full, "target", target)
				continue
			}
			tst, err := os.Stat(target)
			if err != nil {
				continue
			}
			typ = tst.Mode().Type()
		}
		switch {
		case typ.IsDir():
			// ComfyUI's recursive_search skips ".git" directories.
			if name == ".git" {
				continue
			}
			w.walk(full, relName)
		case typ.IsRegular():
			// A name Resolve would refuse (a backslash in it) is not listed either.
			if accepts(w.f.exts, name) && CheckName(relName) == nil {
				w.seen[relName] = true
			}
		}
	}
}

// accepts applies ComfyUI's filter_files_extensions: the lowercased extension must be
// in exts; an empty set accepts everything.
func accepts(exts []string, name string) bool {
	if exts == nil {
		return true
	}
	return slices.Contains(exts, strings.ToLower(pyExt(name)))
}

// pyExt is Python's os.path.splitext extension: leading dots belong to the name, so
// ".gitkeep" has no extension.
func pyExt(name string) string {
	base := strings.TrimLeft(name, ".")
	i := strings.LastIndexByte(base, '.')
	if i < 0 {
		return ""
	}
	return base[i:]
}
