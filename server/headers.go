package server

import (
	"fmt"
	"net/http"
	"path"
	"strings"
)

// editorCSP is the Content-Security-Policy of the editor's pages: scripts, styles,
// images and connections from the server itself (the editor's module bundle, /view
// images, the API and its websocket), images also from data: and blob: URLs (the
// favicon, live previews), styles also inline (litegraph positions its menus and
// dialogs with style attributes); no plugins, no foreign frames around it, no form
// posted elsewhere.
const editorCSP = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; " +
	"img-src 'self' data: blob:; connect-src 'self'; font-src 'self' data:; worker-src 'self' blob:; " +
	"object-src 'none'; base-uri 'self'; frame-ancestors 'self'; form-action 'self'"

// storedFileCSP is the policy of files served from the user's and the output folders:
// should a browser render one anyway, it runs nothing and loads nothing.
const storedFileCSP = "sandbox; default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'"

// setEditorHeaders marks an editor page: its policy, no MIME sniffing, no framing by
// other sites.
func setEditorHeaders(h http.Header) {
	h.Set("Content-Security-Policy", editorCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "SAMEORIGIN")
}

// setStoredFileHeaders marks a stored file for download: its content type as given,
// never sniffed, a sandboxing policy, and Content-Disposition as disposition with the
// file's name.
func setStoredFileHeaders(h http.Header, contentType, disposition, name string) {
	h.Set("Content-Type", contentType)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", storedFileCSP)
	if disposition != "" {
		h.Set("Content-Disposition", fmt.Sprintf("%s; filename=%q", disposition, name))
	} else {
		h.Set("Content-Disposition", fmt.Sprintf("filename=%q", name))
	}
}

// userContentTypes are the content types a user file is served with, by extension:
// data the editor reads (JSON, text) and images. Anything else — HTML, SVG, XML,
// scripts included — is application/octet-stream, so that no stored file runs as a
// page of the server's origin.
var userContentTypes = map[string]string{
	".json": "application/json", ".txt": "text/plain; charset=utf-8", ".csv": "text/plain; charset=utf-8",
	".md": "text/plain; charset=utf-8", ".yaml": "text/plain; charset=utf-8", ".yml": "text/plain; charset=utf-8",
	".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp", ".gif": "image/gif",
}

// userContentType is the content type a user file is served with.
func userContentType(name string) string {
	if ct, ok := userContentTypes[strings.ToLower(path.Ext(name))]; ok {
		return ct
	}
	return "application/octet-stream"
}
