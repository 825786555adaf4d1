package pull

import (
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"net"
	"net/url"
	"path"
	"strings"

	"github.com/forgeflow/forgeflow/weights/folders"
)

// Source is one file to download.
type Source struct {
	// URL is an https URL (plain http only to a loopback host, for local mirrors and
	// tests).
	URL string
	// Name is the file name to save as, relative to the target directory
	// (slash-separated; a subfolder is created). Empty: the last element of the URL's
	// path, or the server's Content-Disposition name when the URL's has no extension
	// (Civitai's /api/download/models/ID).
	Name string
	// SHA256 is the expected digest in hex, empty when unknown.
	SHA256 string
}

// hfBase is where hf: sources point.
const hfBase = "https://huggingface.co"

// ParseSource reads a source as a user writes it: an https URL, or
// hf:owner/repo[@revision]/path/in/repo (the revision defaults to main). A Hugging Face
// page URL (".../blob/rev/file") is turned into its download URL (".../resolve/...").
// hfEndpoint replaces https://huggingface.co for hf: sources (a mirror, as
// huggingface_hub's HF_ENDPOINT); empty means Hugging Face itself.
func ParseSource(s, hfEndpoint string) (Source, error) {
	s = strings.TrimSpace(s)
	base := hfBase
	if hfEndpoint != "" {
		u, err := checkURL(hfEndpoint)
		if err != nil {
			return Source{}, fmt.Errorf("pull: Hugging Face endpoint: %w", err)
		}
		base = strings.TrimSuffix(u.String(), "/")
	}
	if rest, ok := strings.CutPrefix(s, "hf:"); ok {
		return parseHF(rest, base)
	}
	u, err := checkURL(s)
	if err != nil {
		return Source{}, err
	}
	if isHFHost(u.Hostname()) || strings.HasPrefix(s, base+"/") {
		// https://huggingface.co/owner/repo/blob/rev/file is the page; resolve is the file.
		parts := strings.SplitN(strings.TrimPrefix(u.Path, "/"), "/", 4)
		if len(parts) == 4 && parts[2] == "blob" {
			u.Path = "/" + parts[0] + "/" + parts[1] + "/resolve/" + parts[3]
			u.RawPath = ""
		}
	}
	return Source{URL: u.String()}, nil
}

// parseHF reads owner/repo[@rev]/path into a URL under base.
func parseHF(s, base string) (Source, error) {
	bad := func(why string) (Source, error) {
		return Source{}, fmt.Errorf("pull: hf:%s: %s (want hf:owner/repo[@revision]/path/to/file)", s, why)
	}
	parts := strings.SplitN(s, "/", 3)
	if len(parts) < 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return bad("owner, repository and file path needed")
	}
	owner, repo, file := parts[0], parts[1], parts[2]
	rev := "main"
	if r, v, ok := strings.Cut(repo, "@"); ok {
		if v == "" {
			return bad("empty revision after @")
		}
		repo, rev = r, v
	}
	if err := folders.CheckName(file); err != nil {
		return bad(err.Error())
	}
	for _, p := range []string{owner, repo, rev} {
		if p == "." || p == ".." || strings.ContainsAny(p, "\\?#%") {
			return bad(fmt.Sprintf("%q is not a valid name", p))
		}
	}
	var b strings.Builder
	b.WriteString(base)
	for _, seg := range []string{owner, repo, "resolve", rev} {
		b.WriteString("/" + url.PathEscape(seg))
	}
	for _, seg := range strings.Split(file, "/") {
		b.WriteString("/" + url.PathEscape(seg))
	}
	return Source{URL: b.String(), Name: path.Base(file)}, nil
}

// isHFHost reports whether host is Hugging Face's.
func isHFHost(host string) bool {
	host = strings.ToLower(host)
	return host == "huggingface.co" || host == "hf.co"
}

// checkURL parses an absolute URL that a download may use: https, or http to a
// loopback host; no user name or password in it.
func checkURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("pull: %q is not a URL: %w", s, err)
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("pull: %q is not an https URL or hf:owner/repo/file", s)
	}
	if u.User != nil {
		return nil, fmt.Errorf("pull: %s: user names and passwords in URLs are not supported", u.Redacted())
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !loopbackHost(u.Hostname()) {
			return nil, fmt.Errorf("pull: %s: only https is allowed (plain http only to a loopback host)", u.Redacted())
		}
	default:
		return nil, fmt.Errorf("pull: %s: only https is allowed", u.Redacted())
	}
	return u, nil
}

// loopbackHost reports whether host is a loopback address or "localhost". Names under
// localhost (RFC 6761's *.localhost) are not taken: a resolver that does not special-case
// them asks DNS, which could answer with a remote address for a plain-http download.
func loopbackHost(host string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// urlName is the last element of a URL's path when it looks like a file name (it has
// an extension), else "".
func urlName(u *url.URL) string {
	base := path.Base(u.Path)
	if base == "/" || base == "." || !strings.Contains(strings.TrimLeft(base, "."), ".") {
		return ""
	}
	return base
}

// dispositionName is the file name of a Content-Disposition header, reduced to its
// last element; "" when none.
func dispositionName(h string) string {
	if h == "" {
		return ""
	}
	_, params, err := mime.ParseMediaType(h)
	if err != nil {
		return ""
	}
	name := params["filename"]
	name = name[strings.LastIndexAny(name, `/\`)+1:]
	if name == "." || name == ".." {
		return ""
	}
	return name
}

// normSHA256 checks and lowercases a hex SHA-256.
func normSHA256(s string) (string, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if b, err := hex.DecodeString(s); err != nil || len(b) != 32 {
		return "", fmt.Errorf("pull: %q is not a SHA-256 (64 hex digits)", s)
	}
	return s, nil
}

// etagSHA256 returns the SHA-256 an ETag carries: Hugging Face serves the SHA-256 of a
// large (LFS) file as its X-Linked-Etag (and as the ETag when the file is answered
// directly); small files carry their git blob id (40 hex digits), which is not used.
// Weak ETags say nothing about the bytes.
func etagSHA256(etag string) string {
	if strings.HasPrefix(etag, "W/") {
		return ""
	}
	s, err := normSHA256(strings.Trim(etag, `"`))
	if err != nil {
		return ""
	}
	return s
}

// pickleExts are the extensions of pickle-based model files: loading one with a
// general unpickler runs code from the file.
var pickleExts = []string{".ckpt", ".pt", ".pt2", ".pth", ".bin", ".pkl"}

// ErrPickle refuses a pickle-based file without Options.AllowPickle.
var ErrPickle = errors.New("pickle-based model file refused")

// IsPickle reports whether name is a pickle-based model file.
func IsPickle(name string) bool {
	ext := strings.ToLower(path.Ext(name))
	for _, e := range pickleExts {
		if ext == e {
			return true
		}
	}
	return false
}
