package server

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
)

// errBadPath is returned for a file name or subfolder that would leave its folder.
var errBadPath = errors.New("server: path leaves its folder")

// relPath joins request-supplied path parts (a subfolder, a file name) into a path
// relative to a served folder. It refuses absolute paths, ".." components, NUL bytes
// and backslashes (a Windows separator that would mean something else on another
// machine), so that traversal is refused with a clear 4xx before any file is touched;
// os.Root then guards against symlinks that point outside.
func relPath(parts ...string) (string, error) {
	var keep []string
	for _, p := range parts {
		if p == "" {
			continue
		}
		if strings.ContainsAny(p, "\x00\\") || strings.HasPrefix(p, "/") {
			return "", fmt.Errorf("%w: %q", errBadPath, p)
		}
		for _, c := range strings.Split(p, "/") {
			if c == ".." {
				return "", fmt.Errorf("%w: %q", errBadPath, p)
			}
		}
		keep = append(keep, p)
	}
	if len(keep) == 0 {
		return ".", nil
	}
	rel := path.Clean(strings.Join(keep, "/"))
	if !filepath.IsLocal(filepath.FromSlash(rel)) && rel != "." {
		return "", fmt.Errorf("%w: %q", errBadPath, rel)
	}
	return filepath.FromSlash(rel), nil
}

// openRoot opens dir (creating it if missing) as an os.Root, through which every file
// operation of a request goes: the kernel-level check that no path, symlinks included,
// resolves outside dir.
func openRoot(dir string) (*os.Root, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("server: open folder: %w", err)
	}
	return os.OpenRoot(dir)
}

// dirByType returns the folder of ComfyUI's "type" parameter: output, input or temp.
// An empty type means def.
func (s *Server) dirByType(typ, def string) (string, string, bool) {
	if typ == "" {
		typ = def
	}
	switch typ {
	case "output":
		return s.opts.Dirs.Output, typ, true
	case "input":
		return s.opts.Dirs.Input, typ, true
	case "temp":
		return s.opts.Dirs.Temp, typ, true
	}
	return "", typ, false
}

// annotatedFilename splits ComfyUI's annotated file name "name.png [output]" into the
// name and its type ("" when not annotated). folder_paths.annotated_filepath.
func annotatedFilename(name string) (string, string) {
	for _, typ := range []string{"output", "input", "temp"} {
		suffix := " [" + typ + "]"
		if strings.HasSuffix(name, suffix) {
			return strings.TrimSuffix(name, suffix), typ
		}
	}
	return name, ""
}

// isNotExist reports whether err means a file is absent (or a path component is not a
// folder), which the routes answer with 404.
func isNotExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, errNotDir)
}

// errNotDir is what the kernel says when a path goes through a file as if it were a folder.
var errNotDir = syscall.ENOTDIR

// maxConverted bounds the images that /view decodes to convert (preview, channel).
const maxConverted = 256 << 20

// openFileIn opens rel inside dir through os.Root; the caller closes the file and its
// root. It refuses anything but a regular file.
func openFileIn(dir, rel string) (*os.File, fs.FileInfo, func(), error) {
	root, err := openRoot(dir)
	if err != nil {
		return nil, nil, nil, err
	}
	f, err := root.Open(rel)
	if err != nil {
		root.Close()
		return nil, nil, nil, err
	}
	done := func() { f.Close(); root.Close() }
	st, err := f.Stat()
	if err != nil {
		done()
		return nil, nil, nil, err
	}
	if !st.Mode().IsRegular() {
		done()
		return nil, nil, nil, fmt.Errorf("server: %s: not a regular file: %w", rel, fs.ErrNotExist)
	}
	return f, st, done, nil
}

// readAllLimit reads r, failing beyond limit bytes.
func readAllLimit(r io.Reader, limit int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("server: file larger than %d bytes", limit)
	}
	return data, nil
}

// readFileIn reads a regular file rel inside dir, at most maxConverted bytes.
func readFileIn(dir, rel string) ([]byte, error) {
	f, _, done, err := openFileIn(dir, rel)
	if err != nil {
		return nil, err
	}
	defer done()
	return readAllLimit(f, maxConverted)
}
