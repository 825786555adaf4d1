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

// saver is the shared body of SaveImage and PreviewImage.
type saver struct {
	opts   Options
	schema graph.Schema
	// temp selects the temp folder, the "temp" result type and the random prefix suffix
	// of PreviewImage and MaskPreview.
	temp bool
	// level is the PNG compression: ComfyUI's compress_level 4 for SaveImage and
	// MaskPreview, 1 for PreviewImage.
	level png.CompressionLevel
	// input is the name of the IMAGE input, or of the MASK input (MaskPreview) when mask.
	input string
	mask  bool
}

// SaveImage is ComfyUI's SaveImage: PNG files in the output folder.
type SaveImage struct{ saver }

// PreviewImage is ComfyUI's PreviewImage: PNG files in the temp folder.
type PreviewImage struct{ saver }

var hiddenPromptInputs = []graph.Input{
	{Name: "prompt", Section: graph.Hidden, Type: "PROMPT", Plain: true},
	{Name: "extra_pnginfo", Section: graph.Hidden, Type: "EXTRA_PNGINFO", Plain: true},
}

func newSaveImage(opts Options) *SaveImage {
	return &SaveImage{saver{opts: opts, level: png.DefaultCompression, input: "images", schema: graph.Schema{
		Name: "SaveImage", DisplayName: "Save Image", Category: "image",
		Description: "Saves the input images to your ComfyUI output directory.",
		OutputNode:  true,
		Inputs: append([]graph.Input{
			widget("images", "IMAGE", map[string]any{"tooltip": "The images to save."}),
			widget("filename_prefix", graph.TypeString, map[string]any{"default": "ComfyUI",
				"tooltip": "The prefix for the file to save. This may include formatting information such as %date:yyyy-MM-dd% or %Empty Latent Image.width% to include values from nodes."}),
		}, hiddenPromptInputs...),
	}}}
}

func newPreviewImage(opts Options) *PreviewImage {
	return &PreviewImage{saver{opts: opts, temp: true, level: png.BestSpeed, input: "images", schema: graph.Schema{
		Name: "PreviewImage", DisplayName: "Preview Image", Category: "image",
		// PreviewImage inherits SaveImage's DESCRIPTION in ComfyUI.
		Description: "Saves the input images to your ComfyUI output directory.",
		OutputNode:  true,
		Inputs:      append([]graph.Input{socket("images", "IMAGE")}, hiddenPromptInputs...),
	}}}
}

// Schema implements nodes.Node.
func (s *saver) Schema() *graph.Schema { return &s.schema }

// previewAlphabet is the alphabet PreviewImage draws its five-letter suffix from; ComfyUI's
// literal has "p" twice and no "w", kept so names look the same.
const previewAlphabet = "abcdefghijklmnopqrstupvxyz"

// Run implements nodes.Node. Each image of the batch becomes
// "<prefix>_<counter:05>_.png" in the folder, with counters continuing after the
// highest one already there; the UI result lists them as ComfyUI's
// {"images": [{"filename", "subfolder", "type"}]}.
func (s *saver) Run(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
	im, err := s.images(in)
	if err != nil {
		return nodes.Result{}, err
	}
	prefix := "ComfyUI"
	if !s.temp {
		if prefix, err = in.String("filename_prefix"); err != nil {
			return nodes.Result{}, err
		}
	}
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
		return nodes.Result{}, fmt.Errorf("builtin: %s: no %s folder configured", s.schema.Name, kind)
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
		return nodes.Result{}, fmt.Errorf("builtin: %s: %w", s.schema.Name, err)
	}
	root, err := os.OpenRoot(folder)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: %s: %w", s.schema.Name, err)
	}
	defer root.Close()
	sp, err := prepareSave(root, prefix, im.Width, im.Height, now)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: %s: %w", s.schema.Name, err)
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
			return nodes.Result{}, fmt.Errorf("builtin: %s: %w", s.schema.Name, err)
		}
		stem := strings.ReplaceAll(sp.Filename, "%batch_num%", strconv.Itoa(b))
		file, err := writeNew(root, sp.Subfolder, stem, &counter, data)
		if err != nil {
			return nodes.Result{}, fmt.Errorf("builtin: %s: %w", s.schema.Name, err)
		}
		results = append(results, map[string]any{"filename": file, "subfolder": sp.Subfolder, "type": kind})
		counter++
	}
	return nodes.Result{UI: map[string]any{"images": results}}, nil
}

// images returns the IMAGE input, or the MASK input as a grey image for MaskPreview.
func (s *saver) images(in nodes.Inputs) (*Image, error) {
	if !s.mask {
		return imageInput(in, s.input)
	}
	m, err := maskInput(in, s.input)
	if err != nil {
		return nil, err
	}
	return maskImage(m)
}

// writeNew writes data to "<stem>_<counter:05>_.png" in sub, never replacing a file: where
// the name is taken (another prompt saving with the same prefix at the same time) the
// counter moves on. ComfyUI would overwrite; keeping both files loses nothing.
func writeNew(root *os.Root, sub, stem string, counter *int, data []byte) (string, error) {
	for tries := 0; tries < 10000; tries++ {
		file := fmt.Sprintf("%s_%05d_.png", stem, *counter)
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
	_ nodes.Node = (*SaveImage)(nil)
	_ nodes.Node = (*PreviewImage)(nil)
)
