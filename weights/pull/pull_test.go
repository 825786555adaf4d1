package pull_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/forgeflow/forgeflow/weights/pull"
	"github.com/forgeflow/forgeflow/weights/pull/pulltest"
)

// quick retries for tests.
var quick = pull.Options{RetryWait: time.Millisecond}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// noLeftovers checks that dir holds no partial download.
func noLeftovers(t *testing.T, dir string) {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".forgeflow-") {
			t.Errorf("partial download left behind: %s", e.Name())
		}
	}
}

func TestFetchHuggingFaceShape(t *testing.T) {
	h := pulltest.NewTLS(t)
	data := pulltest.Safetensors(t, 300<<10, 1)
	h.Add("sub/model.safetensors", pulltest.File{Data: data})
	dir := t.TempDir()
	opts := quick
	opts.Client = h.Client()
	var calls []pull.Progress
	opts.Progress = func(p pull.Progress) { calls = append(calls, p) }
	opts.ProgressEvery = time.Nanosecond
	res, err := pull.Fetch(context.Background(), pull.Source{URL: h.URL + "/owner/repo/resolve/main/sub/model.safetensors"}, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Name != "model.safetensors" || res.Path != filepath.Join(dir, "model.safetensors") || !res.Checked || res.Resumed || res.Existed {
		t.Fatalf("result %+v", res)
	}
	if res.SHA256 != pulltest.SHA256(data) || !bytes.Equal(readFile(t, res.Path), data) {
		t.Fatal("the file differs from the served one")
	}
	noLeftovers(t, dir)
	if len(calls) < 2 || !calls[len(calls)-1].Final || calls[len(calls)-1].Done != int64(len(data)) {
		t.Fatalf("progress calls %+v", calls)
	}
	for _, c := range calls[:len(calls)-1] {
		if c.Total != int64(len(data)) || c.Done <= 0 || c.Done > c.Total {
			t.Fatalf("progress %+v", c)
		}
	}
	// Again: the file is there; nothing is downloaded, and its digest is checked
	// against a given one.
	n := len(h.Requests())
	res, err = pull.Fetch(context.Background(), pull.Source{URL: h.URL + "/files/sub/model.safetensors", SHA256: pulltest.SHA256(data)}, dir, opts)
	if err != nil || !res.Existed || !res.Checked {
		t.Fatalf("second fetch: %+v, %v", res, err)
	}
	if len(h.Requests()) != n {
		t.Fatal("an existing file was downloaded again")
	}
	_, err = pull.Fetch(context.Background(), pull.Source{URL: h.URL + "/files/sub/model.safetensors", SHA256: strings.Repeat("0", 64)}, dir, opts)
	if !errors.Is(err, pull.ErrExists) {
		t.Fatalf("an existing file with another digest: %v", err)
	}
}

func TestFetchResumesInterruptedTransfer(t *testing.T) {
	h := pulltest.New(t)
	data := pulltest.Safetensors(t, 1<<20, 2)
	h.Add("m.safetensors", pulltest.File{Data: data, CutAfter: 300 << 10, CutTimes: 2})
	dir := t.TempDir()
	res, err := pull.Fetch(context.Background(), pull.Source{URL: h.URL + "/owner/repo/resolve/main/m.safetensors"}, dir, quick)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Resumed || !res.Checked || !bytes.Equal(readFile(t, res.Path), data) {
		t.Fatalf("result %+v", res)
	}
	var ranges []string
	for _, r := range h.Requests() {
		if strings.HasPrefix(r.URL.Path, "/storage/") {
			ranges = append(ranges, r.Header.Get("Range"))
		}
	}
	// The first try gets 300 KiB; the second asks for the rest, but the host cuts it
	// again with a whole-file answer (200), so the part restarts and holds 300 KiB;
	// the third asks for the rest again and gets it (206).
	if want := []string{"", "bytes=307200-", "bytes=307200-"}; !slices.Equal(ranges, want) {
		t.Fatalf("ranges asked: %q, want %q", ranges, want)
	}
	noLeftovers(t, dir)
}

func TestFetchResumesInALaterCall(t *testing.T) {
	h := pulltest.New(t)
	data := pulltest.Safetensors(t, 512<<10, 3)
	h.Add("m.safetensors", pulltest.File{Data: data, CutAfter: 200 << 10, CutTimes: 1})
	dir := t.TempDir()
	src := pull.Source{URL: h.URL + "/files/m.safetensors", SHA256: pulltest.SHA256(data)}
	noRetry := quick
	noRetry.Retries = -1
	if _, err := pull.Fetch(context.Background(), src, dir, noRetry); err == nil || !strings.Contains(err.Error(), "pull again to resume") {
		t.Fatalf("cut transfer without retries: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "m.safetensors")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a partial file has the final name")
	}
	res, err := pull.Fetch(context.Background(), src, dir, noRetry)
	if err != nil {
		t.Fatal(err)
	}
	reqs := h.Requests()
	if got := reqs[len(reqs)-1].Header.Get("Range"); got != "bytes=204800-" {
		t.Fatalf("the second call asked for %q, want the rest", got)
	}
	if !res.Resumed || !res.Checked || !bytes.Equal(readFile(t, res.Path), data) {
		t.Fatalf("result %+v", res)
	}
	noLeftovers(t, dir)
}

func TestFetchHostIgnoringRange(t *testing.T) {
	h := pulltest.New(t)
	data := pulltest.Safetensors(t, 400<<10, 4)
	h.Add("m.safetensors", pulltest.File{Data: data, CutAfter: 100 << 10, CutTimes: 1, NoRange: true})
	dir := t.TempDir()
	res, err := pull.Fetch(context.Background(), pull.Source{URL: h.URL + "/files/m.safetensors"}, dir, quick)
	if err != nil {
		t.Fatal(err)
	}
	if res.Resumed || !bytes.Equal(readFile(t, res.Path), data) {
		t.Fatalf("result %+v", res)
	}
}

func TestFetchChecksums(t *testing.T) {
	h := pulltest.New(t)
	data := pulltest.Safetensors(t, 64<<10, 5)
	h.Add("good.safetensors", pulltest.File{Data: data})
	h.Add("lying.safetensors", pulltest.File{Data: data, LinkedSHA256: strings.Repeat("ab", 32)})
	cases := []struct {
		name, url, sha string
		downloads      bool // the bytes were fetched before the mismatch was found
	}{
		{"given digest wrong", "/files/good.safetensors", strings.Repeat("cd", 32), true},
		{"given digest disagrees with the host's", "/o/r/resolve/main/good.safetensors", strings.Repeat("cd", 32), false},
		{"host's digest wrong", "/o/r/resolve/main/lying.safetensors", "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			before := len(h.Requests())
			_, err := pull.Fetch(context.Background(), pull.Source{URL: h.URL + tc.url, SHA256: tc.sha}, dir, quick)
			if !errors.Is(err, pull.ErrChecksum) {
				t.Fatalf("err = %v, want a checksum mismatch", err)
			}
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				if !strings.HasSuffix(e.Name(), ".json") || tc.downloads {
					t.Errorf("left behind after a mismatch: %s", e.Name())
				}
			}
			fetched := false
			for _, r := range h.Requests()[before:] {
				fetched = fetched || strings.HasPrefix(r.URL.Path, "/storage/") || strings.HasPrefix(r.URL.Path, "/files/")
			}
			if fetched != tc.downloads {
				t.Errorf("bytes fetched: %v, want %v", fetched, tc.downloads)
			}
		})
	}
	if _, err := pull.Fetch(context.Background(), pull.Source{URL: h.URL + "/files/good.safetensors", SHA256: "xyz"}, t.TempDir(), quick); err == nil {
		t.Fatal("a malformed digest was accepted")
	}
}

func TestFetchRefusals(t *testing.T) {
	h := pulltest.New(t)
	data := pulltest.Safetensors(t, 4<<10, 6)
	h.Add("m.safetensors", pulltest.File{Data: data})
	h.Add("page.safetensors", pulltest.File{Data: []byte("<!DOCTYPE html><html>Sign in to continue</html>")})
	h.Add("model.ckpt", pulltest.File{Data: []byte("PK\x03\x04 not really")})
	h.Add("broken.gguf", pulltest.File{Data: []byte("GGML nope")})

	t.Run("404 is not retried", func(t *testing.T) {
		before := len(h.Requests())
		_, err := pull.Fetch(context.Background(), pull.Source{URL: h.URL + "/files/nothing.safetensors"}, t.TempDir(), quick)
		var he *pull.HTTPError
		if !errors.As(err, &he) || he.Status != http.StatusNotFound {
			t.Fatalf("err = %v", err)
		}
		if n := len(h.Requests()) - before; n != 1 {
			t.Fatalf("%d requests for a 404", n)
		}
	})
	t.Run("a web page is not a model", func(t *testing.T) {
		dir := t.TempDir()
		_, err := pull.Fetch(context.Background(), pull.Source{URL: h.URL + "/files/page.safetensors"}, dir, quick)
		if !errors.Is(err, pull.ErrNotModel) {
			t.Fatalf("err = %v", err)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Fatalf("left behind: %v", entries)
		}
	})
	t.Run("gguf without magic", func(t *testing.T) {
		_, err := pull.Fetch(context.Background(), pull.Source{URL: h.URL + "/files/broken.gguf"}, t.TempDir(), quick)
		if !errors.Is(err, pull.ErrNotModel) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("pickle refused before any request", func(t *testing.T) {
		before := len(h.Requests())
		_, err := pull.Fetch(context.Background(), pull.Source{URL: h.URL + "/files/model.ckpt"}, t.TempDir(), quick)
		if !errors.Is(err, pull.ErrPickle) {
			t.Fatalf("err = %v", err)
		}
		if len(h.Requests()) != before {
			t.Fatal("a request was made for a refused file")
		}
		allow := quick
		allow.AllowPickle = true
		if _, err := pull.Fetch(context.Background(), pull.Source{URL: h.URL + "/files/model.ckpt"}, t.TempDir(), allow); err != nil {
			t.Fatalf("with AllowPickle: %v", err)
		}
	})
	t.Run("redirect followed", func(t *testing.T) {
		res, err := pull.Fetch(context.Background(), pull.Source{URL: h.URL + "/redirect/m.safetensors"}, t.TempDir(), quick)
		if err != nil || !bytes.Equal(readFile(t, res.Path), data) {
			t.Fatalf("%+v, %v", res, err)
		}
	})
	t.Run("plain http to another host", func(t *testing.T) {
		if _, err := pull.Fetch(context.Background(), pull.Source{URL: "http://example.com/m.safetensors"}, t.TempDir(), quick); err == nil || !strings.Contains(err.Error(), "https") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestFetchNameFromContentDisposition(t *testing.T) {
	h := pulltest.New(t)
	data := pulltest.Safetensors(t, 8<<10, 7)
	h.Add("12345", pulltest.File{Data: data, Disposition: "../dreamy_v2.safetensors"})
	dir := t.TempDir()
	res, err := pull.Fetch(context.Background(), pull.Source{URL: h.URL + "/api/download/models/12345"}, dir, quick)
	if err != nil {
		t.Fatal(err)
	}
	if res.Name != "dreamy_v2.safetensors" || res.Path != filepath.Join(dir, "dreamy_v2.safetensors") {
		t.Fatalf("result %+v", res)
	}
	h.Add("666", pulltest.File{Data: data, Disposition: "evil.pth"})
	if _, err := pull.Fetch(context.Background(), pull.Source{URL: h.URL + "/api/download/models/666"}, dir, quick); !errors.Is(err, pull.ErrPickle) {
		t.Fatalf("a pickle named by the server: %v", err)
	}
}

func TestFetchCancelKeepsPart(t *testing.T) {
	h := pulltest.New(t)
	data := pulltest.Safetensors(t, 2<<20, 8)
	h.Add("m.safetensors", pulltest.File{Data: data, Slow: 20 * time.Millisecond})
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	opts := quick
	opts.ProgressEvery = time.Millisecond
	var once sync.Once
	opts.Progress = func(p pull.Progress) {
		if p.Done > 256<<10 {
			once.Do(cancel)
		}
	}
	_, err := pull.Fetch(ctx, pull.Source{URL: h.URL + "/files/m.safetensors"}, dir, opts)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	parts, _ := filepath.Glob(filepath.Join(dir, ".forgeflow-*.part"))
	if len(parts) != 1 {
		t.Fatalf("parts kept: %v", parts)
	}
	h.Add("m.safetensors", pulltest.File{Data: data})
	res, err := pull.Fetch(context.Background(), pull.Source{URL: h.URL + "/files/m.safetensors"}, dir, quick)
	if err != nil || !res.Resumed || !bytes.Equal(readFile(t, res.Path), data) {
		t.Fatalf("resume after cancel: %+v, %v", res, err)
	}
}

func TestPolicy(t *testing.T) {
	h := pulltest.New(t)
	data := pulltest.Safetensors(t, 4<<10, 9)
	h.Add("m.safetensors", pulltest.File{Data: data})
	listed := &pull.Policy{Hosts: []string{"127.0.0.1"}}
	if _, err := pull.Fetch(context.Background(), pull.Source{URL: h.URL + "/files/m.safetensors"}, t.TempDir(), pull.Options{Policy: listed}); err != nil {
		t.Fatalf("a listed host: %v", err)
	}
	def := &pull.Policy{Hosts: pull.DefaultHosts}
	_, err := pull.Fetch(context.Background(), pull.Source{URL: h.URL + "/files/m.safetensors"}, t.TempDir(), pull.Options{Policy: def})
	if !errors.Is(err, pull.ErrHostNotAllowed) {
		t.Fatalf("a host off the list: %v", err)
	}
	// A listed host redirecting to one that is not listed and resolves to a loopback
	// address: the connection is refused (no reaching the machine's own services).
	port := h.Listener.Addr().(interface{ String() string }).String()
	port = port[strings.LastIndexByte(port, ':'):]
	h2 := pulltest.New(t)
	h2.Config.Handler = http.RedirectHandler("http://localhost"+port+"/files/m.safetensors", http.StatusFound)
	_, err = pull.Fetch(context.Background(), pull.Source{URL: h2.URL + "/x.safetensors"}, t.TempDir(), pull.Options{Policy: listed, Retries: -1})
	if !errors.Is(err, pull.ErrHostNotAllowed) {
		t.Fatalf("redirect to an unlisted loopback host: %v", err)
	}
	for host, want := range map[string]bool{"huggingface.co": true, "cdn-lfs.huggingface.co": true, "cas-bridge.xethub.hf.co": true,
		"civitai.com": true, "evilhuggingface.co": false, "huggingface.co.evil.net": false, "localhost": false} {
		err := def.Check("https://" + host + "/f.safetensors")
		if (err == nil) != want {
			t.Errorf("Check(%s) = %v, want allowed %v", host, err, want)
		}
	}
}

func TestParseSource(t *testing.T) {
	cases := []struct {
		in, url, name, err string
	}{
		{"hf:comfy/sd15/v1-5.safetensors", "https://huggingface.co/comfy/sd15/resolve/main/v1-5.safetensors", "v1-5.safetensors", ""},
		{"hf:owner/repo@v1.0/sub dir/x.gguf", "https://huggingface.co/owner/repo/resolve/v1.0/sub%20dir/x.gguf", "x.gguf", ""},
		{"https://huggingface.co/o/r/blob/main/a/b.safetensors", "https://huggingface.co/o/r/resolve/main/a/b.safetensors", "", ""},
		{"https://civitai.com/api/download/models/123", "https://civitai.com/api/download/models/123", "", ""},
		{"http://127.0.0.1:9/x.safetensors", "http://127.0.0.1:9/x.safetensors", "", ""},
		{"hf:owner/repo", "", "", "owner, repository and file path"},
		{"hf:owner/repo@/x", "", "", "empty revision"},
		{"hf:owner/repo/../x", "", "", "climbs"},
		{"http://example.com/x", "", "", "https"},
		{"ftp://example.com/x", "", "", "https"},
		{"https://user:pw@example.com/x", "", "", "passwords"},
		{"models/x.safetensors", "", "", "not an https URL"},
	}
	mirror, err := pull.ParseSource("hf:o/r@dev/f.gguf", "https://hf-mirror.example/")
	if err != nil || mirror.URL != "https://hf-mirror.example/o/r/resolve/dev/f.gguf" {
		t.Fatalf("mirror: %+v, %v", mirror, err)
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			s, err := pull.ParseSource(tc.in, "")
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || s.URL != tc.url || s.Name != tc.name {
				t.Fatalf("= %+v, %v; want %s %s", s, err, tc.url, tc.name)
			}
		})
	}
}

// Whatever a client sends as a source, an accepted one is an https URL, or plain http
// to a loopback host, without credentials.
func FuzzParseSource(f *testing.F) {
	for _, s := range []string{"hf:comfy/sd15/v1-5.safetensors", "hf:owner/repo@v1.0/sub dir/x.gguf",
		"https://huggingface.co/o/r/blob/main/a/b.safetensors", "http://127.0.0.1:9/x.safetensors",
		"http://[::1]/x", "http://LOCALHOST./x", "https://user:pw@example.com/x", "hf:o/r/../x", "http://localhost.example.com/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := pull.ParseSource(in, "")
		if err != nil {
			return
		}
		u, err := url.Parse(s.URL)
		if err != nil {
			t.Fatalf("%q gave an unparsable URL %q: %v", in, s.URL, err)
		}
		if u.User != nil || u.Host == "" {
			t.Fatalf("%q gave %q", in, s.URL)
		}
		if u.Scheme != "https" {
			host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
			ip := net.ParseIP(host)
			if u.Scheme != "http" || (host != "localhost" && (ip == nil || !ip.IsLoopback())) {
				t.Fatalf("%q gave %q: plain http beyond loopback", in, s.URL)
			}
		}
	})
}
