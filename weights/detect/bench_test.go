package detect

import "testing"

// BenchmarkDetect measures detection of full-size single-file checkpoints from their
// tensor lists (what DetectFile adds is the header read).
func BenchmarkDetect(b *testing.B) {
	for _, bc := range []struct {
		name string
		ts   tensors
	}{
		{"sdxl_checkpoint", join(pre("model.diffusion_model.", sdxlUNet.build()), pre("first_stage_model.", sdVAE.build()),
			pre("conditioner.embedders.0.transformer.", clipHF(12, 768, 3072, false)),
			pre("conditioner.embedders.1.model.", clipOpen(32, 1280)))},
		{"flux_dev", fluxDev.build()},
	} {
		in := Input{Tensors: bc.ts}
		b.Run(bc.name, func(b *testing.B) {
			b.ReportMetric(float64(len(bc.ts)), "tensors")
			for b.Loop() {
				if _, err := Detect(in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
