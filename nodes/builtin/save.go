package builtin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/png"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// SaveImage and PreviewImage (nodes.py SaveImage.save_images, PreviewImage).

// saver is what SaveImage, PreviewImage and MaskPreview share: where and how they
// write PNG files.
type saver struct {
	opts  Options
	class string
	// temp selects the temp folder, the "temp" result type and the random prefix suffix
	// of PreviewImage and MaskPreview.
	temp bool
	// level is the PNG compression: ComfyUI's compress_level 4 for SaveImage and
	// MaskPreview, 1 for PreviewImage.
	level png.CompressionLevel
}

var hiddenPromptInputs = []graph.Input{
	{Name: "prompt", Section: graph.Hidden, Type: "PROMPT", Plain: true},
	{Name: "extra_pnginfo", Section: graph.Hidden, Type: "EXTRA_PNGINFO", Plain: true},
}

// SaveImage is ComfyUI's SaveImage: PNG files in the output folder.
type SaveImage struct {
	opts           Options
	Images         *Image `input:"images"`
	FilenamePrefix string `input:"filename_prefix"`
}

// Schema implements nodes.Typed.
func (*SaveImage) Schema() graph.Schema {
	return graph.Schema{
		Name: "SaveImage", DisplayName: "Save Image", Category: "image",
		Description: "Saves the input images to your ComfyUI output directory.",
		OutputNode:  true,
		Inputs: append([]graph.Input{
			{Name: "images", Type: "IMAGE", Tooltip: "The images to save."},
			{Name: "filename_prefix", Type: graph.TypeString, Default: "ComfyUI",
				Tooltip: "The prefix for the file to save. This may include formatting information such as %date:yyyy-MM-dd% or %Empty Latent Image.width% to include values from nodes."},
		}, hiddenPromptInputs...),
	}
}

// Run implements nodes.Typed.
func (n *SaveImage) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return saver{opts: n.opts, class: "SaveImage", level: png.DefaultCompression}.save(ctx, env, n.Images, n.FilenamePrefix)
}

// PreviewImage is ComfyUI's PreviewImage: PNG files in the temp folder.
type PreviewImage struct {
	opts   Options
	Images *Image `input:"images"`
}

// Schema implements nodes.Typed.
func (*PreviewImage) Schema() graph.Schema {
	return graph.Schema{
		Name: "PreviewImage", DisplayName: "Preview Image", Category: "image",
		// PreviewImage inherits SaveImage's DESCRIPTION in ComfyUI.
		Description: "Saves the input images to your ComfyUI output directory.",
		OutputNode:  true,
		Inputs:      append([]graph.Input{socket("images", "IMAGE")}, hiddenPromptInputs...),
	}
}

// Run implements nodes.Typed.
func (n *PreviewImage) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return saver{opts: n.opts, class: "PreviewImage", temp: true, level: png.BestSpeed}.save(ctx, env, n.Images, "ComfyUI")
}

// previewAlphabet is the alphabet PreviewImage draws its five-letter suffix from; ComfyUI's
// literal has "p" twice and no "w", kept so names look the same.
const previewAlphabet = "abcdefghijklmnopqrstupvxyz"

// save writes each image of the batch as "<prefix>_<counter:05>_.png" in the folder,
// with counters continuing after the highest one already there; the UI result lists
// them as ComfyUI's {"images": [{"filename", "subfolder", "type"}]}.
func (s saver) save(ctx context.Context, env *nodes.Env, im *Image, prefix string) (nodes.Result, error) {
	if env == nil {
		env = &nodes.Env{}
	}
	dirs := s.opts.dirs(env)
	folder, kind := dirs.Output, "output"
	if s.temp {
		folder, kind = dirs.Temp, "temp"
		var suffix [5]byte
		for i := range suffix {
			suffix[i] = previewAlphabet[rand.IntN(len(previewAlphabet))]
		}
		prefix += "_temp_" + string(suffix[:])
	}
	if folder == "" {
		return nodes.Result{}, fmt.Errorf("builtin: %s: no %s folder configured", s.class, kind)
	}
	if im.Batch == 0 {
		return nodes.Result{UI: map[string]any{"images": []any{}}}, nil
	}
	now := s.opts.now()
	prefix = frontendReplacements(prefix, env.Prompt, now)
	chunks, err := metadataChunks(env)
	if err != nil {
		return nodes.Result{}, err
	}
	if err := os.MkdirAll(folder, 0o755); err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: %s: %w", s.class, err)
	}
	root, err := os.OpenRoot(folder)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: %s: %w", s.class, err)
	}
	defer root.Close()
	sp, err := prepareSave(root, prefix, im.Width, im.Height, now)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: %s: %w", s.class, err)
	}
	enc := png.Encoder{CompressionLevel: s.level}
	results := make([]any, 0, im.Batch)
	counter := sp.Counter
	for b := 0; b < im.Batch; b++ {
		if err := ctx.Err(); err != nil {
			return nodes.Result{}, err
		}
		data, err := encodePNG(&enc, im, b, chunks)
		if err != nil {
			return nodes.Result{}, fmt.Errorf("builtin: %s: %w", s.class, err)
		}
		stem := strings.ReplaceAll(sp.Filename, "%batch_num%", strconv.Itoa(b))
		file, err := writeNew(root, sp.Subfolder, stem, ".png", &counter, data)
		if err != nil {
			return nodes.Result{}, fmt.Errorf("builtin: %s: %w", s.class, err)
		}
		results = append(results, map[string]any{"filename": file, "subfolder": sp.Subfolder, "type": kind})
		counter++
	}
	return nodes.Result{UI: map[string]any{"images": results}}, nil
}

// writeNew writes data to "<stem>_<counter:05>_<ext>" in sub, never replacing a file: where
// the name is taken (another prompt saving with the same prefix at the same time) the
// counter moves on. ComfyUI would overwrite; keeping both files loses nothing.
func writeNew(root *os.Root, sub, stem, ext string, counter *int, data []byte) (string, error) {
	for tries := 0; tries < 10000; tries++ {
		file := fmt.Sprintf("%s_%05d_%s", stem, *counter, ext)
		if strings.ContainsAny(file, "/"+string(filepath.Separator)) {
			return "", fmt.Errorf("file name %q: %w", file, errOutsideFolder)
		}
		name := filepath.FromSlash(path.Join(sub, file))
		f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, fs.ErrExist) {
			*counter++
			continue
		}
		if err != nil {
			return "", err
		}
		_, err = f.Write(data)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			_ = root.Remove(name) // leave no truncated image behind
			return "", err
		}
		return file, nil
	}
	return "", fmt.Errorf("no free file name for %q", stem)
}

// metadataChunks returns the PNG text chunks ComfyUI writes unless metadata is disabled:
// "prompt" with the API prompt, then one chunk per extra_pnginfo key ("workflow"), each
// the value's json.dumps. Keys are written in sorted order.
func metadataChunks(env *nodes.Env) ([]graph.TextChunk, error) {
	if env.DisableMetadata {
		return nil, nil
	}
	var chunks []graph.TextChunk
	if env.Prompt != nil {
		text, err := pyJSONDumps(env.Prompt)
		if err != nil {
			return nil, err
		}
		chunks = append(chunks, graph.TextChunk{Keyword: "prompt", Text: text})
	}
	keys := make([]string, 0, len(env.ExtraPNGInfo))
	for k := range env.ExtraPNGInfo {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		text, err := pyJSONDumps(env.ExtraPNGInfo[k])
		if err != nil {
			return nil, err
		}
		chunks = append(chunks, graph.TextChunk{Keyword: k, Text: text})
	}
	return chunks, nil
}

// encodePNG encodes batch item b of im, with the text chunks inserted after IHDR.
func encodePNG(enc *png.Encoder, im *Image, b int, chunks []graph.TextChunk) ([]byte, error) {
	img, err := toGoImage(im, b)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := enc.Encode(&buf, img); err != nil {
		return nil, err
	}
	if len(chunks) == 0 {
		return buf.Bytes(), nil
	}
	return graph.InsertPNGText(buf.Bytes(), chunks)
}

// to8 is ComfyUI's conversion of a pixel value to a byte:
// np.clip(255. * v, 0, 255).astype(np.uint8), which truncates (NaN gives 0).
func to8(v float32) uint8 {
	x := 255 * v
	if !(x > 0) {
		return 0
	}
	if x >= 255 {
		return 255
	}
	return uint8(x)
}

// toGoImage converts batch item b to an 8-bit image as PIL's Image.fromarray does for
// 1 (L), 2 (LA), 3 (RGB) and 4 (RGBA) channels.
func toGoImage(im *Image, b int) (image.Image, error) {
	rect := image.Rect(0, 0, im.Width, im.Height)
	src := im.Frame(b)
	switch im.Channels {
	case 1:
		g := image.NewGray(rect)
		for i, v := range src {
			g.Pix[i] = to8(v)
		}
		return g, nil
	case 2, 3, 4:
		c := im.Channels
		out := image.NewNRGBA(rect)
		for p := 0; p < im.Width*im.Height; p++ {
			px := src[p*c : (p+1)*c]
			d := out.Pix[4*p : 4*p+4]
			switch c {
			case 2:
				g := to8(px[0])
				d[0], d[1], d[2], d[3] = g, g, g, to8(px[1])
			case 3:
				d[0], d[1], d[2], d[3] = to8(px[0]), to8(px[1]), to8(px[2]), 255
			case 4:
				d[0], d[1], d[2], d[3] = to8(px[0]), to8(px[1]), to8(px[2]), to8(px[3])
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("cannot save an image with %d channels", im.Channels)
}

// Interface guards.
var (
	_ nodes.Typed = (*SaveImage)(nil)
	_ nodes.Typed = (*PreviewImage)(nil)
)
