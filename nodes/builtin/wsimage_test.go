package builtin

import (
	"bytes"
	"image"
	"image/png"
	"os"
	"testing"
	"time"

	"github.com/forgeflow/forgeflow/nodes"
)

// TestSaveImageWebsocket checks that each image of the batch goes out as a PNG preview
// with the 8-bit pixels SaveImage would write, after a progress event counting from 0
// (ComfyUI's pbar.update_absolute(step, n, preview)), and that nothing is written.
func TestSaveImageWebsocket(t *testing.T) {
	im := ramp(3, 2, 3, 3)
	im.Frame(2)[0] = 1.5 // clipped to 255 as numpy does
	type event struct {
		progress [2]int
		preview  *nodes.PreviewImage
	}
	var events []event
	dir := t.TempDir()
	env := &nodes.Env{
		Dirs:     nodes.Dirs{Output: dir, Temp: dir},
		Progress: func(v, m int) { events = append(events, event{progress: [2]int{v, m}}) },
		Preview:  func(p nodes.PreviewImage) { events = append(events, event{preview: &p}) },
	}
	res, err := run(t, Options{}, env, "SaveImageWebsocket", nodes.Inputs{"images": im})
	if err != nil {
		t.Fatal(err)
	}
	if res.UI != nil {
		t.Errorf("UI output %v, want none", res.UI)
	}
	if len(events) != 6 {
		t.Fatalf("%d events, want a progress and a preview per image (6)", len(events))
	}
	for b := 0; b < 3; b++ {
		if p := events[2*b].progress; p != [2]int{b, 3} {
			t.Errorf("image %d: progress %v, want [%d 3]", b, p, b)
		}
		pv := events[2*b+1].preview
		if pv == nil || pv.Format != "PNG" {
			t.Fatalf("image %d: event %+v, want a PNG preview", b, events[2*b+1])
		}
		dec, err := png.Decode(bytes.NewReader(pv.Data))
		if err != nil {
			t.Fatal(err)
		}
		rgba, ok := dec.(*image.RGBA)
		if !ok {
			t.Fatalf("decoded %T, want an RGB PNG", dec)
		}
		src := im.Frame(b)
		for i := 0; i < 6; i++ {
			for c := 0; c < 3; c++ {
				if got, want := rgba.Pix[4*i+c], to8(src[3*i+c]); got != want {
					t.Fatalf("image %d pixel %d channel %d = %d, want %d", b, i, c, got, want)
				}
			}
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("wrote %d files", len(entries))
	}
}

// TestSaveImageWebsocketAlwaysRuns: its change hook never repeats a value (ComfyUI's
// IS_CHANGED returns time.time()), so the executor's cache never answers for it.
func TestSaveImageWebsocketAlwaysRuns(t *testing.T) {
	r := newTestRegistry(t, Options{})
	n, err := r.Lookup("SaveImageWebsocket")
	if err != nil {
		t.Fatal(err)
	}
	c, ok := n.(interface {
		IsChanged(*nodes.Env, nodes.Inputs) (string, error)
	})
	if !ok {
		t.Fatalf("%T has no change hook", n)
	}
	in := nodes.Inputs{"images": filled(1, 1, 1, 3, 0)}
	a, err := c.IsChanged(&nodes.Env{}, in)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Microsecond)
	if b, _ := c.IsChanged(&nodes.Env{}, in); a == b {
		t.Fatalf("IsChanged gave %q twice", a)
	}
}
