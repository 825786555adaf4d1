package flux

// FLOPs counts the floating-point operations (a multiply-add is two) of one Forward on
// a batch of one with imgTokens image tokens (reference tokens included) and txtTokens
// text tokens: the matrix products and the attention's two products; norms, RoPE and
// elementwise work are left out.
func (m *Model) FLOPs(imgTokens, txtTokens int) float64 {
	c := m.Config
	d, li, lt := float64(c.HiddenSize), float64(imgTokens), float64(txtTokens)
	p2 := float64(c.PatchSize * c.PatchSize)
	f := 2 * li * float64(c.InChannels) * p2 * d // img_in
	f += 2 * lt * float64(c.ContextInDim) * d    // txt_in
	f += float64(c.Depth) * DoubleBlockFLOPs(imgTokens, txtTokens, c.HiddenSize, m.MLPHidden)
	f += float64(c.DepthSingleBlocks) * SingleBlockFLOPs(imgTokens+txtTokens, c.HiddenSize, m.MLPHidden)
	f += 2 * li * d * float64(c.OutChannels) * p2 // final_layer.linear
	return f
}

// DoubleBlockFLOPs counts one double-stream block: per stream q/k/v (3·D²), the output
// projection (D²) and the MLP (2·D·MLP) per token, and the joint attention
// (4·L²·D for q·kᵀ and the weighted sum).
func DoubleBlockFLOPs(imgTokens, txtTokens, hidden, mlp int) float64 {
	d, m, l := float64(hidden), float64(mlp), float64(imgTokens+txtTokens)
	return l*2*(4*d*d+2*d*m) + 4*l*l*d
}

// SingleBlockFLOPs counts one single-stream block over tokens: linear1 (D·(3D+MLP)),
// linear2 ((D+MLP)·D) per token and the attention.
func SingleBlockFLOPs(tokens, hidden, mlp int) float64 {
	d, m, l := float64(hidden), float64(mlp), float64(tokens)
	return l*2*(d*(3*d+m)+(d+m)*d) + 4*l*l*d
}
