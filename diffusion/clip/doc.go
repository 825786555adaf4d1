// Package clip holds the CLIP text side of Stable Diffusion: the byte-level BPE
// tokenizer, ComfyUI's prompt-weight syntax and chunking (tokenize_with_weights), and
// the text encoders.
//
// Upstream, re-derived (never copied): OpenAI CLIP simple_tokenizer.py and Hugging Face's
// slow CLIPTokenizer (byte-to-unicode table, BPE merge loop, basic text cleaning),
// ComfyUI comfy/sd1_clip.py (SDTokenizer.tokenize_with_weights, token_weights,
// parse_parentheses, escape_important, load_embedding).
package clip
