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
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/internal/imagesize"
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

// upload is a parsed multipart upload form. The file part is spooled to a file of the
// temp folder as it arrives, so an upload holds a copy buffer in memory, not its size.
type upload struct {
	file      *os.File // the spooled file part; close removes it
	size      int64
	sum       [sha256.Size]byte
	filename  string
	subfolder string
	typ       string
	dir       string
	overwrite bool
	fields    map[string]string
}

// close removes the spooled file.
func (u *upload) close() {
	if u.file != nil {
		u.file.Close()
		os.Remove(u.file.Name())
	}
}

// reader returns the spooled file from its start.
func (u *upload) reader() *io.SectionReader { return io.NewSectionReader(u.file, 0, u.size) }

// maxFormFields bounds the text fields of an upload form together (type, subfolder,
// overwrite, original_ref).
const maxFormFields = 1 << 20

// acquireUpload waits for one of the MaxConcurrentUploads slots; it writes the 503
// answer itself when none frees up in time or the client goes away.
func (s *Server) acquireUpload(w http.ResponseWriter, r *http.Request) (release func(), ok bool) {
	t := time.NewTimer(s.uploadWait)
	defer t.Stop()
	select {
	case s.uploads <- struct{}{}:
		return func() { <-s.uploads }, true
	case <-t.C:
	case <-r.Context().Done():
	}
	w.Header().Set("Retry-After", "5")
	s.writeError(w, http.StatusServiceUnavailable, "too many uploads at once", fmt.Sprintf("at most %d uploads are received at the same time (--max-concurrent-uploads)", cap(s.uploads)))
	return nil, false
}

// uploadSlotWait is how long an upload waits for a slot before it is refused.
const uploadSlotWait = 30 * time.Second

// readForm streams a multipart body, within MaxUploadSize in all: the first "image"
// file part into a spool file of the temp folder (hashed on the way) and the text
// fields into memory. Unlike ParseMultipartForm it never spills into the system's
// temp folder. On success the caller closes the upload.
func (s *Server) readForm(w http.ResponseWriter, r *http.Request) (*upload, bool) {
	r.Body = http.MaxBytesReader(w, r.Body, s.opts.MaxUploadSize)
	mr, err := r.MultipartReader()
	if err != nil {
		s.writeError(w, http.StatusBadRequest, "invalid multipart form", err.Error())
		return nil, false
	}
	u := &upload{fields: map[string]string{}}
	fieldBytes := 0
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err == nil {
			name := part.FormName()
			switch {
			case name == "image" && part.FileName() != "" && u.file == nil:
				u.filename = path.Base(strings.ReplaceAll(part.FileName(), "\\", "/"))
				err = s.spool(u, part)
			case part.FileName() == "":
				var v []byte
				v, err = io.ReadAll(io.LimitReader(part, int64(maxFormFields-fieldBytes+1)))
				fieldBytes += len(v)
				if err == nil && fieldBytes > maxFormFields {
					err = fmt.Errorf("form fields are over %d bytes in all", maxFormFields)
				}
				if _, dup := u.fields[name]; !dup {
					u.fields[name] = string(v)
				}
			default:
				_, err = io.Copy(io.Discard, part)
			}
			part.Close()
		}
		if err != nil {
			u.close()
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				s.writeError(w, http.StatusRequestEntityTooLarge, "upload too large", fmt.Sprintf("limit is %d bytes", mbe.Limit))
				return nil, false
			}
			s.writeError(w, http.StatusBadRequest, "invalid multipart form", err.Error())
			return nil, false
		}
	}
	if u.file == nil {
		s.writeError(w, http.StatusBadRequest, "no image in the form")
		return nil, false
	}
	return u, true
}

// spool copies a file part into a new file of the temp folder, hashing it.
func (s *Server) spool(u *upload, part io.Reader) error {
	if err := os.MkdirAll(s.opts.Dirs.Temp, 0o755); err != nil {
		return fmt.Errorf("server: upload: %w", err)
	}
	f, err := os.CreateTemp(s.opts.Dirs.Temp, ".upload-*")
	if err != nil {
		return fmt.Errorf("server: upload: %w", err)
	}
	u.file = f
	h := sha256.New()
	u.size, err = io.Copy(io.MultiWriter(f, h), part)
	h.Sum(u.sum[:0])
	return err
}

// readUpload parses the multipart form of /upload/image and /upload/mask and checks the
// file name, subfolder and type. It writes the error answer itself on failure; on
// success the caller closes the upload.
func (s *Server) readUpload(w http.ResponseWriter, r *http.Request) (*upload, bool) {
	u, ok := s.readForm(w, r)
	if !ok {
		return nil, false
	}
	if ok = s.checkUpload(w, u); !ok {
		u.close()
		return nil, false
	}
	return u, true
}

func (s *Server) checkUpload(w http.ResponseWriter, u *upload) bool {
	if u.filename == "" || u.filename == "." || u.filename == "/" {
		s.writeError(w, http.StatusBadRequest, "image has no file name")
		return false
	}
	if strings.ContainsAny(u.filename, "\x00") || u.filename == ".." {
		s.writeError(w, http.StatusBadRequest, "invalid file name", u.filename)
		return false
	}
	u.subfolder = u.fields["subfolder"]
	if _, err := relPath(u.subfolder, u.filename); err != nil {
		s.writeError(w, http.StatusBadRequest, "invalid subfolder", err.Error())
		return false
	}
	var ok bool
	u.dir, u.typ, ok = s.dirByType(u.fields["type"], "input")
	if !ok {
		s.writeError(w, http.StatusBadRequest, "unknown type", fmt.Sprintf("%q is not output, input or temp", u.typ))
		return false
	}
	ow := u.fields["overwrite"]
	u.overwrite = ow == "true" || ow == "1"
	media, err := isMedia(u.reader(), s.opts.MaxImagePixels)
	var tl *imagesize.TooLargeError
	switch {
	case errors.As(err, &tl):
		s.writeError(w, http.StatusRequestEntityTooLarge, "image too large", tooLargeDetails(tl))
		return false
	case !media:
		s.writeError(w, http.StatusUnsupportedMediaType, "not an image", "the upload is not a PNG, JPEG, GIF, WebP, BMP or TIFF image (or audio/video for media inputs)")
		return false
	}
	return true
}

// isMedia accepts what LoadImage and the front end's media upload widgets send through
// /upload/image: images Go can decode, plus audio and video recognised by their magic
// bytes (the front end uploads those through this route too). Anything else, HTML and
// scripts included, is refused. An image whose header declares more than maxPixels is
// an *imagesize.TooLargeError: it would only fail later, in LoadImage. Only the header
// is read.
func isMedia(r *io.SectionReader, maxPixels int64) (bool, error) {
	if cfg, _, err := image.DecodeConfig(io.NewSectionReader(r, 0, r.Size())); err == nil {
		return true, imagesize.Check(cfg.Width, cfg.Height, maxPixels)
	}
	head := make([]byte, 512)
	n, _ := r.ReadAt(head, 0)
	ct := http.DetectContentType(head[:n])
	return strings.HasPrefix(ct, "video/") || strings.HasPrefix(ct, "audio/") || ct == "application/ogg", nil
}

// store writes content (size bytes) for the upload, choosing "name (i).ext" while the
// name is taken by a different file; a file already there with the upload's bytes is
// reused (server.py image_upload, compare_image_hash). Files are compared by streaming
// their hash, and content is written to a hidden file renamed into place, so a reader
// never sees half a file.
func (s *Server) store(u *upload, content io.Reader) (uploadAnswer, error) {
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
		for i := 1; ; i++ {
			sum, err := fileSum(root, filepath.Join(sub, name))
			if errors.Is(err, fs.ErrNotExist) {
				break
			}
			if err == nil && sum == u.sum {
				return uploadAnswer{Name: name, Subfolder: u.subfolder, Type: u.typ}, nil
			}
			name = fmt.Sprintf("%s (%d)%s", stem, i, ext)
		}
	}
	if err := writeAtomic(root, filepath.Join(sub, name), content); err != nil {
		return uploadAnswer{}, err
	}
	return uploadAnswer{Name: name, Subfolder: u.subfolder, Type: u.typ}, nil
}

// fileSum is the SHA-256 of rel inside root, read as a stream.
func fileSum(root *os.Root, rel string) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	f, err := root.Open(rel)
	if err != nil {
		return sum, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return sum, err
	}
	h.Sum(sum[:0])
	return sum, nil
}

// writeAtomic writes content to rel inside root through a hidden file in the same
// folder, renamed over rel once complete.
func writeAtomic(root *os.Root, rel string, content io.Reader) error {
	tmp := filepath.Join(filepath.Dir(rel), "."+filepath.Base(rel)+".part-"+newSID()[:8])
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, content)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = root.Rename(tmp, rel)
	}
	if err != nil {
		root.Remove(tmp)
	}
	return err
}

func (s *Server) postUploadImage(w http.ResponseWriter, r *http.Request) {
	release, ok := s.acquireUpload(w, r)
	if !ok {
		return
	}
	defer release()
	u, ok := s.readUpload(w, r)
	if !ok {
		return
	}
	defer u.close()
	ans, err := s.store(u, u.reader())
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
	release, ok := s.acquireUpload(w, r)
	if !ok {
		return
	}
	defer release()
	u, ok := s.readUpload(w, r)
	if !ok {
		return
	}
	defer u.close()
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
	mask, err := readAllLimit(u.reader(), maxConverted)
	if err != nil {
		s.writeError(w, http.StatusRequestEntityTooLarge, "mask too large", err.Error())
		return
	}
	out, err := applyMask(orig, mask, s.opts.MaxImagePixels)
	var tl *imagesize.TooLargeError
	if errors.As(err, &tl) {
		s.writeError(w, http.StatusRequestEntityTooLarge, "image too large", tooLargeDetails(tl))
		return
	}
	if err != nil {
		s.writeError(w, http.StatusBadRequest, "cannot apply mask", err.Error())
		return
	}
	ans, err := s.store(u, bytes.NewReader(out))
	if err != nil {
		s.writeError(w, http.StatusBadRequest, "cannot store upload", err.Error())
		return
	}
	s.writeJSON(w, http.StatusOK, ans)
}

// applyMask returns the original as an RGBA PNG whose alpha channel is the mask's alpha
// (PIL: original.convert("RGBA").putalpha(mask.convert("RGBA").getchannel("A"))), with
// the original's text chunks (the workflow) carried over.
func applyMask(origData, maskData []byte, maxPixels int64) ([]byte, error) {
	orig, _, err := imagesize.Decode(origData, maxPixels)
	if err != nil {
		return nil, fmt.Errorf("server: original image: %w", err)
	}
	mask, _, err := imagesize.Decode(maskData, maxPixels)
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
