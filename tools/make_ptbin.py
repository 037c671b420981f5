#!/usr/bin/env python3
"""make_ptbin.py - writes pytorch_model.bin files in torch.save's exact format without torch (Python 3 stdlib only).

The layout follows torch/serialization.py (_save) and caffe2/serialize/inline_container.cc (PyTorchStreamWriter):
a zip of stored (uncompressed) entries under one top folder -- `<top>/data.pkl`, `<top>/byteorder`,
`<top>/data/<key>` ..., `<top>/version`, `<top>/.data/serialization_id` -- each record's data padded to a 64-byte
boundary through an 'FB' extra field in its local header (kFieldAlignment = 64). data.pkl is written by
pickle.Pickler (protocol 2, as torch) with persistent_id returning ('storage', torch.XStorage, key, 'cpu', numel);
the GLOBALs (collections.OrderedDict, torch._utils._rebuild_tensor_v2, torch.HalfStorage ...) come from stand-in
objects registered in a fake `torch` module, so the pickle bytes are the ones torch would write.

Tensors follow tests/common/testutil.h bit for bit (splitmix64 recipe), so a .bin written here equals the
safetensors twin that tu_write_checkpoint writes for the same spec; uint8 `attn.causal_mask` buffers
[1, 1, P, P] are added as CodeGen checkpoints carry them.

usage:
  tools/make_ptbin.py fixtures OUTDIR       the committed test fixtures (tests/unit/model/data)
  tools/make_ptbin.py ckpt OUT.bin n_layer n_embd n_head n_positions vocab f32|f16|bf16 seed
                                            one checkpoint (config.json is tu_write_checkpoint's, not written here)
"""
import collections
import io
import math
import os
import pickle
import struct
import sys
import types
import zlib

M64 = (1 << 64) - 1

# ---- the fake torch module: real names, so pickle emits the same GLOBALs torch does ----

torch = types.ModuleType("torch")
torch_utils = types.ModuleType("torch._utils")
torch._utils = torch_utils
sys.modules.setdefault("torch", torch)
sys.modules.setdefault("torch._utils", torch_utils)
if sys.modules["torch"] is not torch:
    sys.exit("make_ptbin.py: a real torch is imported; run this in a plain interpreter")


def _rebuild_tensor_v2(*args):
    raise RuntimeError("stand-in only")


_rebuild_tensor_v2.__module__ = "torch._utils"
torch_utils._rebuild_tensor_v2 = _rebuild_tensor_v2

STORAGE = {}  # dtype name -> (class, element size)
for cls_name, dt, size in [("HalfStorage", "f16", 2), ("FloatStorage", "f32", 4), ("BFloat16Storage", "bf16", 2),
                           ("ByteStorage", "u8", 1), ("BoolStorage", "bool", 1), ("LongStorage", "i64", 8),
                           ("IntStorage", "i32", 4), ("DoubleStorage", "f64", 8)]:
    cls = type(cls_name, (), {"__module__": "torch"})
    setattr(torch, cls_name, cls)
    STORAGE[dt] = (cls, size)


class Storage:
    def __init__(self, dtype, key, data):
        self.cls, esize = STORAGE[dtype]
        self.key, self.data, self.numel = key, data, len(data) // esize


class Tensor:
    """Pickles as torch.Tensor does: _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)."""

    def __init__(self, storage, offset, size, stride=None):
        if stride is None:
            stride, acc = [], 1
            for d in reversed(size):
                stride.insert(0, acc)
                acc *= d
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def __reduce_ex__(self, proto):
        return (_rebuild_tensor_v2,
                (self.storage, self.offset, self.size, self.stride, False, collections.OrderedDict()))


class Evil:
    """A pickle that would run a shell command if loaded by pickle.load (the loader must refuse it)."""

    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/suggestd-pwned",))


class EvalEvil:
    def __reduce__(self):
        import builtins
        return (builtins.eval, ("1+1",))


def dump_pickle(obj, protocol=2):
    buf = io.BytesIO()
    p = pickle.Pickler(buf, protocol=protocol)

    def persistent_id(o):
        if isinstance(o, Storage):
            return ("storage", o.cls, o.key, "cpu", o.numel)
        return None

    p.persistent_id = persistent_id
    p.dump(obj)
    return buf.getvalue()


def storages_of(state):
    seen, out = set(), []
    for t in state.values():
        if isinstance(t, Tensor) and t.storage.key not in seen:
            seen.add(t.storage.key)
            out.append(t.storage)
    return out


# ---- zip writer (PyTorchStreamWriter's layout) ----

def write_zip(path, records, zip64=False, deflate=()):
    """records: [(name, bytes)]. zip64 forces ZIP64 records for every entry; deflate names entries to compress
    (torch never does; used for a refusal fixture)."""
    out = bytearray()
    central = []
    for name, data in records:
        nb = name.encode()
        crc = zlib.crc32(data) & 0xFFFFFFFF
        method = 0
        stored = data
        if name in deflate:
            c = zlib.compressobj(9, zlib.DEFLATED, -15)
            stored = c.compress(data) + c.flush()
            method = 8
        offset = len(out)
        z64_local = struct.pack("<HHQQ", 1, 16, len(data), len(stored)) if zip64 else b""
        start = offset + 30 + len(nb) + len(z64_local) + 4
        pad = (64 - start % 64) % 64
        extra = z64_local + struct.pack("<HH", 0x4246, pad) + b"Z" * pad  # 'FB' padding field, as torch
        sz32 = 0xFFFFFFFF if zip64 else None
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45 if zip64 else 20, 0, method, 0, 0x21, crc,
                           sz32 if zip64 else len(stored), sz32 if zip64 else len(data), len(nb), len(extra))
        out += nb + extra
        assert method != 0 or len(out) % 64 == 0
        out += stored
        central.append((nb, crc, method, len(stored), len(data), offset))
    cd_off = len(out)
    for nb, crc, method, csize, usize, offset in central:
        if zip64:
            extra = struct.pack("<HHQQQ", 1, 24, usize, csize, offset)
            c32 = u32 = o32 = 0xFFFFFFFF
        else:
            extra, c32, u32, o32 = b"", csize, usize, offset
        out += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45 if zip64 else 20, 45 if zip64 else 20, 0, method, 0,
                           0x21, crc, c32, u32, len(nb), len(extra), 0, 0, 0, 0, o32)
        out += nb + extra
    cd_size = len(out) - cd_off
    n = len(central)
    if zip64:
        eocd64 = len(out)
        out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, n, n, cd_size, cd_off)
        out += struct.pack("<IIQI", 0x07064B50, 0, eocd64, 1)
        out += struct.pack("<IHHHHIIH", 0x06054B50, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    else:
        out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, cd_size, cd_off, 0)
    with open(path, "wb") as f:
        f.write(out)
    # Python's own reader must agree (CRCs, local headers, ZIP64 records).
    import zipfile
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None, path
        for name, data in records:
            assert zf.read(name) == data, name


def save(path, state, top="archive", protocol=2, zip64=False, deflate=(), pkl=None):
    """torch.save(state, path) for a dict of Tensor."""
    records = [(top + "/data.pkl", pkl if pkl is not None else dump_pickle(state, protocol)),
               (top + "/byteorder", b"little")]
    for s in storages_of(state):
        records.append((top + "/data/" + s.key, s.data))
    records.append((top + "/version", b"3\n"))
    records.append((top + "/.data/serialization_id", b"1234567890123456789012345678901234567890"))
    write_zip(path, records, zip64=zip64, deflate=tuple(top + "/" + d for d in deflate))


# ---- testutil.h's deterministic weights ----

def splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def f32_round(v):
    return struct.unpack("<f", struct.pack("<f", v))[0]


def to_bf16_bits(f):
    x = struct.unpack("<I", struct.pack("<f", f))[0]
    if (x & 0x7FFFFFFF) > 0x7F800000:
        return (x >> 16) | 0x40
    return ((x + 0x7FFF + ((x >> 16) & 1)) >> 16) & 0xFFFF


def fill(dtype, seed, k, n, scale, offset):
    base = splitmix64((seed + k) & M64)
    out = bytearray()
    for i in range(n):
        z = splitmix64((base + i) & M64)
        u = (z >> 11) * (1.0 / 9007199254740992.0)
        v = f32_round((2.0 * u - 1.0) * scale + offset)
        if dtype == "f32":
            out += struct.pack("<f", v)
        elif dtype == "f16":
            out += struct.pack("<e", v)  # v is exact in double: one round-to-nearest-even step, as f32_to_fp16
        else:
            out += struct.pack("<H", to_bf16_bits(v))
    return bytes(out)


def codegen_tensors(n_layer, D, V, dtype, seed):
    """[(name, shape, bytes)] in the CodeGen order of tests/common/ckpt.c."""
    F = 4 * D
    spec = [("transformer.wte.weight", V, D, 1.0, 0.0)]
    for l in range(n_layer):
        h = "transformer.h.%d." % l
        spec += [(h + "ln_1.weight", D, 0, 0.2, 1.0), (h + "ln_1.bias", D, 0, 0.1, 0.0),
                 (h + "attn.qkv_proj.weight", 3 * D, D, math.sqrt(3.0 / D), 0.0),
                 (h + "attn.out_proj.weight", D, D, math.sqrt(3.0 / D), 0.0),
                 (h + "mlp.fc_in.weight", F, D, math.sqrt(3.0 / D), 0.0), (h + "mlp.fc_in.bias", F, 0, 0.1, 0.0),
                 (h + "mlp.fc_out.weight", D, F, math.sqrt(3.0 / F), 0.0), (h + "mlp.fc_out.bias", D, 0, 0.1, 0.0)]
    spec += [("transformer.ln_f.weight", D, 0, 0.2, 1.0), ("transformer.ln_f.bias", D, 0, 0.1, 0.0),
             ("lm_head.weight", V, D, 4.0 * math.sqrt(3.0 / D), 0.0), ("lm_head.bias", V, 0, 0.1, 0.0)]
    out = []
    for k, (name, rows, cols, scale, off) in enumerate(spec):
        shape = [rows, cols] if cols else [rows]
        out.append((name, shape, fill(dtype, seed, k, rows * (cols or 1), scale, off)))
    return out


def causal_mask(P):
    return bytes(1 if j <= i else 0 for i in range(P) for j in range(P))


def codegen_state(n_layer, D, P, V, dtype, seed, shared_ln_f=False):
    """An HF-style state dict (OrderedDict with _metadata) with causal_mask buffers after each layer's attn."""
    state = collections.OrderedDict()
    key = 0
    tensors = codegen_tensors(n_layer, D, V, dtype, seed)
    by_name = {n: (s, b) for n, s, b in tensors}
    for name, shape, data in tensors:
        if shared_ln_f and name == "transformer.ln_f.bias":
            continue
        if shared_ln_f and name == "transformer.ln_f.weight":
            # weight and bias views of one storage: exercises storage_offset
            st = Storage(dtype, str(key), data + by_name["transformer.ln_f.bias"][1])
            key += 1
            state[name] = Tensor(st, 0, shape)
            state["transformer.ln_f.bias"] = Tensor(st, shape[0], shape)
            continue
        state[name] = Tensor(Storage(dtype, str(key), data), 0, shape)
        key += 1
        if name.endswith("attn.out_proj.weight"):
            mask_name = name[: -len("out_proj.weight")] + "causal_mask"
            state[mask_name] = Tensor(Storage("u8", str(key), causal_mask(P)), 0, [1, 1, P, P])
            key += 1
    state._metadata = collections.OrderedDict([("", {"version": 1}), ("transformer", {"version": 1})])
    return state


# ---- the committed fixtures ----

TINY = dict(n_layer=2, D=16, P=32, V=64, seed=4242)  # must match tests/unit/model/test_ptbin.c


def fixtures(outdir):
    os.makedirs(outdir, exist_ok=True)
    t = TINY
    j = lambda n: os.path.join(outdir, n)
    # A CodeGen checkpoint as torch writes it: fp16, protocol 2, top folder "archive".
    save(j("tiny_f16.bin"), codegen_state(t["n_layer"], t["D"], t["P"], t["V"], "f16", t["seed"]))
    # fp32 with ln_f weight/bias sharing one storage, top folder "pytorch_model", and ZIP64 records throughout.
    save(j("tiny_f32_zip64.bin"), codegen_state(t["n_layer"], t["D"], t["P"], t["V"], "f32", t["seed"],
                                                shared_ln_f=True), top="pytorch_model", zip64=True)
    # bf16 through protocol 4 (FRAME, MEMOIZE, SHORT_BINUNICODE, STACK_GLOBAL), as pickle.dump defaults to today.
    save(j("tiny_bf16_proto4.bin"), codegen_state(t["n_layer"], t["D"], t["P"], t["V"], "bf16", t["seed"]),
         protocol=4)

    small = collections.OrderedDict()
    st = Storage("f32", "0", struct.pack("<8f", *range(8)))
    small["a"] = Tensor(st, 2, [2, 3])  # elements 2..7 of the storage
    small["b"] = Tensor(Storage("f16", "1", struct.pack("<4e", 1, 2, 3, 4)), 0, [4])
    save(j("small.bin"), small)
    # Refusals.
    evil = collections.OrderedDict(small)
    evil["x"] = Evil()
    save(j("evil_system.bin"), evil)  # GLOBAL posix system
    evil4 = collections.OrderedDict(small)
    evil4["x"] = EvalEvil()
    save(j("evil_eval_proto4.bin"), evil4, protocol=4)  # STACK_GLOBAL builtins eval
    bad = collections.OrderedDict()
    bad["a"] = Tensor(st, 6, [2, 3])  # 6 + 6 > 8 elements
    save(j("bad_offset.bin"), bad)
    bad = collections.OrderedDict()
    st9 = Storage("f32", "0", struct.pack("<8f", *range(8)))
    st9.numel = 9  # the pickle claims more than the entry holds
    bad["a"] = Tensor(st9, 0, [8])
    save(j("bad_numel.bin"), bad)
    bad = collections.OrderedDict()
    bad["a"] = Tensor(st, 0, [2, 3], stride=[1, 2])  # a transposed view
    save(j("noncontig.bin"), bad)
    save(j("compressed.bin"), small, deflate=("data/1",))


def main(argv):
    if len(argv) == 3 and argv[1] == "fixtures":
        fixtures(argv[2])
    elif len(argv) == 10 and argv[1] == "ckpt":
        n_layer, D, n_head, P, V = (int(x) for x in argv[3:8])
        save(argv[2], codegen_state(n_layer, D, P, V, argv[8], int(argv[9])))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
