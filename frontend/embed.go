package frontend

import (
	"embed"
	"io/fs"
)

// The pattern names build/, which always holds the committed placeholder page, so that
// `go build` works on a fresh clone where npm never ran; build/dist appears when the
// editor is built (it is git-ignored).
//
//go:embed all:build
var files embed.FS

// FS returns the editor's files rooted at index.html: the built editor when this
// binary was built after `npm run build`, else a placeholder page that says how to
// build it. Built reports which of the two it is.
func FS() fs.FS {
	if sub, ok := built(); ok {
		return sub
	}
	sub, err := fs.Sub(files, "build/placeholder")
	if err != nil {
		// fs.Sub fails only on an invalid path name; "build/placeholder" is valid.
		panic("frontend: " + err.Error())
	}
	return sub
}

// Built reports whether the embedded files are the built editor (not the placeholder).
func Built() bool {
	_, ok := built()
	return ok
}

func built() (fs.FS, bool) {
	if _, err := fs.Stat(files, "build/dist/index.html"); err != nil {
		return nil, false
	}
	sub, err := fs.Sub(files, "build/dist")
	if err != nil {
		return nil, false
	}
	return sub, true
}
