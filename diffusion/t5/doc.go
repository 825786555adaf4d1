// Package t5 holds the T5 text encoder that Flux and SD3 condition on: the T5 v1.1
// encoder stack (T5-XXL and its smaller and UMT5 siblings) loaded in its stored dtype from
// transformers-named safetensors or llama.cpp-named GGUF files, and its SentencePiece
// Unigram tokenizer read from a tokenizer.json or a spiece.model, with ComfyUI's prompt
// weights, padding and attention masks.
//
// It imports gpu, weights and diffusion/statedict (and diffusion/clip for the prompt-weight
// syntax); nothing above diffusion.
//
// Upstream, re-derived (never copied): ComfyUI comfy/text_encoders/t5.py (T5, T5Stack,
// T5Attention._relative_position_bucket, T5LayerNorm, the gated GELU feed-forward),
// comfy/text_encoders/sd3_clip.py and flux.py (T5XXLModel, T5XXLTokenizer), comfy/sd1_clip.py
// (SDClipModel.process_tokens' attention mask, encode_token_weights, SDTokenizer),
// comfy/ops.py (scaled fp8 weights); ComfyUI-GGUF loader.py (the llama.cpp → transformers
// key names); SentencePiece normalizer.cc and unigram_model.cc (precompiled charsmap,
// whitespace rules, the optimized Viterbi) and sentencepiece_model.proto (field numbers);
// darts-clone (the double-array trie of the charsmap); Hugging Face tokenizers'
// tokenizer.json schema (Unigram model, Metaspace, added tokens).
package t5
