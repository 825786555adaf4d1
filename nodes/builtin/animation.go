package builtin

import (
	"context"
	"encoding/binary"
	"fmt"
	"image"
	"os"
	"sort"
	"strings"

	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/internal/webpmux"
	"github.com/forgeflow/forgeflow/nodes"
)

// SaveAnimatedWEBP and SaveAnimatedPNG (comfy_extras/nodes_images.py): the whole batch as
// one animated file in the output folder, with the workflow inside as ComfyUI writes it
// through Pillow.

// webpMethods maps SaveAnimatedWEBP's method choices to libwebp's method.
var webpMethods = map[string]int{"default": 4, "fastest": 0, "slowest": 6}

// fpsInput is the animated savers' fps widget.
func fpsInput() graph.Input {
	return graph.Input{Name: "fps", Type: graph.TypeFloat, Default: 6.0, Min: graph.Num(0.01), Max: graph.Num(1000.0), Step: graph.Num(0.01)}
}

// frameMS is the frame duration Pillow is given: int(1000.0 / fps), truncated.
func frameMS(fps float64) int { return int(1000.0 / fps) }

// SaveAnimatedWEBP writes the batch as an animated WebP.
type SaveAnimatedWEBP struct {
	opts           Options
	Images         *Image  `input:"images"`
	FilenamePrefix string  `input:"filename_prefix"`
	FPS            float64 `input:"fps"`
	Lossless       bool    `input:"lossless"`
	Quality        int     `input:"quality"`
	Method         string  `input:"method"`
}

// Schema implements nodes.Typed.
func (*SaveAnimatedWEBP) Schema() graph.Schema {
	return graph.Schema{
		Name: "SaveAnimatedWEBP", DisplayName: "SaveAnimatedWEBP", Category: "image/animation", PythonModule: imagesModule, OutputNode: true,
		Inputs: append([]graph.Input{
			socket("images", "IMAGE"),
			{Name: "filename_prefix", Type: graph.TypeString, Default: "ComfyUI"},
			fpsInput(),
			{Name: "lossless", Type: graph.TypeBoolean, Default: true},
			{Name: "quality", Type: graph.TypeInt, Default: 80, Min: graph.Num(0), Max: graph.Num(100)},
			combo("method", "default", "fastest", "slowest"),
		}, hiddenPromptInputs...),
	}
}

// Run implements nodes.Typed (SaveAnimatedWEBP.save_images): Pillow's save_all with
// duration int(1000/fps), lossless, quality, method, and exif holding "prompt:<json>"
// in tag 0x0110 (Model) and "<key>:<json>" for each extra_pnginfo key from 0x010f
// (Make) down. A batch of one is a still WebP, as Pillow writes it (its EXIF without
// the "Exif\0\0" header); the UI result says "animated" for more than one image.
func (n *SaveAnimatedWEBP) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	if env == nil {
		env = &nodes.Env{}
	}
	im := n.Images
	if im.Batch == 0 {
		return nodes.Result{UI: map[string]any{"images": []any{}, "animated": []any{false}}}, nil
	}
	exif, err := comfyEXIF(env)
	if err != nil {
		return nodes.Result{}, err
	}
	o := webpmux.Options{Lossless: n.Lossless, Quality: n.Quality, Method: webpMethods[n.Method]}
	frames, err := goFrames(ctx, im)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: SaveAnimatedWEBP: %w", err)
	}
	var data []byte
	if len(frames) == 1 {
		data, err = webpmux.Encode(frames[0], o, exif[len(exifHeader):])
	} else {
		anim := make([]webpmux.Frame, len(frames))
		for i, f := range frames {
			anim[i] = webpmux.Frame{Image: f, DurationMS: frameMS(n.FPS)}
		}
		data, err = webpmux.EncodeAnimation(anim, o, exif)
	}
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: SaveAnimatedWEBP: %w", err)
	}
	file, err := saveOne(n.opts, env, "SaveAnimatedWEBP", im, n.FilenamePrefix, ".webp", data)
	if err != nil {
		return nodes.Result{}, err
	}
	return nodes.Result{UI: map[string]any{"images": []any{file}, "animated": []any{im.Batch != 1}}}, nil
}

// SaveAnimatedPNG writes the batch as an APNG.
type SaveAnimatedPNG struct {
	opts           Options
	Images         *Image  `input:"images"`
	FilenamePrefix string  `input:"filename_prefix"`
	FPS            float64 `input:"fps"`
	CompressLevel  int     `input:"compress_level"`
}

// Schema implements nodes.Typed.
func (*SaveAnimatedPNG) Schema() graph.Schema {
	return graph.Schema{
		Name: "SaveAnimatedPNG", DisplayName: "SaveAnimatedPNG", Category: "image/animation", PythonModule: imagesModule, OutputNode: true,
		Inputs: append([]graph.Input{
			socket("images", "IMAGE"),
			{Name: "filename_prefix", Type: graph.TypeString, Default: "ComfyUI"},
			fpsInput(),
			{Name: "compress_level", Type: graph.TypeInt, Default: 4, Min: graph.Num(0), Max: graph.Num(9)},
		}, hiddenPromptInputs...),
	}
}

// Run implements nodes.Typed (SaveAnimatedPNG.save_images): Pillow's APNG writer with
// duration int(1000/fps), zlib at compress_level, and a private "comf" chunk after the
// image data for the prompt and each extra_pnginfo key ("<key>\0<json>").
func (n *SaveAnimatedPNG) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	if env == nil {
		env = &nodes.Env{}
	}
	im := n.Images
	if im.Batch == 0 {
		return nodes.Result{UI: map[string]any{"images": []any{}, "animated": []any{true}}}, nil
	}
	chunks, err := metadataChunks(env)
	if err != nil {
		return nodes.Result{}, err
	}
	comf := make([][]byte, len(chunks))
	for i, c := range chunks {
		comf[i] = append(append([]byte(c.Keyword), 0), c.Text...)
	}
	data, err := encodeAPNG(ctx, im, frameMS(n.FPS), n.CompressLevel, comf)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: SaveAnimatedPNG: %w", err)
	}
	file, err := saveOne(n.opts, env, "SaveAnimatedPNG", im, n.FilenamePrefix, ".png", data)
	if err != nil {
		return nodes.Result{}, err
	}
	return nodes.Result{UI: map[string]any{"images": []any{file}, "animated": []any{true}}}, nil
}

// goFrames converts each image of the batch to 8 bits as Image.fromarray does.
func goFrames(ctx context.Context, im *Image) ([]image.Image, error) {
	out := make([]image.Image, im.Batch)
	for b := range out {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		f, err := toGoImage(im, b)
		if err != nil {
			return nil, err
		}
		out[b] = f
	}
	return out, nil
}

// saveOne writes data as "<prefix>_<counter:05>_<ext>" in the output folder (one file for
// the batch) and returns ComfyUI's {"filename", "subfolder", "type"} entry.
func saveOne(opts Options, env *nodes.Env, class string, im *Image, prefix, ext string, data []byte) (map[string]any, error) {
	folder := opts.dirs(env).Output
	if folder == "" {
		return nil, fmt.Errorf("builtin: %s: no output folder configured", class)
	}
	now := opts.now()
	prefix = frontendReplacements(prefix, env.Prompt, now)
	if err := os.MkdirAll(folder, 0o755); err != nil {
		return nil, fmt.Errorf("builtin: %s: %w", class, err)
	}
	root, err := os.OpenRoot(folder)
	if err != nil {
		return nil, fmt.Errorf("builtin: %s: %w", class, err)
	}
	defer root.Close()
	sp, err := prepareSave(root, prefix, im.Width, im.Height, now)
	if err != nil {
		return nil, fmt.Errorf("builtin: %s: %w", class, err)
	}
	counter := sp.Counter
	stem := strings.ReplaceAll(sp.Filename, "%batch_num%", "0")
	file, err := writeNew(root, sp.Subfolder, stem, ext, &counter, data)
	if err != nil {
		return nil, fmt.Errorf("builtin: %s: %w", class, err)
	}
	return map[string]any{"filename": file, "subfolder": sp.Subfolder, "type": "output"}, nil
}

// exifHeader starts the EXIF block Pillow's Exif.tobytes returns.
const exifHeader = "Exif\x00\x00"

// comfyEXIF is SaveAnimatedWEBP's metadata as Pillow serialises it (Exif.tobytes): the
// "Exif\0\0" header, a big-endian TIFF header and one IFD of ASCII entries in tag
// order, each value NUL-terminated and stored after the IFD, padded to an even length.
// With metadata disabled the IFD is empty, as ComfyUI still passes the image's (empty)
// EXIF.
func comfyEXIF(env *nodes.Env) ([]byte, error) {
	tags := map[uint16]string{}
	if !env.DisableMetadata {
		if env.Prompt != nil {
			text, err := pyJSONDumps(env.Prompt)
			if err != nil {
				return nil, err
			}
			tags[0x0110] = "prompt:" + text
		}
		keys := make([]string, 0, len(env.ExtraPNGInfo))
		for k := range env.ExtraPNGInfo {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for i, k := range keys {
			if i > 0x010f {
				break
			}
			text, err := pyJSONDumps(env.ExtraPNGInfo[k])
			if err != nil {
				return nil, err
			}
			tags[uint16(0x010f-i)] = k + ":" + text
		}
	}
	ids := make([]int, 0, len(tags))
	for t := range tags {
		ids = append(ids, int(t))
	}
	sort.Ints(ids)
	be := binary.BigEndian
	ifd := be.AppendUint16(nil, uint16(len(ids)))
	var values []byte
	at := 8 + 2 + 12*len(ids) + 4 // where values start, from the TIFF header
	for _, id := range ids {
		v := append([]byte(asciiReplace(tags[uint16(id)])), 0)
		ifd = be.AppendUint16(ifd, uint16(id))
		ifd = be.AppendUint16(ifd, 2) // ASCII
		ifd = be.AppendUint32(ifd, uint32(len(v)))
		if len(v) <= 4 {
			inline := make([]byte, 4)
			copy(inline, v)
			ifd = append(ifd, inline...)
			continue
		}
		ifd = be.AppendUint32(ifd, uint32(at+len(values)))
		values = append(values, v...)
		if len(v)%2 == 1 {
			values = append(values, 0)
		}
	}
	ifd = append(ifd, 0, 0, 0, 0) // no next IFD
	out := append([]byte(exifHeader+"MM\x00\x2a\x00\x00\x00\x08"), ifd...)
	return append(out, values...), nil
}

// asciiReplace is str.encode("ascii", "replace"): json.dumps escapes non-ASCII already,
// so only an extra_pnginfo key could hold any.
func asciiReplace(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r < 0x80 {
			b.WriteRune(r)
		} else {
			b.WriteByte('?')
		}
	}
	return b.String()
}

var (
	_ nodes.Typed = (*SaveAnimatedWEBP)(nil)
	_ nodes.Typed = (*SaveAnimatedPNG)(nil)
)
