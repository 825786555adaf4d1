package pull

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/forgeflow/forgeflow/weights/folders"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// Errors a caller branches on.
var (
	// ErrChecksum: the downloaded bytes do not have the expected SHA-256 (the partial
	// file is removed), or the expected one disagrees with the server's.
	ErrChecksum = errors.New("checksum mismatch")
	// ErrExists: another file already has the target name.
	ErrExists = errors.New("a different file with this name exists")
	// ErrNotModel: the server answered something that is not the model file (a web
	// page, a sign-in form).
	ErrNotModel = errors.New("not a model file")

	errNoName = errors.New("neither the URL nor the server names the file; give a name")
)

// HTTPError is a download the server refused.
type HTTPError struct {
	URL    string // without its query
	Status int
}

func (e *HTTPError) Error() string {
	hint := ""
	switch e.Status {
	case http.StatusUnauthorized, http.StatusForbidden:
		hint = " (the file may need a sign-in or an accepted licence on the site; download it in a browser and put it in the model folder)"
	case http.StatusNotFound:
		hint = " (no such file: check the owner, repository, revision and path)"
	}
	return fmt.Sprintf("pull: %s: HTTP %d %s%s", e.URL, e.Status, http.StatusText(e.Status), hint)
}

// Options configure Fetch. The zero value downloads from any https host with three
// resumed retries.
type Options struct {
	// Client makes the requests; nil builds one (from Policy when set). Its own
	// CheckRedirect is replaced by the download's.
	Client *http.Client
	// Policy, when set, restricts the URL asked for to its hosts and (for the client
	// Fetch builds) connections to public addresses.
	Policy *Policy
	// AllowPickle lets .ckpt/.pt/.pth/.bin/.pkl files through.
	AllowPickle bool
	// Progress, when set, is called at most every ProgressEvery (and once at the end)
	// from the downloading goroutine.
	Progress      func(Progress)
	ProgressEvery time.Duration // 0 means 250 ms
	// Retries is how often an interrupted transfer is resumed; 0 means 3, negative none.
	Retries int
	// RetryWait is the pause before the first retry, doubled for each next one; 0
	// means one second.
	RetryWait time.Duration
	// UserAgent is sent with every request; empty means "forgeflow".
	UserAgent string
}

// Progress is the state of a transfer.
type Progress struct {
	Name  string
	Done  int64   // bytes in the file so far (a resumed transfer starts above 0)
	Total int64   // -1 when the server does not say
	Rate  float64 // bytes per second, smoothed
	ETA   time.Duration
	// Final is set on the last call, when the bytes are all there (before the rename).
	Final bool
}

// Result says what Fetch did.
type Result struct {
	Path    string // the file, in its final place
	Name    string // its name relative to the directory
	Size    int64
	SHA256  string // of the bytes written (or of the existing file when Existed)
	Checked bool   // SHA256 was compared with an expected one and matched
	Resumed bool   // part of the file came from an earlier, interrupted transfer
	Existed bool   // the file was already there; nothing was downloaded
}

// partMeta is kept beside a partial download, so that a later Fetch of the same URL
// resumes only a transfer of the same file.
type partMeta struct {
	URL    string `json:"url"`
	Name   string `json:"name,omitempty"`
	ETag   string `json:"etag,omitempty"`
	Total  int64  `json:"total"`
	SHA256 string `json:"sha256,omitempty"`
}

// Fetch downloads src into dir (created if needed) and returns where the file is.
// The bytes go to a hidden ".forgeflow-….part" file in dir; an interrupted transfer
// is resumed (from where it stopped, by an HTTP Range request), also by a later Fetch
// of the same URL. The file is renamed to its name only once complete, its size as
// announced and its SHA-256 as expected (src.SHA256, else the one Hugging Face serves;
// a mismatch removes the partial file). A file already in place is left alone: it is
// reported Existed (after a check of its digest when one is known). Cancelling ctx
// stops the transfer and keeps the partial file for a later resume.
func Fetch(ctx context.Context, src Source, dir string, opts Options) (*Result, error) {
	u, err := checkURL(src.URL)
	if err != nil {
		return nil, err
	}
	if opts.Policy != nil {
		if err := opts.Policy.Check(src.URL); err != nil {
			return nil, err
		}
	}
	want := ""
	if src.SHA256 != "" {
		if want, err = normSHA256(src.SHA256); err != nil {
			return nil, err
		}
	}
	f := &fetch{ctx: ctx, src: src, u: u.String(), dir: dir, opts: opts, want: want}
	f.name = src.Name
	if f.name == "" {
		f.name = urlName(u)
	}
	if f.name != "" {
		if res, err := f.checkTarget(); res != nil || err != nil {
			return res, err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("pull: %w", err)
	}
	sum := sha256.Sum256([]byte(f.u))
	f.part = filepath.Join(dir, ".forgeflow-"+hex.EncodeToString(sum[:8])+".part")
	f.metaPath = f.part + ".json"
	return f.run()
}

// fetch is one Fetch call's state.
type fetch struct {
	ctx            context.Context
	src            Source
	u              string
	dir            string
	opts           Options
	name           string
	want           string // expected SHA-256, from the caller or the server
	part, metaPath string
	meta           partMeta
	resumed        bool
}

// checkTarget applies the pickle rule and looks at the target file: a result when it
// already exists, an error when it may not be written.
func (f *fetch) checkTarget() (*Result, error) {
	if err := folders.CheckName(f.name); err != nil {
		return nil, fmt.Errorf("pull: file name: %w", err)
	}
	if IsPickle(f.name) && !f.opts.AllowPickle {
		return nil, fmt.Errorf("pull: %s: %w: loading a %s file can run code hidden in it; prefer a .safetensors or .gguf file, or allow it explicitly (--allow-pickle)", f.name, ErrPickle, path.Ext(f.name))
	}
	dest := f.dest()
	st, err := os.Stat(dest)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pull: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("pull: %s: %w (not a regular file)", dest, ErrExists)
	}
	res := &Result{Path: dest, Name: f.name, Size: st.Size(), Existed: true}
	if f.want != "" {
		got, err := FileSHA256(dest)
		if err != nil {
			return nil, err
		}
		if got != f.want {
			return nil, fmt.Errorf("pull: %s: %w (its SHA-256 is %s, not %s); remove it first", dest, ErrExists, got, f.want)
		}
		res.SHA256, res.Checked = got, true
	}
	return res, nil
}

func (f *fetch) dest() string { return filepath.Join(f.dir, filepath.FromSlash(f.name)) }

func (f *fetch) client() *http.Client {
	var c http.Client
	switch {
	case f.opts.Client != nil:
		c = *f.opts.Client
	case f.opts.Policy != nil:
		c = *f.opts.Policy.client()
	default:
		c = http.Client{Transport: http.DefaultTransport}
	}
	c.CheckRedirect = checkRedirect
	return &c
}

func (f *fetch) run() (*Result, error) {
	retries := f.opts.Retries
	if retries == 0 {
		retries = 3
	}
	wait := f.opts.RetryWait
	if wait <= 0 {
		wait = time.Second
	}
	client := f.client()
	f.loadMeta()
	for attempt := 0; ; attempt++ {
		done, err := f.transfer(client)
		if err == nil && done {
			return f.finish()
		}
		var he *HTTPError
		permanent := errors.As(err, &he) && he.Status < 500 && he.Status != http.StatusTooManyRequests && he.Status != http.StatusRequestTimeout
		if err != nil && (permanent || errors.Is(err, ErrChecksum) || errors.Is(err, ErrPickle) ||
			errors.Is(err, ErrExists) || errors.Is(err, ErrNotModel) || errors.Is(err, ErrHostNotAllowed) || errors.Is(err, errNoName)) {
			return nil, err
		}
		if cerr := f.ctx.Err(); cerr != nil {
			return nil, fmt.Errorf("pull: %s: stopped (the partial file is kept; pull again to resume): %w", f.label(), cerr)
		}
		if attempt >= retries {
			if err == nil {
				err = errors.New("transfer ended early")
			}
			return nil, fmt.Errorf("pull: %s: %w (gave up after %d retries; pull again to resume)", f.label(), err, retries)
		}
		select {
		case <-time.After(wait << attempt):
		case <-f.ctx.Done():
			return nil, fmt.Errorf("pull: %s: stopped (the partial file is kept; pull again to resume): %w", f.label(), f.ctx.Err())
		}
	}
}

func (f *fetch) label() string {
	if f.name != "" {
		return f.name
	}
	return f.u
}

// loadMeta reads the partial download's record; a record of another URL, or a part
// without one, is discarded.
func (f *fetch) loadMeta() {
	f.meta = partMeta{URL: f.u, Total: -1}
	b, err := os.ReadFile(f.metaPath)
	var m partMeta
	if err == nil && json.Unmarshal(b, &m) == nil && m.URL == f.u {
		f.meta = m
		if f.name == "" && folders.CheckName(m.Name) == nil {
			f.name = m.Name
		}
		return
	}
	os.Remove(f.part)
}

func (f *fetch) saveMeta() error {
	b, _ := json.Marshal(f.meta)
	return os.WriteFile(f.metaPath, b, 0o644)
}

// transfer makes one request and appends what it gets to the part file. done reports
// that the part holds the whole file.
func (f *fetch) transfer(client *http.Client) (done bool, err error) {
	offset := int64(0)
	if st, err := os.Stat(f.part); err == nil {
		offset = st.Size()
	}
	if f.meta.Total >= 0 && offset == f.meta.Total && offset > 0 {
		return true, nil
	}
	req, err := http.NewRequestWithContext(f.ctx, http.MethodGet, f.u, nil)
	if err != nil {
		return false, err
	}
	ua := f.opts.UserAgent
	if ua == "" {
		ua = "forgeflow"
	}
	req.Header.Set("User-Agent", ua)
	req.Header.Set("Accept-Encoding", "identity")
	if offset > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
		if f.meta.ETag != "" && !strings.HasPrefix(f.meta.ETag, "W/") {
			req.Header.Set("If-Range", f.meta.ETag)
		}
	}
	// Hugging Face answers a large file's URL with a redirect to its storage; the
	// redirect carries the file's SHA-256 and size (X-Linked-Etag, X-Linked-Size).
	var linkedSHA string
	var linkedSize int64 = -1
	inner := client.CheckRedirect
	c := *client
	c.CheckRedirect = func(r *http.Request, via []*http.Request) error {
		if r.Response != nil {
			if s := etagSHA256(r.Response.Header.Get("X-Linked-Etag")); s != "" && linkedSHA == "" {
				linkedSHA = s
				if f.want != "" && f.want != s {
					return fmt.Errorf("pull: %s: %w: the server says its SHA-256 is %s, expected %s", f.label(), ErrChecksum, s, f.want)
				}
			}
			if n, err := strconv.ParseInt(r.Response.Header.Get("X-Linked-Size"), 10, 64); err == nil && linkedSize < 0 {
				linkedSize = n
			}
		}
		return inner(r, via)
	}
	resp, err := c.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if linkedSHA == "" {
		linkedSHA = etagSHA256(resp.Header.Get("X-Linked-Etag"))
	}
	if linkedSHA == "" && (resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusPartialContent) {
		linkedSHA = etagSHA256(resp.Header.Get("ETag"))
	}

	var total int64 = -1
	switch resp.StatusCode {
	case http.StatusOK:
		offset = 0
		f.resumed = false
		if resp.ContentLength >= 0 {
			total = resp.ContentLength
		}
	case http.StatusPartialContent:
		start, tot, ok := contentRange(resp.Header.Get("Content-Range"))
		if !ok || start != offset {
			// Not the range asked for: start again from the beginning.
			os.Remove(f.part)
			return false, fmt.Errorf("server sent bytes from %d, not from %d", start, offset)
		}
		total = tot
		f.resumed = true
	case http.StatusRequestedRangeNotSatisfiable:
		// The part is as long as the file (or the file changed): check from scratch.
		if _, tot, ok := contentRange(resp.Header.Get("Content-Range")); ok && tot == offset && offset > 0 {
			f.meta.Total = tot
			return true, nil
		}
		os.Remove(f.part)
		return false, errors.New("range not satisfiable; starting again")
	default:
		return false, &HTTPError{URL: redactURL(resp.Request.URL), Status: resp.StatusCode}
	}
	if total < 0 && linkedSize >= 0 {
		total = linkedSize
	}

	if f.name == "" {
		f.name = dispositionName(resp.Header.Get("Content-Disposition"))
		if f.name == "" {
			f.name = urlName(resp.Request.URL)
		}
		if f.name == "" {
			return false, fmt.Errorf("pull: %s: %w", f.u, errNoName)
		}
		if res, err := f.checkTarget(); err != nil {
			return false, err
		} else if res != nil {
			return false, fmt.Errorf("pull: %s: %w", res.Path, ErrExists)
		}
	}
	if linkedSHA != "" {
		if f.want != "" && f.want != linkedSHA {
			return false, fmt.Errorf("pull: %s: %w: the server says its SHA-256 is %s, expected %s", f.name, ErrChecksum, linkedSHA, f.want)
		}
		f.want = linkedSHA
	}
	f.meta = partMeta{URL: f.u, Name: f.name, ETag: resp.Header.Get("ETag"), Total: total, SHA256: f.want}
	if err := f.saveMeta(); err != nil {
		return false, fmt.Errorf("pull: %w", err)
	}
	n, err := f.write(resp.Body, offset, total)
	if err != nil {
		return false, err
	}
	if total >= 0 && n != total {
		return false, fmt.Errorf("transfer ended at %d of %d bytes", n, total)
	}
	f.meta.Total = n
	return true, nil
}

// write appends body to the part file from offset and returns the part's size.
func (f *fetch) write(body io.Reader, offset, total int64) (int64, error) {
	out, err := os.OpenFile(f.part, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return 0, fmt.Errorf("pull: %w", err)
	}
	defer out.Close()
	if err := out.Truncate(offset); err != nil {
		return 0, fmt.Errorf("pull: %w", err)
	}
	if _, err := out.Seek(offset, io.SeekStart); err != nil {
		return 0, fmt.Errorf("pull: %w", err)
	}
	p := newMeter(f.name, offset, total, f.opts)
	buf := make([]byte, 256<<10)
	written := offset
	for {
		nr, rerr := body.Read(buf)
		if nr > 0 {
			if _, werr := out.Write(buf[:nr]); werr != nil {
				return written, fmt.Errorf("pull: %w", werr)
			}
			written += int64(nr)
			p.update(written)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return written, rerr
		}
	}
	if err := out.Sync(); err != nil {
		return written, fmt.Errorf("pull: %w", err)
	}
	return written, nil
}

// finish verifies the complete part file and renames it into place.
func (f *fetch) finish() (*Result, error) {
	got, err := FileSHA256(f.part)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(f.part)
	if err != nil {
		return nil, fmt.Errorf("pull: %w", err)
	}
	want := f.want
	if want == "" {
		want = f.meta.SHA256
	}
	if want != "" && got != want {
		f.discard()
		return nil, fmt.Errorf("pull: %s: %w: the downloaded file's SHA-256 is %s, expected %s (the partial file was removed)", f.name, ErrChecksum, got, want)
	}
	if err := checkContent(f.part, f.name); err != nil {
		f.discard()
		return nil, err
	}
	if f.opts.Progress != nil {
		f.opts.Progress(Progress{Name: f.name, Done: st.Size(), Total: st.Size(), ETA: 0, Final: true})
	}
	dest := f.dest()
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return nil, fmt.Errorf("pull: %w", err)
	}
	// Link rather than rename: it fails instead of replacing a file that appeared
	// meanwhile.
	if err := os.Link(f.part, dest); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("pull: %s: %w (it appeared during the download; the download is kept as %s)", dest, ErrExists, f.part)
		}
		if err := os.Rename(f.part, dest); err != nil {
			return nil, fmt.Errorf("pull: %w", err)
		}
	}
	os.Remove(f.part)
	os.Remove(f.metaPath)
	return &Result{Path: dest, Name: f.name, Size: st.Size(), SHA256: got, Checked: want != "", Resumed: f.resumed}, nil
}

func (f *fetch) discard() {
	os.Remove(f.part)
	os.Remove(f.metaPath)
}

// checkContent catches an answer that is not the model file: a web page or JSON error
// saved under a model's name, a .safetensors whose header does not parse, a .gguf
// without its magic.
func checkContent(p, name string) error {
	fh, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("pull: %w", err)
	}
	head := make([]byte, 512)
	n, _ := io.ReadFull(fh, head)
	fh.Close()
	head = head[:n]
	ext := strings.ToLower(path.Ext(name))
	trimmed := bytes.TrimLeft(head, " \t\r\n")
	isModel := ext == ".safetensors" || ext == ".sft" || ext == ".gguf" || IsPickle(name)
	if isModel && (bytes.HasPrefix(trimmed, []byte("<")) || (ext != ".safetensors" && ext != ".sft" && bytes.HasPrefix(trimmed, []byte("{")))) {
		return fmt.Errorf("pull: %s: %w: the server sent a web page or a message (%q…); the file may need a sign-in", name, ErrNotModel, firstLine(trimmed))
	}
	switch ext {
	case ".safetensors", ".sft":
		if _, err := safetensors.ReadHeader(p); err != nil {
			return fmt.Errorf("pull: %s: %w: %v", name, ErrNotModel, err)
		}
	case ".gguf":
		if !bytes.HasPrefix(head, []byte("GGUF")) {
			return fmt.Errorf("pull: %s: %w: no GGUF magic", name, ErrNotModel)
		}
	}
	return nil
}

func firstLine(b []byte) string {
	if i := bytes.IndexAny(b, "\r\n"); i >= 0 {
		b = b[:i]
	}
	if len(b) > 60 {
		b = b[:60]
	}
	return string(b)
}

// contentRange parses "bytes START-END/TOTAL" (TOTAL may be "*": -1) and the
// unsatisfied form "bytes */TOTAL" (START -1).
func contentRange(h string) (start, total int64, ok bool) {
	rest, found := strings.CutPrefix(h, "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, tot, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, false
	}
	total = -1
	if tot != "*" {
		t, err := strconv.ParseInt(tot, 10, 64)
		if err != nil || t < 0 {
			return 0, 0, false
		}
		total = t
	}
	if rng == "*" {
		return -1, total, true
	}
	a, _, found := strings.Cut(rng, "-")
	s, err := strconv.ParseInt(a, 10, 64)
	if !found || err != nil || s < 0 {
		return 0, 0, false
	}
	return s, total, true
}

// FileSHA256 returns the hex SHA-256 of a file.
func FileSHA256(p string) (string, error) {
	fh, err := os.Open(p)
	if err != nil {
		return "", fmt.Errorf("pull: %w", err)
	}
	defer fh.Close()
	h := sha256.New()
	if _, err := io.Copy(h, fh); err != nil {
		return "", fmt.Errorf("pull: %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
