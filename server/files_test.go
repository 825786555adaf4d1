package server

import (
	"bytes"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"mime/multipart"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/internal/webpmux"
)

func TestView(t *testing.T) {
	ts := newTestServer(t, nil)
	half := func(x, y int) color.NRGBA { return color.NRGBA{200, 100, 50, uint8(x * 60)} }
	img := pngBytes(t, 4, 2, half)
	writeFile(t, filepath.Join(ts.dirs.Output, "a.png"), img)
	writeFile(t, filepath.Join(ts.dirs.Output, "sub", "b.png"), img)
	writeFile(t, filepath.Join(ts.dirs.Input, "in.png"), img)
	writeFile(t, filepath.Join(ts.dirs.Temp, "page.html"), []byte("<script>alert(1)</script>"))
	writeFile(t, filepath.Join(ts.base, "secret.png"), img)

	tests := []struct {
		name, query string
		status      int
		ctype       string
		check       func(t *testing.T, body []byte)
	}{
		{name: "output file", query: "filename=a.png&type=output", status: 200, ctype: "image/png",
			check: func(t *testing.T, b []byte) {
				if !bytes.Equal(b, img) {
					t.Error("bytes differ from the file")
				}
			}},
		{name: "default type is output", query: "filename=a.png", status: 200, ctype: "image/png"},
		{name: "subfolder", query: "filename=b.png&subfolder=sub", status: 200, ctype: "image/png"},
		{name: "input", query: "filename=in.png&type=input", status: 200},
		{name: "annotated", query: "filename=" + url.QueryEscape("in.png [input]"), status: 200},
		{name: "html is downloaded not rendered", query: "filename=page.html&type=temp", status: 200, ctype: "application/octet-stream"},
		{name: "missing file", query: "filename=nope.png", status: 404},
		{name: "no filename", query: "type=output", status: 404},
		{name: "unknown type", query: "filename=a.png&type=models", status: 400},
		{name: "dotdot filename", query: "filename=../secret.png", status: 400},
		{name: "absolute filename", query: "filename=/etc/passwd", status: 400},
		{name: "dotdot subfolder", query: "filename=secret.png&subfolder=..", status: 403},
		{name: "deep dotdot subfolder", query: "filename=secret.png&subfolder=sub/../..", status: 403},
		{name: "absolute subfolder", query: "filename=passwd&subfolder=/etc", status: 403},
		{name: "channel rgb", query: "filename=a.png&channel=rgb", status: 200, ctype: "image/png",
			check: func(t *testing.T, b []byte) {
				m, err := png.Decode(bytes.NewReader(b))
				if err != nil {
					t.Fatal(err)
				}
				c := color.NRGBAModel.Convert(m.At(0, 0)).(color.NRGBA)
				if c != (color.NRGBA{200, 100, 50, 255}) {
					t.Errorf("rgb pixel %v: want the colour kept, alpha opaque", c)
				}
			}},
		{name: "channel a", query: "filename=a.png&channel=a", status: 200, ctype: "image/png",
			check: func(t *testing.T, b []byte) {
				m, err := png.Decode(bytes.NewReader(b))
				if err != nil {
					t.Fatal(err)
				}
				c := color.NRGBAModel.Convert(m.At(2, 1)).(color.NRGBA)
				if c != (color.NRGBA{0, 0, 0, 120}) {
					t.Errorf("alpha pixel %v, want black with alpha 120", c)
				}
			}},
		{name: "jpeg preview", query: "filename=a.png&preview=jpeg;50", status: 200, ctype: "image/jpeg",
			check: func(t *testing.T, b []byte) {
				_, f, err := image.DecodeConfig(bytes.NewReader(b))
				if err != nil || f != "jpeg" {
					t.Errorf("preview is %q, %v", f, err)
				}
			}},
		{name: "webp preview", query: "filename=a.png&preview=webp;90", status: 200, ctype: "image/webp",
			check: func(t *testing.T, b []byte) { checkWebPPreview(t, b, true) }},
		{name: "webp preview of the rgb channel", query: "filename=a.png&preview=webp;80&channel=rgb", status: 200, ctype: "image/webp",
			check: func(t *testing.T, b []byte) { checkWebPPreview(t, b, false) }},
		{name: "another preview format is webp", query: "filename=a.png&preview=png", status: 200, ctype: "image/webp",
			check: func(t *testing.T, b []byte) { checkWebPPreview(t, b, true) }},
		{name: "preview of a non-image", query: "filename=page.html&type=temp&preview=jpeg", status: 415},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := ts.do(t, "GET", "/view?"+tc.query, nil)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			if tc.status >= 400 {
				isJSONError(t, rec, tc.status)
				return
			}
			if tc.ctype != "" && rec.Header().Get("Content-Type") != tc.ctype {
				t.Errorf("content type %q, want %q", rec.Header().Get("Content-Type"), tc.ctype)
			}
			if !strings.HasPrefix(rec.Header().Get("Content-Disposition"), "filename=") {
				t.Errorf("no Content-Disposition")
			}
			if tc.check != nil {
				tc.check(t, rec.Body.Bytes())
			}
		})
	}
}

// checkWebPPreview decodes a /view WebP preview of a.png (colour 200,100,50 with alpha
// 60·x): lossy colour within a few levels where visible, alpha exact (libwebp keeps it
// lossless) or opaque when the rgb channel was asked for.
func checkWebPPreview(t *testing.T, b []byte, alpha bool) {
	t.Helper()
	frames, _, err := webpmux.Decode(b, 1<<20)
	if err != nil || len(frames) != 1 {
		t.Fatalf("preview does not decode as one WebP image: %v", err)
	}
	m := frames[0]
	if m.Rect.Dx() != 4 || m.Rect.Dy() != 2 {
		t.Fatalf("preview is %v", m.Rect)
	}
	for y := 0; y < 2; y++ {
		for x := 0; x < 4; x++ {
			c := m.NRGBAAt(x, y)
			want := uint8(255)
			if alpha {
				want = uint8(60 * x)
			}
			if c.A != want {
				t.Errorf("pixel (%d, %d) alpha %d, want %d", x, y, c.A, want)
			}
			if c.A > 0 && (absDiff(c.R, 200) > 6 || absDiff(c.G, 100) > 6 || absDiff(c.B, 50) > 6) {
				t.Errorf("pixel (%d, %d) = %v, want about (200, 100, 50)", x, y, c)
			}
		}
	}
}

func absDiff(a, b uint8) int {
	if a > b {
		return int(a - b)
	}
	return int(b - a)
}

func TestViewSymlinkOutside(t *testing.T) {
	ts := newTestServer(t, nil)
	secret := filepath.Join(ts.base, "secret.png")
	writeFile(t, secret, []byte("secret"))
	if err := os.MkdirAll(ts.dirs.Output, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(ts.dirs.Output, "link.png")); err != nil {
		t.Skip("no symlinks:", err)
	}
	if err := os.Symlink(ts.base, filepath.Join(ts.dirs.Output, "up")); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"filename=link.png", "filename=secret.png&subfolder=up"} {
		rec := ts.do(t, "GET", "/view?"+q, nil)
		if rec.Code == 200 || strings.Contains(rec.Body.String(), "secret\n") || rec.Body.String() == "secret" {
			t.Fatalf("%s: served a file outside the output folder (status %d)", q, rec.Code)
		}
		isJSONError(t, rec, rec.Code)
	}
}

// multipartBody builds an upload form; file is nil for none.
func multipartBody(t *testing.T, filename string, file []byte, fields map[string]string) (*bytes.Buffer, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for k, v := range fields {
		if err := mw.WriteField(k, v); err != nil {
			t.Fatal(err)
		}
	}
	if file != nil {
		fw, err := mw.CreateFormFile("image", filename)
		if err != nil {
			t.Fatal(err)
		}
		fw.Write(file)
	}
	mw.Close()
	return &buf, mw.FormDataContentType()
}

func TestUploadImage(t *testing.T) {
	red := func(x, y int) color.NRGBA { return color.NRGBA{255, 0, 0, 255} }
	blue := func(x, y int) color.NRGBA { return color.NRGBA{0, 0, 255, 255} }
	imgA, imgB := pngBytes(t, 2, 2, red), pngBytes(t, 2, 2, blue)
	ts := newTestServer(t, nil)
	upload := func(name string, data []byte, fields map[string]string) (int, string) {
		body, ct := multipartBody(t, name, data, fields)
		rec := ts.do(t, "POST", "/upload/image", body, "Content-Type", ct)
		return rec.Code, rec.Body.String()
	}
	steps := []struct {
		name   string
		file   string
		data   []byte
		fields map[string]string
		status int
		want   string
	}{
		{"first", "pic.png", imgA, nil, 200, `{"name": "pic.png", "subfolder": "", "type": "input"}`},
		{"same bytes reuse the name", "pic.png", imgA, nil, 200, `{"name": "pic.png", "subfolder": "", "type": "input"}`},
		{"different bytes get (1)", "pic.png", imgB, nil, 200, `{"name": "pic (1).png", "subfolder": "", "type": "input"}`},
		{"overwrite keeps the name", "pic.png", imgB, map[string]string{"overwrite": "true"}, 200, `{"name": "pic.png", "subfolder": "", "type": "input"}`},
		{"subfolder and type", "x.png", imgA, map[string]string{"subfolder": "masks/a", "type": "temp"}, 200, `{"name": "x.png", "subfolder": "masks/a", "type": "temp"}`},
		{"not an image", "evil.png", []byte("<html><script>alert(1)</script></html>"), nil, 415, ""},
		{"truncated png", "half.png", imgA[:20], nil, 415, ""},
		{"dotdot subfolder", "x.png", imgA, map[string]string{"subfolder": "../../etc"}, 400, ""},
		{"absolute subfolder", "x.png", imgA, map[string]string{"subfolder": "/tmp"}, 400, ""},
		{"directory in name is dropped", "../../y.png", imgA, nil, 200, `{"name": "y.png", "subfolder": "", "type": "input"}`},
		{"unknown type", "x.png", imgA, map[string]string{"type": "models"}, 400, ""},
		{"no file", "", nil, nil, 400, ""},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			code, body := upload(st.file, st.data, st.fields)
			if code != st.status {
				t.Fatalf("status %d, want %d: %s", code, st.status, body)
			}
			if st.want != "" {
				jsonEqual(t, []byte(body), st.want)
			}
			if code >= 400 && !strings.Contains(body, `"error"`) {
				t.Fatalf("error answer without JSON error: %s", body)
			}
		})
	}
	got, err := os.ReadFile(filepath.Join(ts.dirs.Input, "pic (1).png"))
	if err != nil || !bytes.Equal(got, imgB) {
		t.Fatalf("pic (1).png not stored: %v", err)
	}
	got, _ = os.ReadFile(filepath.Join(ts.dirs.Input, "pic.png"))
	if !bytes.Equal(got, imgB) {
		t.Fatal("overwrite did not replace pic.png")
	}
	if _, err := os.Stat(filepath.Join(ts.dirs.Temp, "masks", "a", "x.png")); err != nil {
		t.Fatal("subfolder upload not stored:", err)
	}
	entries, _ := os.ReadDir(ts.base)
	for _, e := range entries {
		if e.Name() == "etc" || e.Name() == "x.png" || e.Name() == "y.png" {
			t.Fatalf("upload escaped its folder: %s", e.Name())
		}
	}
}

func TestUploadTooLarge(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.MaxUploadSize = 150 })
	big := pngBytes(t, 64, 64, func(x, y int) color.NRGBA { return color.NRGBA{uint8(x * 7), uint8(y * 13), uint8(x ^ y), 255} })
	if len(big) < 250 {
		t.Fatalf("test image only %d bytes", len(big))
	}
	body, ct := multipartBody(t, "big.png", big, nil)
	isJSONError(t, ts.do(t, "POST", "/upload/image", body, "Content-Type", ct), 413)
}

func TestUploadMask(t *testing.T) {
	ts := newTestServer(t, nil)
	orig := pngBytes(t, 3, 2, func(x, y int) color.NRGBA { return color.NRGBA{10, 20, 30, 255} })
	orig, err := graph.InsertPNGText(orig, []graph.TextChunk{{Keyword: "workflow", Text: `{"nodes": []}`}})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(ts.dirs.Output, "o.png"), orig)
	mask := pngBytes(t, 3, 2, func(x, y int) color.NRGBA { return color.NRGBA{0, 0, 0, uint8(40 * (x + y))} })

	ref, _ := json.Marshal(map[string]string{"filename": "o.png", "subfolder": "", "type": "output"})
	body, ct := multipartBody(t, "clipspace-mask.png", mask, map[string]string{"original_ref": string(ref), "type": "input", "subfolder": "clipspace"})
	rec := ts.do(t, "POST", "/upload/mask", body, "Content-Type", ct)
	if rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	jsonEqual(t, rec.Body.Bytes(), `{"name": "clipspace-mask.png", "subfolder": "clipspace", "type": "input"}`)
	data, err := os.ReadFile(filepath.Join(ts.dirs.Input, "clipspace", "clipspace-mask.png"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	for y := 0; y < 2; y++ {
		for x := 0; x < 3; x++ {
			c := color.NRGBAModel.Convert(m.At(x, y)).(color.NRGBA)
			want := color.NRGBA{10, 20, 30, uint8(40 * (x + y))}
			if c != want {
				t.Fatalf("pixel (%d,%d) = %v, want %v: colour of the original, alpha of the mask", x, y, c, want)
			}
		}
	}
	chunks, err := graph.ReadPNGText(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := graph.PNGText(chunks, "workflow"); !ok || v != `{"nodes": []}` {
		t.Fatalf("workflow text not carried over: %v", chunks)
	}

	for _, tc := range []struct {
		name, ref string
		status    int
	}{
		{"traversal in filename", `{"filename": "../secret.png", "type": "output"}`, 403},
		{"traversal in subfolder", `{"filename": "o.png", "subfolder": "../..", "type": "output"}`, 403},
		{"missing original", `{"filename": "none.png", "type": "output"}`, 404},
		{"bad json", `{`, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, ct := multipartBody(t, "m.png", mask, map[string]string{"original_ref": tc.ref})
			isJSONError(t, ts.do(t, "POST", "/upload/mask", body, "Content-Type", ct), tc.status)
		})
	}
}
