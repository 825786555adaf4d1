package unet

import (
	"fmt"

	"github.com/forgeflow/forgeflow/gpu"
)

// SizeConditioning is SDXL's micro-conditioning (ComfyUI's CLIPTextEncodeSDXL inputs
// and SDXL.encode_adm defaults: target size = size, no crop).
type SizeConditioning struct {
	Width, Height             int
	CropW, CropH              int
	TargetWidth, TargetHeight int
}

// EncodeADM builds SDXL's label vector y: the pooled CLIP-G output followed by 256-d
// sinusoidal embeddings of height, width, crop_h, crop_w, target height and target
// width (comfy/model_base.py SDXL.encode_adm), (N, pooled+1536).
func EncodeADM(rt *gpu.Runtime, pooled *gpu.Tensor, s SizeConditioning) (*gpu.Tensor, error) {
	return LabelVector(rt, pooled, []float32{float32(s.Height), float32(s.Width), float32(s.CropH), float32(s.CropW), float32(s.TargetHeight), float32(s.TargetWidth)})
}

// LabelVector is pooled ++ the 256-d sinusoidal embedding of each value, for every batch
// item: the shape of SDXL's (and the SDXL refiner's) label vector, (N, pooled+256·len).
func LabelVector(rt *gpu.Runtime, pooled *gpu.Tensor, values []float32) (*gpu.Tensor, error) {
	if pooled.Rank() != 2 {
		return nil, fmt.Errorf("unet: pooled output %s is not (N, D)", pooled)
	}
	t, err := rt.FromFloat32(values, len(values))
	if err != nil {
		return nil, err
	}
	e, err := then(t, func(x *gpu.Tensor) (*gpu.Tensor, error) {
		return gpu.TimestepEmbedding(rt, x, gpu.TimestepParams{Dim: 256, MaxPeriod: 10000})
	})
	if err != nil {
		return nil, err
	}
	flat, err := e.Float32()
	e.Release()
	if err != nil {
		return nil, err
	}
	p, err := pooled.Float32()
	if err != nil {
		return nil, err
	}
	n, d := pooled.Dim(0), pooled.Dim(1)
	out := make([]float32, 0, n*(d+len(flat)))
	for i := 0; i < n; i++ {
		out = append(out, p[i*d:(i+1)*d]...)
		out = append(out, flat...)
	}
	return rt.FromFloat32(out, n, d+len(flat))
}
