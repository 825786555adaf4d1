package builtin

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"testing"

	"github.com/forgeflow/forgeflow/nodes"
)

func TestRebatchImages(t *testing.T) {
	a, b := ramp(3, 2, 2, 3), filled(2, 2, 2, 3, 0.5)
	res := mustRun(t, "RebatchImages", nodes.Inputs{"images": []any{a, b}, "batch_size": []any{int64(2), int64(7)}})
	list := res.Outputs[0].([]any)
	if len(list) != 3 {
		t.Fatalf("%d batches, want 3 (5 images by 2)", len(list))
	}
	want := [][]*Image{{a, a}, {a, b}, {b}}
	idx := [][]int{{0, 1}, {2, 0}, {1}}
	for i, v := range list {
		got := v.(*Image)
		if got.Batch != len(want[i]) {
			t.Fatalf("batch %d holds %d images", i, got.Batch)
		}
		for j, src := range want[i] {
			checkPix(t, got.Frame(j), src.Frame(idx[i][j]), 0)
		}
	}
	_, err := run(t, Options{}, nil, "RebatchImages", nodes.Inputs{"images": []any{a, filled(1, 3, 2, 3, 0)}, "batch_size": []any{int64(4)}})
	wantErr(t, err, "cannot batch")
	_, err = run(t, Options{}, nil, "RebatchImages", nodes.Inputs{"images": []any{a}, "batch_size": []any{int64(0)}})
	wantErr(t, err, "batch_size")
}

// TestLoadImageOutput loads from the output folder through the annotated names the front
// end sends, as LoadImage's lookup resolves them.
func TestLoadImageOutput(t *testing.T) {
	opts, dirs := saveOpts(t)
	m := image.NewNRGBA(image.Rect(0, 0, 3, 2))
	for i := range m.Pix {
		m.Pix[i] = uint8(40 * (i % 4))
	}
	m.Set(0, 0, color.NRGBA{255, 0, 0, 255})
	var buf bytes.Buffer
	if err := png.Encode(&buf, m); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dirs.Output, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dirs.Output, "out.png"), buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := run(t, opts, nil, "LoadImageOutput", nodes.Inputs{"image": "out.png [output]"})
	if err != nil {
		t.Fatal(err)
	}
	im := res.Outputs[0].(*Image)
	if im.Width != 3 || im.Height != 2 || im.Pix[0] != 1 || im.Pix[1] != 0 {
		t.Errorf("loaded [%d,%d] starting %v", im.Width, im.Height, im.Pix[:3])
	}
	_, err = run(t, opts, nil, "LoadImageOutput", nodes.Inputs{"image": "out.png"}) // no annotation: the input folder
	wantErr(t, err, "out.png")
}
