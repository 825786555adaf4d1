// Package synth lays out Stable Diffusion checkpoints from architecture configurations —
// every tensor name and shape a real single-file checkpoint has — and writes them with
// random weights. It exists so that speed can be measured on full-size models and model
// code tested on tiny ones with real key names, without downloading anything.
package synth
