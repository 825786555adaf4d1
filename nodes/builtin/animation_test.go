package builtin

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/internal/webpmux"
	"github.com/forgeflow/forgeflow/nodes"
)

// pillowEXIF is what Pillow 11.1's Exif.tobytes gives for ComfyUI's SaveAnimatedWEBP
// metadata with this prompt and extra_pnginfo {"a": "x", "k": 1, "workflow": {"n": [1]}}
// (tags 0x010f, 0x010e, 0x010d in that key order), printed by Pillow in the refpeer
// chroot: big-endian, tags sorted, "k:1" stored in its entry, the rest after the IFD.
const pillowEXIF = "Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x04\x01\r\x00\x02\x00\x00\x00\x14\x00\x00\x00>\x01\x0e\x00\x02\x00\x00\x00\x04k:1\x00\x01\x0f\x00\x02\x00\x00\x00\x06\x00\x00\x00R\x01\x10\x00\x02\x00\x00\x00I\x00\x00\x00X\x00\x00\x00\x00" +
	`workflow:{"n": [1]}` + "\x00" + `a:"x"` + "\x00" + `prompt:{"3": {"class_type": "SaveAnimatedWEBP", "inputs": {"fps": 6.0}}}` + "\x00\x00"

func animationEnv(t *testing.T) *nodes.Env {
	t.Helper()
	var prompt graph.Prompt
	dec := json.NewDecoder(strings.NewReader(`{"3": {"class_type": "SaveAnimatedWEBP", "inputs": {"fps": 6.0}}}`))
	dec.UseNumber()
	if err := dec.Decode(&prompt); err != nil {
		t.Fatal(err)
	}
	return &nodes.Env{Prompt: prompt, ExtraPNGInfo: map[string]any{"workflow": map[string]any{"n": []any{1}}, "a": "x", "k": 1}}
}

// riffChunks lists the top-level chunks of a RIFF WEBP file.
func riffChunks(t *testing.T, data []byte) (ids []string, bodies [][]byte) {
	t.Helper()
	if len(data) < 12 || string(data[:4]) != "RIFF" || string(data[8:12]) != "WEBP" || int(binary.LittleEndian.Uint32(data[4:])) != len(data)-8 {
		t.Fatalf("not a RIFF WEBP file of its size")
	}
	for p := 12; p < len(data); {
		n := int(binary.LittleEndian.Uint32(data[p+4:]))
		ids, bodies = append(ids, string(data[p:p+4])), append(bodies, data[p+8:p+8+n])
		p += 8 + n + n%2
	}
	return ids, bodies
}

func TestSaveAnimatedWEBP(t *testing.T) {
	for _, tc := range []struct {
		name     string
		im       *Image
		in       nodes.Inputs
		disable  bool
		chunks   string
		exif     string
		animated bool
		minPSNR  float64 // 0: lossless, exact
	}{
		{"lossless", ramp(3, 12, 17, 3), nodes.Inputs{"lossless": true, "quality": 80, "method": "default", "fps": 6.0},
			false, "VP8X ANIM ANMF ANMF ANMF EXIF", pillowEXIF, true, 0},
		{"lossy-rgba", ramp(2, 16, 16, 4), nodes.Inputs{"lossless": false, "quality": 90, "method": "slowest", "fps": 24.0},
			false, "VP8X ANIM ANMF ANMF EXIF", pillowEXIF, true, 30},
		{"one image is a still", ramp(1, 9, 7, 3), nodes.Inputs{"lossless": true, "quality": 0, "method": "fastest", "fps": 6.0},
			false, "VP8X VP8L EXIF", pillowEXIF[6:], false, 0},
		{"metadata disabled", ramp(2, 9, 7, 3), nodes.Inputs{"lossless": true, "quality": 100, "method": "default", "fps": 0.5},
			true, "VP8X ANIM ANMF ANMF EXIF", "Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x00\x00\x00\x00\x00", true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts, dirs := saveOpts(t)
			// The counter continues after any file of the prefix, whatever its type.
			if err := os.MkdirAll(filepath.Join(dirs.Output, "anim"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dirs.Output, "anim", "clip_00004_.png"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			env := animationEnv(t)
			env.DisableMetadata = tc.disable
			in := nodes.Inputs{"images": tc.im, "filename_prefix": "anim/clip"}
			for k, v := range tc.in {
				in[k] = v
			}
			res, err := run(t, opts, env, "SaveAnimatedWEBP", in)
			if err != nil {
				t.Fatal(err)
			}
			files := uiImages(t, res)
			if len(files) != 1 || files[0]["filename"] != "clip_00005_.webp" || files[0]["subfolder"] != "anim" || files[0]["type"] != "output" {
				t.Fatalf("UI images %v", files)
			}
			if a := res.UI["animated"].([]any); len(a) != 1 || a[0] != tc.animated {
				t.Errorf("UI animated %v, want %v", a, tc.animated)
			}
			data, err := os.ReadFile(filepath.Join(dirs.Output, "anim", "clip_00005_.webp"))
			if err != nil {
				t.Fatal(err)
			}
			ids, bodies := riffChunks(t, data)
			if got := strings.Join(ids, " "); got != tc.chunks {
				t.Fatalf("chunks %q, want %q", got, tc.chunks)
			}
			if got := string(bodies[len(bodies)-1]); got != tc.exif {
				t.Errorf("EXIF %q\nwant %q", got, tc.exif)
			}
			ms := int(1000 / tc.in["fps"].(float64))
			for i, id := range ids {
				if id == "ANMF" {
					b := bodies[i]
					if d := int(b[12]) | int(b[13])<<8 | int(b[14])<<16; d != ms {
						t.Errorf("ANMF %d lasts %d ms, want %d", i, d, ms)
					}
				}
			}
			frames, _, err := webpmux.Decode(data, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			if len(frames) != tc.im.Batch {
				t.Fatalf("%d frames, want %d", len(frames), tc.im.Batch)
			}
			for b, f := range frames {
				src := tc.im.Frame(b)
				var se float64
				for p := 0; p < tc.im.Width*tc.im.Height; p++ {
					for c := 0; c < 4; c++ {
						want := uint8(255)
						if c < tc.im.Channels {
							want = to8(src[p*tc.im.Channels+c])
						}
						d := float64(f.Pix[4*p+c]) - float64(want)
						if tc.minPSNR == 0 || c == 3 {
							if d != 0 {
								t.Fatalf("frame %d pixel %d channel %d: %d, want %d", b, p, c, f.Pix[4*p+c], want)
							}
						}
						se += d * d
					}
				}
				if tc.minPSNR > 0 {
					if p := 10 * math.Log10(255*255*float64(4*tc.im.Width*tc.im.Height)/se); p < tc.minPSNR {
						t.Errorf("frame %d: %.1f dB < %.0f", b, p, tc.minPSNR)
					}
				}
			}
			// LoadImage reads the file back as a batch.
			loadOpts := Options{Dirs: nodes.Dirs{Input: filepath.Join(dirs.Output, "anim")}}
			loaded, err := run(t, loadOpts, nil, "LoadImage", nodes.Inputs{"image": "clip_00005_.webp"})
			if err != nil {
				t.Fatal(err)
			}
			if got := loaded.Outputs[0].(*Image); got.Batch != tc.im.Batch || got.Width != tc.im.Width || got.Height != tc.im.Height {
				t.Errorf("LoadImage gave [%d,%d,%d,%d]", got.Batch, got.Height, got.Width, got.Channels)
			}
		})
	}
}

func TestSaveAnimatedPNG(t *testing.T) {
	opts, dirs := saveOpts(t)
	env := animationEnv(t)
	im := ramp(4, 6, 5, 4)
	copy(im.Frame(2), im.Frame(1)) // frames 1 and 2 equal: Pillow merges them
	res, err := run(t, opts, env, "SaveAnimatedPNG", nodes.Inputs{"images": im, "filename_prefix": "apng", "fps": 8.0, "compress_level": 9})
	if err != nil {
		t.Fatal(err)
	}
	if names := filenames(t, res); len(names) != 1 || names[0] != "apng_00001_.png" {
		t.Fatalf("files %v", names)
	}
	data, err := os.ReadFile(filepath.Join(dirs.Output, "apng_00001_.png"))
	if err != nil {
		t.Fatal(err)
	}
	type chunk struct {
		typ  string
		data []byte
	}
	var cs []chunk
	for p := 8; p < len(data); {
		n := int(binary.BigEndian.Uint32(data[p:]))
		cs = append(cs, chunk{string(data[p+4 : p+8]), data[p+8 : p+8+n]})
		p += 12 + n
	}
	var types []string
	for _, c := range cs {
		types = append(types, c.typ)
	}
	if got := strings.Join(types, " "); got != "IHDR acTL fcTL IDAT fcTL fdAT fcTL fdAT comf comf comf comf IEND" {
		t.Fatalf("chunks %s", got)
	}
	if n := binary.BigEndian.Uint32(cs[1].data); n != 3 {
		t.Errorf("acTL says %d frames, want 3 (two equal frames merged)", n)
	}
	for i, want := range map[int]uint16{2: 125, 4: 250, 6: 125} {
		fc := cs[i].data
		if num, den := binary.BigEndian.Uint16(fc[20:]), binary.BigEndian.Uint16(fc[22:]); num != want || den != 1000 {
			t.Errorf("fcTL %d delay %d/%d, want %d/1000", i, num, den, want)
		}
	}
	if k, v, _ := strings.Cut(string(cs[8].data), "\x00"); k != "prompt" || v != `{"3": {"class_type": "SaveAnimatedWEBP", "inputs": {"fps": 6.0}}}` {
		t.Errorf("first comf chunk %q", cs[8].data)
	}
	frames, err := decodeAPNG(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(frames) != 3 {
		t.Fatalf("%d frames decoded", len(frames))
	}
	for i, b := range []int{0, 1, 3} {
		src := im.Frame(b)
		for p := 0; p < 30; p++ {
			for c := 0; c < 3; c++ {
				if got, want := frames[i].RGB[3*p+c], to8(src[4*p+c]); got != want {
					t.Fatalf("frame %d pixel %d: %d, want %d", i, p, got, want)
				}
			}
			if got, want := frames[i].Alpha[p], to8(src[4*p+3]); got != want {
				t.Fatalf("frame %d alpha %d: %d, want %d", i, p, got, want)
			}
		}
	}
	// One image is a plain PNG with its metadata, at every compression level.
	for _, level := range []int{0, 4} {
		res, err = run(t, opts, env, "SaveAnimatedPNG", nodes.Inputs{"images": ramp(1, 3, 4, 3), "filename_prefix": "one", "fps": 6.0, "compress_level": level})
		if err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(filepath.Join(dirs.Output, filenames(t, res)[0]))
		if bytes.Contains(data, []byte("acTL")) || !bytes.Contains(data, []byte("comf")) {
			t.Errorf("level %d: a one-image APNG has acTL or lacks comf", level)
		}
		img, err := png.Decode(bytes.NewReader(data))
		if err != nil || img.Bounds().Dx() != 4 {
			t.Fatalf("level %d: %v", level, err)
		}
	}
	if a := res.UI["animated"].([]any); a[0] != true {
		t.Errorf("UI animated %v", a)
	}
}

func TestAPNGDelay(t *testing.T) {
	for _, tc := range []struct {
		ms       int
		num, den uint16
	}{{166, 166, 1000}, {65535, 65535, 1000}, {66666, 33333, 500}, {100000, 100, 1}} {
		num, den, err := apngDelay(tc.ms)
		if err != nil || num != tc.num || den != tc.den {
			t.Errorf("apngDelay(%d) = %d/%d, %v; want %d/%d", tc.ms, num, den, err, tc.num, tc.den)
		}
	}
}
