package server

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"io/fs"
	"net/http"
	"path"
	"path/filepath"
	"strings"

	"github.com/forgeflow/forgeflow/graph"
)

func (s *Server) uploadRoutes() {
	s.route("POST /upload/image", s.postUploadImage)
	s.route("POST /upload/mask", s.postUploadMask)
}

// uploadAnswer is {"name", "subfolder", "type"} of a stored upload.
type uploadAnswer struct {
	Name      string `json:"name"`
	Subfolder string `json:"subfolder"`
	Type      string `json:"type"`
}

// upload is a parsed multipart upload form.
type upload struct {
	data      []byte
	filename  string
	subfolder string
	typ       string
	dir       string
	overwrite bool
	fields    map[string]string
}

// maxFormField bounds each text field of an upload form (type, subfolder, original_ref).
const maxFormField = 1 << 20

// readForm streams a multipart body: the first "image" file part into memory and the
// text fields, within MaxUploadSize in all. Unlike ParseMultipartForm it never spills
// a large file to the system's temp folder, so uploads touch no folder but the target.
func (s *Server) readForm(w http.ResponseWriter, r *http.Request) (fields map[string]string, filename string, file []byte, ok bool) {
	r.Body = http.MaxBytesReader(w, r.Body, s.opts.MaxUploadSize)
	mr, err := r.MultipartReader()
	if err != nil {
		s.writeError(w, http.StatusBadRequest, "invalid multipart form", err.Error())
		return nil, "", nil, false
	}
	fields = map[string]string{}
	seenFile := false
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err == nil {
			name := part.FormName()
			switch {
			case name == "image" && part.FileName() != "" && !seenFile:
				seenFile = true
				filename = path.Base(strings.ReplaceAll(part.FileName(), "\\", "/"))
				file, err = io.ReadAll(part)
			case part.FileName() == "":
				var v []byte
				v, err = io.ReadAll(io.LimitReader(part, maxFormField+1))
				if err == nil && len(v) > maxFormField {
					err = fmt.Errorf("form field %q is over %d bytes", name, maxFormField)
				}
				if _, dup := fields[name]; !dup {
					fields[name] = string(v)
				}
			default:
				_, err = io.Copy(io.Discard, part)
			}
			part.Close()
		}
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				s.writeError(w, http.StatusRequestEntityTooLarge, "upload too large", fmt.Sprintf("limit is %d bytes", mbe.Limit))
				return nil, "", nil, false
			}
			s.writeError(w, http.StatusBadRequest, "invalid multipart form", err.Error())
			return nil, "", nil, false
		}
	}
	if !seenFile {
		s.writeError(w, http.StatusBadRequest, "no image in the form")
		return nil, "", nil, false
	}
	return fields, filename, file, true
}

// readUpload parses the multipart form of /upload/image and /upload/mask and checks the
// file name, subfolder and type. It writes the error answer itself on failure.
func (s *Server) readUpload(w http.ResponseWriter, r *http.Request) (*upload, bool) {
	fields, filename, data, ok := s.readForm(w, r)
	if !ok {
		return nil, false
	}
	u := &upload{filename: filename, data: data, fields: fields}
	if u.filename == "" || u.filename == "." || u.filename == "/" {
		s.writeError(w, http.StatusBadRequest, "image has no file name")
		return nil, false
	}
	if strings.ContainsAny(u.filename, "\x00") || u.filename == ".." {
		s.writeError(w, http.StatusBadRequest, "invalid file name", u.filename)
		return nil, false
	}
	u.subfolder = fields["subfolder"]
	if _, err := relPath(u.subfolder, u.filename); err != nil {
		s.writeError(w, http.StatusBadRequest, "invalid subfolder", err.Error())
		return nil, false
	}
	u.dir, u.typ, ok = s.dirByType(fields["type"], "input")
	if !ok {
		s.writeError(w, http.StatusBadRequest, "unknown type", fmt.Sprintf("%q is not output, input or temp", u.typ))
		return nil, false
	}
	ow := fields["overwrite"]
	u.overwrite = ow == "true" || ow == "1"
	if !isMedia(u.data) {
		s.writeError(w, http.StatusUnsupportedMediaType, "not an image", "the upload is not a PNG, JPEG, GIF, WebP, BMP or TIFF image (or audio/video for media inputs)")
		return nil, false
	}
	return u, true
}

// isMedia accepts what LoadImage and the front end's media upload widgets send through
// /upload/image: images Go can decode, plus audio and video recognised by their magic
// bytes (the front end uploads those through this route too). Anything else, HTML and
// scripts included, is refused.
func isMedia(data []byte) bool {
	if _, _, err := image.DecodeConfig(bytes.NewReader(data)); err == nil {
		return true
	}
	ct := http.DetectContentType(data)
	return strings.HasPrefix(ct, "video/") || strings.HasPrefix(ct, "audio/") || ct == "application/ogg"
}

// store writes the upload, choosing "name (i).ext" while the name is taken by a
// different file; an identical file already there is reused (server.py image_upload,
// compare_image_hash). save, when set, produces the bytes to write.
func (s *Server) store(u *upload, content []byte) (uploadAnswer, error) {
	root, err := openRoot(u.dir)
	if err != nil {
		return uploadAnswer{}, err
	}
	defer root.Close()
	sub, _ := relPath(u.subfolder)
	if sub != "." {
		if err := root.MkdirAll(sub, 0o755); err != nil {
			return uploadAnswer{}, err
		}
	}
	name := u.filename
	ext := path.Ext(name)
	stem := strings.TrimSuffix(name, ext)
	if !u.overwrite {
		sum := sha256.Sum256(u.data)
		for i := 1; ; i++ {
			existing, err := root.ReadFile(filepath.Join(sub, name))
			if errors.Is(err, fs.ErrNotExist) {
				break
			}
			if err == nil && sha256.Sum256(existing) == sum {
				return uploadAnswer{Name: name, Subfolder: u.subfolder, Type: u.typ}, nil
			}
			name = fmt.Sprintf("%s (%d)%s", stem, i, ext)
		}
	}
	if err := root.WriteFile(filepath.Join(sub, name), content, 0o644); err != nil {
		return uploadAnswer{}, err
	}
	return uploadAnswer{Name: name, Subfolder: u.subfolder, Type: u.typ}, nil
}

func (s *Server) postUploadImage(w http.ResponseWriter, r *http.Request) {
	u, ok := s.readUpload(w, r)
	if !ok {
		return
	}
	ans, err := s.store(u, u.data)
	if err != nil {
		s.writeError(w, http.StatusBadRequest, "cannot store upload", err.Error())
		return
	}
	s.writeJSON(w, http.StatusOK, ans)
}

// postUploadMask stores the original image named by original_ref with its alpha
// replaced by the uploaded mask's alpha, keeping the original's PNG text chunks
// (server.py upload_mask).
func (s *Server) postUploadMask(w http.ResponseWriter, r *http.Request) {
	u, ok := s.readUpload(w, r)
	if !ok {
		return
	}
	var ref struct {
		Filename  string `json:"filename"`
		Subfolder string `json:"subfolder"`
		Type      string `json:"type"`
	}
	if err := json.Unmarshal([]byte(u.fields["original_ref"]), &ref); err != nil {
		s.writeError(w, http.StatusBadRequest, "invalid original_ref", err.Error())
		return
	}
	name, typ := annotatedFilename(ref.Filename)
	if name == "" {
		s.writeError(w, http.StatusBadRequest, "original_ref has no filename")
		return
	}
	if typ == "" {
		typ = ref.Type
	}
	dir, _, ok := s.dirByType(typ, "output")
	if !ok {
		s.writeError(w, http.StatusBadRequest, "unknown type", typ)
		return
	}
	rel, err := relPath(ref.Subfolder, name)
	if err != nil {
		s.writeError(w, http.StatusForbidden, "invalid original_ref", err.Error())
		return
	}
	f, _, done, err := openFileIn(dir, rel)
	if err != nil {
		if isNotExist(err) {
			s.writeError(w, http.StatusNotFound, "original image not found", name)
			return
		}
		s.writeError(w, http.StatusForbidden, "cannot read original image", err.Error())
		return
	}
	orig, err := readAllLimit(f, maxConverted)
	done()
	if err != nil {
		s.writeError(w, http.StatusRequestEntityTooLarge, "original image too large", err.Error())
		return
	}
	out, err := applyMask(orig, u.data)
	if err != nil {
		s.writeError(w, http.StatusBadRequest, "cannot apply mask", err.Error())
		return
	}
	ans, err := s.store(u, out)
	if err != nil {
		s.writeError(w, http.StatusBadRequest, "cannot store upload", err.Error())
		return
	}
	s.writeJSON(w, http.StatusOK, ans)
}

// applyMask returns the original as an RGBA PNG whose alpha channel is the mask's alpha
// (PIL: original.convert("RGBA").putalpha(mask.convert("RGBA").getchannel("A"))), with
// the original's text chunks (the workflow) carried over.
func applyMask(origData, maskData []byte) ([]byte, error) {
	orig, _, err := image.Decode(bytes.NewReader(origData))
	if err != nil {
		return nil, fmt.Errorf("server: original image: %w", err)
	}
	mask, _, err := image.Decode(bytes.NewReader(maskData))
	if err != nil {
		return nil, fmt.Errorf("server: mask: %w", err)
	}
	ob, mb := orig.Bounds(), mask.Bounds()
	if ob.Dx() != mb.Dx() || ob.Dy() != mb.Dy() {
		return nil, fmt.Errorf("server: mask is %dx%d, image is %dx%d", mb.Dx(), mb.Dy(), ob.Dx(), ob.Dy())
	}
	maskHasAlpha := hasAlpha(mask)
	out := image.NewNRGBA(image.Rect(0, 0, ob.Dx(), ob.Dy()))
	for y := 0; y < ob.Dy(); y++ {
		for x := 0; x < ob.Dx(); x++ {
			c := color.NRGBAModel.Convert(orig.At(ob.Min.X+x, ob.Min.Y+y)).(color.NRGBA)
			c.A = 255
			if maskHasAlpha {
				c.A = color.NRGBAModel.Convert(mask.At(mb.Min.X+x, mb.Min.Y+y)).(color.NRGBA).A
			}
			out.SetNRGBA(x, y, c)
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, out); err != nil {
		return nil, err
	}
	if !graph.IsPNG(origData) {
		return buf.Bytes(), nil
	}
	chunks, err := graph.ReadPNGText(bytes.NewReader(origData))
	if err != nil || len(chunks) == 0 {
		return buf.Bytes(), nil // a damaged text chunk only loses the metadata
	}
	return graph.InsertPNGText(buf.Bytes(), chunks)
}
