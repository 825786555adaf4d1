package sd

import (
	"errors"
	"fmt"

	"github.com/forgeflow/forgeflow/diffusion/gligen"
	"github.com/forgeflow/forgeflow/diffusion/unet"
	"github.com/forgeflow/forgeflow/gpu"
)

// GLIGENBoxes is a conditioning entry's GLIGEN grounding (ComfyUI's
// cond["gligen"] = ("position", model, boxes)): the model of the last
// GLIGENTextBoxApply and every box applied so far. Boxes is shared between copies:
// append to a copy, never in place.
type GLIGENBoxes struct {
	Model *gligen.Model
	Boxes []gligen.Box
}

// AddGLIGENBox is GLIGENTextBoxApply on one entry: box joins the entry's boxes and m
// becomes its GLIGEN model.
func (c Cond) AddGLIGENBox(m *gligen.Model, box gligen.Box) Cond {
	var prev []gligen.Box
	if c.GLIGEN != nil {
		prev = c.GLIGEN.Boxes
	}
	boxes := append(append(make([]gligen.Box, 0, len(prev)+1), prev...), box)
	c.GLIGEN = &GLIGENBoxes{Model: m, Boxes: boxes}
	return c
}

// checkGLIGEN validates an entry's grounding for model m at prepare time.
func checkGLIGEN(m *Model, g *GLIGENBoxes) error {
	if g.Model == nil {
		return errors.New("its GLIGEN grounding has no model")
	}
	if m.UNet == nil {
		return errors.New("it carries GLIGEN text boxes, which only UNet models (SD1.x/SD2.x) take")
	}
	if len(g.Boxes) > gligen.MaxObjects {
		return fmt.Errorf("%d GLIGEN text boxes, at most %d", len(g.Boxes), gligen.MaxObjects)
	}
	for i, b := range g.Boxes {
		if len(b.Pooled) != g.Model.KeyDim {
			return fmt.Errorf("GLIGEN box %d: a %d-wide text embedding, the GLIGEN model takes %d", i, len(b.Pooled), g.Model.KeyDim)
		}
	}
	return nil
}

// shareGLIGEN gives the other lists the positive list's grounding as process_conds'
// apply_empty_x_to_equal_area(positive, …, 'gligen') does: unless a list already has a
// grounded entry without an area, its entries without an area and without grounding
// take the positive entries' groundings in turn (the last one wins where there are
// more groundings than entries).
func shareGLIGEN(lists [][]modelCond) {
	if len(lists) == 0 {
		return
	}
	var from []*GLIGENBoxes
	for _, c := range lists[0] {
		if c.area == nil && c.gligen != nil {
			from = append(from, c.gligen)
		}
	}
	if len(from) == 0 {
		return
	}
	for _, list := range lists[1:] {
		var plain []int
		grounded := false
		for i, c := range list {
			if c.area != nil {
				continue
			}
			if c.gligen != nil {
				grounded = true
			} else {
				plain = append(plain, i)
			}
		}
		if grounded || len(plain) == 0 {
			continue
		}
		for x, g := range from {
			list[plain[x%len(plain)]].gligen = g
		}
	}
}

// gligenHook returns the middle patch of a network call over one grounded entry: the
// entry's grounding tokens for its region (computed once per run and region size) go
// through the fuser of each spatial transformer, indexed by transformer_index.
func (d *denoiser) gligenHook(e *activeEntry) (func(rt *gpu.Runtime, at unet.Site, x *gpu.Tensor) (*gpu.Tensor, error), error) {
	g := e.c.gligen
	n := d.shape[0]
	key := [3]int{n, e.ah, e.aw}
	if e.c.gligenObjs == nil || e.c.gligenKey != key {
		rt := d.g.Model.Runtime
		t, err := g.Model.Objects(rt, g.Boxes, e.ah, e.aw, n)
		if err != nil {
			return nil, err
		}
		v, err := t.Float32()
		t.Release()
		if err != nil {
			return nil, err
		}
		e.c.gligenObjs, e.c.gligenKey = v, key
	}
	objs := e.c.gligenObjs
	return func(rt *gpu.Runtime, at unet.Site, x *gpu.Tensor) (*gpu.Tensor, error) {
		if at.Transformer >= len(g.Model.Fusers) {
			return nil, fmt.Errorf("gligen: spatial transformer %d has no fuser (the GLIGEN model has %d)", at.Transformer, len(g.Model.Fusers))
		}
		if x.Dim(0) != n {
			return nil, fmt.Errorf("gligen: %d image batches for %d grounding batches", x.Dim(0), n)
		}
		o, err := rt.FromFloat32(objs, n, gligen.MaxObjects, g.Model.KeyDim)
		if err != nil {
			return nil, err
		}
		defer o.Release()
		return g.Model.Fusers[at.Transformer].Forward(rt, x, o)
	}, nil
}
