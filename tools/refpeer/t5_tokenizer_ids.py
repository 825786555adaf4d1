"""Expected T5 token ids for diffusion/t5's TestRealTokenizer, made by ComfyUI itself.

Runs ComfyUI 0.3.64's own T5XXLTokenizer classes (comfy/text_encoders/flux.py, min_length
256, and comfy/text_encoders/sd3_clip.py, min_length 77) on the prompts below, inside the
refpeer chroot (see ../shared/refpeer/README.md; its transformers shim provides
T5TokenizerFast over comfy/text_encoders/t5_tokenizer/tokenizer.json), and prints JSON:
for each prompt the ids, weights and word ids of tokenize_with_weights. The output is
committed as diffusion/t5/testdata/t5_tokenizer_ids.json (facts about ComfyUI's output,
no ComfyUI code).

The chroot sees only the kit and $REFPEER_DIR, so copy this file there first:

    cp tools/refpeer/t5_tokenizer_ids.py $REFPEER_DIR/tmp/
    ../shared/refpeer/chroot.sh PYTHONPATH=/refpeer/ComfyUI:/kit/shims:/refpeer/pylib \
        python3 /refpeer/tmp/t5_tokenizer_ids.py > diffusion/t5/testdata/t5_tokenizer_ids.json

Prompts holding a literal special token (</s>, <extra_id_0>) are left out: the shim
gives the text after one a leading ▁ as SentencePiece does, where Hugging Face's
tokenizer (prepend_scheme "first", what ComfyUI runs elsewhere) gives none.
"""
import json
import sys

import comfy.options  # noqa: F401
import comfy.cli_args

comfy.cli_args.args.cpu = True

from comfy.text_encoders import flux, sd3_clip  # noqa: E402

PROMPTS = [
    "a photo of a cat",
    "A majestic lion resting on a rock, golden hour, 35mm film, highly detailed",
    "a (red:1.3) apple on a (wooden table:0.8), ((masterpiece)), [blurry]",
    "nested ((very (deep:1.5)) weights) here",
    r"escaped \(parentheses\) stay \(literal:1.2\)",
    "unbalanced (open paren and close) paren)",
    "  leading and   repeated   spaces\tand a tab\nand a newline  ",
    "Numbers 1234567890, 3.14159 and 1/2 of 100%",
    "punctuation!? yes... no; maybe: \"quoted\" 'single' <angle> {brace} [square] @#$%^&*_+=~`|",
    "Café crème brûlée, naïve façade, Zürich, São Paulo, Ærøskøbing",
    "ｆｕｌｌｗｉｄｔｈ ＬＥＴＴＥＲＳ and ｎｕｍｂｅｒｓ １２３",
    "ligatures ﬁne ﬂow ﬀ and superscripts x² ½ ™ ©",
    "中文提示 日本語のプロンプト 한국어 and emoji 🐱🚀✨",
    "Привет мир, Ελληνικά, עברית, العربية",
    "zero\u200bwidth and non\u00a0breaking space and soft\u00adhyphen",
    "UPPER lower MiXeD CamelCaseWords snake_case kebab-case",
    "https://example.com/path?query=1&x=y email@example.org",
    "a",
    "",
    " ",
    "(:1.2)",
    "(cat:1.5) (dog:0.5) (bird)",
    "a photograph of an astronaut riding a horse on the moon, " * 12,
]

OPTIONS = [
    ("a cat", {"t5xxl_min_padding": 3, "t5xxl_min_length": 0}),
    ("a cat", {"t5xxl_min_padding": 0, "t5xxl_min_length": 10}),
    ("a (cat:1.2)", {"t5xxl_min_padding": 2, "t5xxl_min_length": 5}),
]


def entry(tok, min_length, prompt, options=None):
    kw = {"tokenizer_options": options} if options else {}
    out = tok.tokenize_with_weights(prompt, return_word_ids=True, **kw)
    assert len(out) == 1, "T5 never splits into windows"
    e = {"prompt": prompt, "min_length": min_length,
         "ids": [int(t) for t, _, _ in out[0]],
         "weights": [float(w) for _, w, _ in out[0]],
         "word_ids": [int(i) for _, _, i in out[0]]}
    if options:
        e["options"] = {"min_padding": options["t5xxl_min_padding"], "min_length": options["t5xxl_min_length"]}
    return e


def main():
    tokenizers = [(flux.T5XXLTokenizer(), 256), (sd3_clip.T5XXLTokenizer(), 77)]
    cases = []
    for tok, min_length in tokenizers:
        for p in PROMPTS:
            cases.append(entry(tok, min_length, p))
    tok, min_length = tokenizers[0]
    for p, o in OPTIONS:
        cases.append(entry(tok, min_length, p, o))
    # one case per line, so that a change reads as a diff of prompts
    w = sys.stdout.write
    w('{"source": "ComfyUI 0.3.64 T5XXLTokenizer.tokenize_with_weights (refpeer chroot, transformers shim)",\n')
    w(' "generator": "tools/refpeer/t5_tokenizer_ids.py",\n "cases": [\n')
    w(",\n".join("  " + json.dumps(c, ensure_ascii=False) for c in cases))
    w("\n ]\n}\n")


if __name__ == "__main__":
    main()
