package server

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	_ "image/gif" // decoders for /view conversions and upload checks
	"image/jpeg"
	"image/png"
	"io/fs"
	"mime"
	"net/http"
	"net/url"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	_ "golang.org/x/image/bmp"
	_ "golang.org/x/image/tiff"
	_ "golang.org/x/image/webp"

	"github.com/forgeflow/forgeflow/internal/imagesize"
	"github.com/forgeflow/forgeflow/internal/webpmux"
)

func (s *Server) viewRoutes() {
	s.route("GET /view", s.getView)
}

// downloadOnly are content types /view serves as application/octet-stream so that a
// browser never renders an uploaded page or script from the server's origin
// (server.py view_image).
var downloadOnly = map[string]bool{
	"text/html": true, "text/html-sandboxed": true, "application/xhtml+xml": true,
	"text/javascript": true, "text/css": true,
	// Beyond ComfyUI's list: SVG and XML pages run scripts too.
	"image/svg+xml": true, "application/xml": true, "text/xml": true,
	"application/javascript": true, "application/x-javascript": true,
}

// getView serves a file of the output, input or temp folder (server.py view_image):
// filename (optionally annotated "name [type]"), type, subfolder, and the conversions
// preview=webp|jpeg[;quality] and channel=rgba|rgb|a.
func (s *Server) getView(w http.ResponseWriter, r *http.Request) {
	q := lenientQuery(r.URL.RawQuery)
	if !q.Has("filename") {
		s.writeError(w, http.StatusNotFound, "filename not given")
		return
	}
	name, typ := annotatedFilename(q.Get("filename"))
	if name == "" {
		s.writeError(w, http.StatusBadRequest, "empty filename")
		return
	}
	if _, err := relPath(name); err != nil {
		s.writeError(w, http.StatusBadRequest, "invalid filename", err.Error())
		return
	}
	if typ == "" {
		typ = q.Get("type")
	}
	dir, typ, ok := s.dirByType(typ, "output")
	if !ok {
		s.writeError(w, http.StatusBadRequest, "unknown type", fmt.Sprintf("%q is not output, input or temp", typ))
		return
	}
	sub, err := relPath(q.Get("subfolder"))
	if err != nil {
		s.writeError(w, http.StatusForbidden, "invalid subfolder", err.Error())
		return
	}
	name = path.Base(name)
	f, st, done, err := openFileIn(dir, filepath.Join(sub, name))
	if err != nil && isNotExist(err) && s.opts.FetchFile != nil {
		if ferr := s.opts.FetchFile(r.Context(), typ, filepath.ToSlash(sub), name, dir); ferr == nil {
			f, st, done, err = openFileIn(dir, filepath.Join(sub, name))
		} else if !errors.Is(ferr, fs.ErrNotExist) {
			s.log.Warn("fetch file from the cluster", "type", typ, "subfolder", sub, "filename", name, "err", ferr)
		}
	}
	if err != nil {
		if isNotExist(err) {
			s.writeError(w, http.StatusNotFound, "file not found", name)
			return
		}
		s.writeError(w, http.StatusForbidden, "cannot read file", err.Error())
		return
	}
	defer done()
	channel := q.Get("channel")
	converting := q.Has("preview") || channel == "rgb" || channel == "a"
	var data []byte
	if converting {
		if data, err = readAllLimit(f, maxConverted); err != nil {
			s.writeError(w, http.StatusRequestEntityTooLarge, "image too large to convert", err.Error())
			return
		}
	}
	if q.Has("preview") {
		s.writePreview(w, data, q.Get("preview"), channel, name)
		return
	}
	switch channel {
	case "rgb", "a":
		img, ok := s.decodeImage(w, data)
		if !ok {
			return
		}
		out := image.Image(dropAlpha(img))
		if channel == "a" {
			out = alphaImage(img)
		}
		var buf bytes.Buffer
		if err := png.Encode(&buf, out); err != nil {
			s.writeError(w, http.StatusInternalServerError, "cannot encode image", err.Error())
			return
		}
		setStoredFileHeaders(w.Header(), "image/png", "", name)
		_, _ = w.Write(buf.Bytes())
		return
	}
	ct := mime.TypeByExtension(strings.ToLower(filepath.Ext(name)))
	if ct == "" {
		ct = "application/octet-stream"
	}
	if base, _, _ := strings.Cut(ct, ";"); downloadOnly[strings.TrimSpace(base)] {
		ct = "application/octet-stream"
	}
	setStoredFileHeaders(w.Header(), ct, "", name)
	http.ServeContent(w, r, "", st.ModTime(), f)
}

// writePreview re-encodes an image for a thumbnail: "jpeg[;quality]" as JPEG (alpha
// dropped), anything else as ComfyUI's lossy WebP at that quality (default 90).
func (s *Server) writePreview(w http.ResponseWriter, data []byte, preview, channel, name string) {
	img, ok := s.decodeImage(w, data)
	if !ok {
		return
	}
	parts := strings.Split(preview, ";")
	format := parts[0]
	if (format != "webp" && format != "jpeg") || strings.Contains(channel, "a") {
		format = "webp"
	}
	quality := 90
	if q, err := strconv.Atoi(parts[len(parts)-1]); err == nil && q >= 0 {
		quality = min(q, 100)
	}
	if format == "jpeg" || channel == "rgb" {
		img = dropAlpha(img)
	}
	var buf bytes.Buffer
	var err error
	ct := "image/webp"
	if format == "jpeg" {
		ct = "image/jpeg"
		err = jpeg.Encode(&buf, img, &jpeg.Options{Quality: max(quality, 1)})
	} else {
		// PIL's WebP save defaults: lossy, method 4, alpha kept.
		var data []byte
		data, err = webpmux.Encode(img, webpmux.Options{Quality: quality, Method: 4}, nil)
		buf.Write(data)
	}
	if err != nil {
		s.writeError(w, http.StatusInternalServerError, "cannot encode preview", err.Error())
		return
	}
	setStoredFileHeaders(w.Header(), ct, "", name)
	_, _ = w.Write(buf.Bytes())
}

// decodeImage decodes an image to convert it, refusing one over MaxImagePixels from its
// header (413) and one Go cannot decode (415); it writes the error answer itself.
func (s *Server) decodeImage(w http.ResponseWriter, data []byte) (image.Image, bool) {
	img, _, err := imagesize.Decode(data, s.opts.MaxImagePixels)
	var tl *imagesize.TooLargeError
	switch {
	case errors.As(err, &tl):
		s.writeError(w, http.StatusRequestEntityTooLarge, "image too large", tooLargeDetails(tl))
		return nil, false
	case err != nil:
		s.writeError(w, http.StatusUnsupportedMediaType, "cannot decode image", err.Error())
		return nil, false
	}
	return img, true
}

// tooLargeDetails explains a refused image and names the flag that raises the limit.
func tooLargeDetails(tl *imagesize.TooLargeError) string {
	return fmt.Sprintf("%dx%d is %d pixels; the limit is %d (forgeflow serve --max-image-pixels)",
		tl.Width, tl.Height, int64(tl.Width)*int64(tl.Height), tl.Max)
}

// hasAlpha reports whether the decoded image carries an alpha channel (PIL's mode
// "RGBA" or "LA"); palette images count as opaque, as PIL's mode "P" does.
func hasAlpha(img image.Image) bool {
	switch img.(type) {
	case *image.NRGBA, *image.NRGBA64, *image.RGBA, *image.RGBA64:
		return true
	}
	return false
}

// dropAlpha returns the colour channels with alpha set opaque, not composited over
// black: PIL's convert("RGB") keeps the stored colour values.
func dropAlpha(img image.Image) *image.RGBA {
	b := img.Bounds()
	out := image.NewRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			c := color.NRGBAModel.Convert(img.At(x, y)).(color.NRGBA)
			out.SetRGBA(x-b.Min.X, y-b.Min.Y, color.RGBA{c.R, c.G, c.B, 255})
		}
	}
	return out
}

// alphaImage is /view?channel=a: a black RGBA image whose alpha is the source's alpha,
// opaque where the source has none.
func alphaImage(img image.Image) *image.NRGBA {
	b := img.Bounds()
	out := image.NewNRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
	if !hasAlpha(img) {
		draw.Draw(out, out.Bounds(), image.NewUniform(color.NRGBA{0, 0, 0, 255}), image.Point{}, draw.Src)
		return out
	}
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			a := color.NRGBAModel.Convert(img.At(x, y)).(color.NRGBA).A
			out.SetNRGBA(x-b.Min.X, y-b.Min.Y, color.NRGBA{0, 0, 0, a})
		}
	}
	return out
}

// lenientQuery parses a query string as aiohttp does, where ';' is an ordinary
// character: clients send preview=webp;90 unescaped, and net/url drops such pairs.
func lenientQuery(raw string) url.Values {
	v := url.Values{}
	for _, pair := range strings.Split(raw, "&") {
		if pair == "" {
			continue
		}
		k, val, _ := strings.Cut(pair, "=")
		uk, err1 := url.QueryUnescape(k)
		uv, err2 := url.QueryUnescape(val)
		if err1 != nil || err2 != nil {
			continue
		}
		v.Add(uk, uv)
	}
	return v
}
