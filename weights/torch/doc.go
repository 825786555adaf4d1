// Package torch reads legacy PyTorch checkpoints (.ckpt, .pt, .pth, .bin): the zip archive
// written by torch.save since PyTorch 1.6, holding a pickle (data.pkl) that describes the
// state dict and one raw storage file per tensor storage (data/<key>).
//
// The pickle is decoded by a restricted unpickler that never executes anything: it knows
// the opcodes torch.save emits (protocol 2, plus the protocol 3-5 forms of the same
// operations) and a closed list of globals — collections.OrderedDict, torch._utils'
// _rebuild_tensor/_rebuild_tensor_v2/_rebuild_parameter, torch._tensor._rebuild_from_type_v2
// and the torch.*Storage types — which it interprets itself; a few harmless classes found in
// training checkpoints (pytorch_lightning's ModelCheckpoint, numpy scalars) become inert
// placeholders. Any other global (os.system, builtins.eval, ...) or opcode is refused with
// an error naming it and its offset. Stored (uncompressed) storages are memory-mapped.
//
// References: Python's Lib/pickletools.py (opcode semantics), PyTorch torch/serialization.py
// (_save, _load, _legacy_load, persistent_load) and torch/_utils.py (_rebuild_tensor_v2).
// The pre-1.6 format (pickles back to back, then the raw storages; old .pth upscale
// models use it) is read too, with the same unpickler. It imports weights and
// weights/internal/mmap.
package torch
