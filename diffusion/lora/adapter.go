package lora

import (
	"fmt"
	"log/slog"
	"sort"
	"strings"
)

// Kind is an adapter type of comfy/weight_adapter and comfy/lora.py load_lora.
type Kind uint8

const (
	KindLoRA  Kind = iota + 1 // up·down (LoRA, LoCon; with a Tucker mid for convolutions)
	KindLoHa                  // (w1a·w1b) ⊙ (w2a·w2b), Tucker cores t1/t2 for convolutions
	KindLoKr                  // w1 ⊗ w2, each whole or a low-rank product, w2 with a Tucker core
	KindDiff                  // a full difference added to the weight (diff, diff_b, w_norm, b_norm)
	KindSet                   // a replacement weight (set_weight)
	KindScale                 // the weight times Adapter.Factor (add_patches' strength_model)
)

func (k Kind) String() string {
	switch k {
	case KindLoRA:
		return "lora"
	case KindLoHa:
		return "loha"
	case KindLoKr:
		return "lokr"
	case KindDiff:
		return "diff"
	case KindSet:
		return "set"
	case KindScale:
		return "scale"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Adapter is one module's weight update as the file stores it: the loader keys of its
// tensors by role ("up", "down", "mid"; "w1a", "w1b", "w2a", "w2b", "t1", "t2"; "w1",
// "w2"; "diff"), the module's alpha (nil when the file has none: scale 1) and DoRA
// magnitude key.
type Adapter struct {
	Kind    Kind
	Module  string
	Tensors map[string]string
	Alpha   *float64
	DoRA    string
	Reshape []int // LoRA reshape_weight: the weight is padded to this shape first
	// Factor multiplies the weight (KindScale only).
	Factor float64
}

// Patch is one weight's update from one LoRA.
type Patch struct {
	Target  Target
	Adapter *Adapter
}

// active reports whether the patch changes its weight at strength s: a replacement
// (set_weight) and a scale do at any strength, the others not at 0.
func (p Patch) active(s float64) bool {
	return s != 0 || p.Adapter.Kind == KindSet || p.Adapter.Kind == KindScale
}

// Set is a LoRA file resolved against a key map: what each model weight gets, and the
// file keys no module used. A weight may get several patches, one per target: a
// diffusers LoRA patches the q, k and v rows of Flux's fused qkv separately.
type Set struct {
	File    *File
	Patches map[string][]Patch // by Target.Key
	Unused  []string
}

// suffixes of the LoRA adapter's up/down pairs, in weight_adapter/lora.py's order:
// {up, down, mid ("" for none)}.
var loraNames = [][3]string{
	{".lora_up.weight", ".lora_down.weight", ".lora_mid.weight"},
	{"_lora.up.weight", "_lora.down.weight", ""},
	{".lora_B.weight", ".lora_A.weight", ""},
	{".lora.up.weight", ".lora.down.weight", ""},
	{".lora_B", ".lora_A", ""},
	{".lora_linear_layer.up.weight", ".lora_linear_layer.down.weight", ""},
	{".lora_B.default.weight", ".lora_A.default.weight", ""},
}

// unsupportedSuffixes mark the adapters of comfy/weight_adapter this package does not
// implement (GLoRA, OFT, BOFT).
var unsupportedSuffixes = map[string]string{".a1.weight": "GLoRA", ".oft_blocks": "OFT/BOFT", ".oft_diag": "OFT"}

// Resolve matches the file against km as comfy/lora.py load_lora does: for every module
// name of the map, its alpha and dora_scale, then the LoRA, LoHa and LoKr tensors, then
// w_norm/b_norm, diff/diff_b and set_weight, a later find replacing an earlier one for
// the same weight. File keys no module took are listed in Unused (ComfyUI warns "lora
// key not loaded" for each); log gets one warning for them, with the first few.
func (l *File) Resolve(km KeyMap, log *slog.Logger) (*Set, error) {
	for k := range l.names {
		for suf, what := range unsupportedSuffixes {
			if strings.HasSuffix(k, suf) {
				return nil, &UnsupportedError{File: l.name, What: fmt.Sprintf("%s adapters (%s) are not implemented", what, k)}
			}
		}
	}
	set := &Set{File: l, Patches: map[string][]Patch{}}
	used := map[string]bool{}
	mods := make([]string, 0, len(km))
	for m := range km {
		mods = append(mods, m)
	}
	// ComfyUI walks its key map in insertion order; sorted names make the rare case of two
	// modules patching one weight deterministic.
	sort.Strings(mods)
	for _, x := range mods {
		t := km[x]
		var alpha *float64
		if k := x + ".alpha"; l.has(k) {
			a, err := l.scalar(k)
			if err != nil {
				return nil, err
			}
			alpha, used[k] = &a, true
		}
		dora := ""
		if k := x + ".dora_scale"; l.has(k) {
			dora, used[k] = k, true
		}
		put := func(key string, a *Adapter, roles map[string]string) {
			a.Module, a.Tensors = x, roles
			for _, k := range roles {
				used[k] = true
			}
			// ComfyUI's patch_dict has one entry per target (key and rows): a later find
			// for the same target replaces the earlier one.
			p := Patch{Target: Target{Key: key, Start: t.Start, Length: t.Length, SwapHalves: t.SwapHalves}, Adapter: a}
			for i, q := range set.Patches[key] {
				if q.Target == p.Target {
					set.Patches[key][i] = p
					return
				}
			}
			set.Patches[key] = append(set.Patches[key], p)
		}
		if a, roles, err := l.loraAdapter(x, alpha, dora, used); err != nil {
			return nil, err
		} else if a != nil {
			put(t.Key, a, roles)
		}
		if roles := l.present(x, map[string]string{"w1a": ".hada_w1_a", "w1b": ".hada_w1_b", "w2a": ".hada_w2_a", "w2b": ".hada_w2_b", "t1": ".hada_t1", "t2": ".hada_t2"}); roles["w1a"] != "" {
			if err := need(l.name, x, roles, "w1b", "w2a", "w2b"); err != nil {
				return nil, err
			}
			if (roles["t1"] == "") != (roles["t2"] == "") {
				return nil, &FormatError{File: l.name, Key: x, Msg: "LoHa with one Tucker core (hada_t1/hada_t2) of two"}
			}
			put(t.Key, &Adapter{Kind: KindLoHa, Alpha: alpha, DoRA: dora}, roles)
		}
		if roles := l.present(x, map[string]string{"w1": ".lokr_w1", "w2": ".lokr_w2", "w1a": ".lokr_w1_a", "w1b": ".lokr_w1_b",
			"w2a": ".lokr_w2_a", "w2b": ".lokr_w2_b", "t2": ".lokr_t2"}); roles["w1"] != "" || roles["w2"] != "" || roles["w1a"] != "" || roles["w2a"] != "" {
			if (roles["w1"] == "" && (roles["w1a"] == "" || roles["w1b"] == "")) || (roles["w2"] == "" && (roles["w2a"] == "" || roles["w2b"] == "")) {
				return nil, &FormatError{File: l.name, Key: x, Msg: "LoKr needs lokr_w1 (or lokr_w1_a and _b) and lokr_w2 (or lokr_w2_a and _b)"}
			}
			put(t.Key, &Adapter{Kind: KindLoKr, Alpha: alpha, DoRA: dora}, roles)
		}
		bias := strings.TrimSuffix(t.Key, ".weight") + ".bias"
		if k := x + ".w_norm"; l.has(k) {
			put(t.Key, &Adapter{Kind: KindDiff}, map[string]string{"diff": k})
			if kb := x + ".b_norm"; l.has(kb) {
				put(bias, &Adapter{Kind: KindDiff}, map[string]string{"diff": kb})
			}
		}
		if k := x + ".diff"; l.has(k) {
			put(t.Key, &Adapter{Kind: KindDiff}, map[string]string{"diff": k})
		}
		if k := x + ".diff_b"; l.has(k) {
			put(bias, &Adapter{Kind: KindDiff}, map[string]string{"diff": k})
		}
		if k := x + ".set_weight"; l.has(k) {
			put(t.Key, &Adapter{Kind: KindSet}, map[string]string{"diff": k})
		}
	}
	for _, k := range l.Keys() {
		if !used[k] {
			set.Unused = append(set.Unused, k)
		}
	}
	if n := len(set.Unused); n > 0 && log != nil {
		log.Warn("lora keys not loaded", "file", l.name, "count", n, "first", firstFew(set.Unused, 5))
	}
	return set, nil
}

// loraAdapter finds the up/down pair of module x in any of the known spellings.
func (l *File) loraAdapter(x string, alpha *float64, dora string, used map[string]bool) (*Adapter, map[string]string, error) {
	for _, n := range loraNames {
		up := x + n[0]
		if !l.has(up) {
			continue
		}
		down := x + n[1]
		if !l.has(down) {
			return nil, nil, &FormatError{File: l.name, Key: up, Msg: "no matching " + down}
		}
		roles := map[string]string{"up": up, "down": down}
		if n[2] != "" && l.has(x+n[2]) {
			roles["mid"] = x + n[2]
		}
		a := &Adapter{Kind: KindLoRA, Alpha: alpha, DoRA: dora}
		if k := x + ".reshape_weight"; l.has(k) {
			v, _, err := l.values(k)
			if err != nil {
				return nil, nil, err
			}
			for _, d := range v {
				a.Reshape = append(a.Reshape, int(d))
			}
			used[k] = true
		}
		return a, roles, nil
	}
	return nil, nil, nil
}

// present returns the loader keys of x+suffix that exist, by role.
func (l *File) present(x string, suffixes map[string]string) map[string]string {
	roles := map[string]string{}
	for role, suf := range suffixes {
		if l.has(x + suf) {
			roles[role] = x + suf
		}
	}
	return roles
}

func need(file, module string, roles map[string]string, want ...string) error {
	for _, w := range want {
		if roles[w] == "" {
			return &FormatError{File: file, Key: module, Msg: "LoHa lacks its " + w + " matrix"}
		}
	}
	return nil
}

func firstFew(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
