package sd

import (
	"context"
	"fmt"
)

// LatentOperation is a LATENT_OPERATION value (comfy_extras/nodes_latent.py): a function
// from a latent batch to one of the same shape (LatentOperationSharpen,
// LatentOperationTonemapReinhard). Apply must not write into data.
type LatentOperation interface {
	Apply(ctx context.Context, data []float32, shape [4]int) ([]float32, error)
}

// LatentOperationCFG is LatentApplyOperationCFG's sampler_pre_cfg_function: with a cond
// and an uncond prediction, the guidance difference goes through Op and the uncond is
// added back (Op(cond − uncond) + uncond); with any other number of predictions Op
// rewrites the cond alone. ComfyUI counts an uncond skipped by the cfg-1 shortcut as a
// zero prediction, so that case still takes the two-prediction path.
type LatentOperationCFG struct {
	Op LatentOperation
}

func (p LatentOperationCFG) preCFG(ctx context.Context, s *preCFGStep) ([][]float32, error) {
	res, err := applyLatentOperationCFG(ctx, p.Op, s.d.shape, s.outs)
	if err != nil {
		return nil, fmt.Errorf("sd: LatentApplyOperationCFG: %w", err)
	}
	return res, nil
}

// applyLatentOperationCFG is the pre-CFG function on predictions of the given shape.
func applyLatentOperationCFG(ctx context.Context, op LatentOperation, shape [4]int, outs [][]float32) ([][]float32, error) {
	if len(outs) == 0 || outs[0] == nil {
		return outs, nil
	}
	cond := outs[0]
	var uncond []float32
	if len(outs) == 2 {
		uncond = outs[1]
		diff := make([]float32, len(cond))
		for i := range diff {
			if uncond != nil {
				diff[i] = cond[i] - uncond[i]
			} else {
				diff[i] = cond[i]
			}
		}
		cond = diff
	}
	r, err := op.Apply(ctx, cond, shape)
	if err != nil {
		return nil, err
	}
	if len(r) != len(cond) {
		return nil, fmt.Errorf("the operation returned %d values for a %v latent", len(r), shape)
	}
	if uncond != nil {
		for i := range r {
			r[i] += uncond[i]
		}
	}
	res := append([][]float32(nil), outs...)
	res[0] = r
	return res, nil
}
