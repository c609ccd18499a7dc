"""Generate the reference fixtures for `crates/llama-core/src/dequant.rs`.

Made with (from the repository root):

    .venv-ref/bin/python scripts/make_dequant_fixtures.py

using the PyPI `gguf` package version 0.19.0 (llama.cpp's own Python reference for the
ggml block formats) and numpy 2.4.6. The output is deterministic (fixed seed).

For each of the 13 types the Rust side dequantizes, this writes into
`crates/llama-core/tests/fixtures/dequant/`:

* `<NAME>.bin`  raw ggml block bytes, 1024 elements (4 blocks of 256 or 32 blocks of 32),
* `<NAME>.f32`  `gguf.quants.dequantize` of those bytes, little-endian f32.

Where `gguf.quants.quantize` supports the type (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0),
the first part of `.bin` is the quantization of random normal data (plus a few hand-picked
blocks: all zeros, exact rounding ties) and the rest is random block bytes. For the K-quants,
which the package can only dequantize, every block is random bytes. In random blocks every f16
scale field (d, dmin/m) is overwritten with a small finite random f16 so no NaN/inf leaks in.

For Q8_0 and Q4_0 it also writes `<NAME>.source.f32`: the f32 input that was quantized into
the leading blocks of `<NAME>.bin`, so the Rust quantizers can be checked bit for bit.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize, quantize

OUT_DIR = Path(__file__).resolve().parent.parent / "crates/llama-core/tests/fixtures/dequant"
N_ELEMENTS = 1024
rng = np.random.default_rng(20240611)

# Byte offsets of the f16 scale fields inside one block, per ggml's block structs.
SCALE_FIELD_OFFSETS: dict[T, tuple[int, ...]] = {
    T.Q4_0: (0,),       # d, qs[16]
    T.Q4_1: (0, 2),     # d, m, qs[16]
    T.Q5_0: (0,),       # d, qh[4], qs[16]
    T.Q5_1: (0, 2),     # d, m, qh[4], qs[16]
    T.Q8_0: (0,),       # d, qs[32]
    T.Q2_K: (80, 82),   # scales[16], qs[64], d, dmin
    T.Q3_K: (108,),     # hmask[32], qs[64], scales[12], d
    T.Q4_K: (0, 2),     # d, dmin, scales[12], qs[128]
    T.Q5_K: (0, 2),     # d, dmin, scales[12], qh[32], qs[128]
    T.Q6_K: (208,),     # ql[128], qh[64], scales[16] (int8), d
}


def random_blocks(qtype: T, n_blocks: int) -> np.ndarray:
    """Random block bytes whose f16 scale fields are small, finite, of either sign."""
    _, type_size = GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for offset in SCALE_FIELD_OFFSETS[qtype]:
        scales = (rng.standard_normal(n_blocks) * 0.05).astype(np.float16)
        blocks[:, offset:offset + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
    return blocks


def hand_picked_source() -> np.ndarray:
    """Three blocks of 32 that exercise the quantizers' edge cases."""
    zeros = np.zeros(32, dtype=np.float32)                      # d == 0, so id must be 0
    # x * id lands exactly on .5: Q4_0 sees d = -8 / -8 = 1, Q8_0 sees d = 127 / 127 = 1,
    # so round-half-away-from-zero vs. ties-to-even shows.
    q4_ties = np.arange(-8.0, 8.0, 0.5, dtype=np.float32)
    q8_ties = np.concatenate([[127.0], np.arange(-15.5, 15.0, 1.0)]).astype(np.float32)
    return np.concatenate([zeros, q4_ties, q8_ties])


def float_source(n: int) -> np.ndarray:
    data = rng.standard_normal(n).astype(np.float32)
    # Special values: signed zero, infinities, NaN, subnormals of f32 and of f16/bf16.
    special = np.array([-0.0, np.inf, -np.inf, np.nan, 1e-40, -3e-45, 6e-8, 65504.0, 1e30],
                       dtype=np.float32)
    data[:len(special)] = special
    return data


def write(name: str, block_bytes: np.ndarray, reference: np.ndarray) -> None:
    assert block_bytes.dtype == np.uint8
    reference = np.ascontiguousarray(reference, dtype="<f4").ravel()
    assert reference.size == N_ELEMENTS, (name, reference.size)
    (OUT_DIR / f"{name}.bin").write_bytes(block_bytes.tobytes())
    (OUT_DIR / f"{name}.f32").write_bytes(reference.tobytes())


def main() -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)

    # Plain float formats: quantize() is a cast (F32/F16) or ggml's bf16 rounding (BF16).
    for qtype, name in [(T.F32, "F32"), (T.F16, "F16"), (T.BF16, "BF16")]:
        with np.errstate(over="ignore"):  # 1e30 -> f16 inf is intended
            stored = np.ascontiguousarray(quantize(float_source(N_ELEMENTS), qtype))
        stored_bytes = stored.view(np.uint8).ravel()
        write(name, stored_bytes, dequantize(stored_bytes, qtype))

    # Legacy 32-element block formats: quantized normal data + hand-picked + random blocks.
    for qtype in [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]:
        name = qtype.name
        block_elements, _ = GGML_QUANT_SIZES[qtype]
        n_random_blocks = 8
        n_quantized = N_ELEMENTS - n_random_blocks * block_elements
        picked = hand_picked_source()
        source = np.concatenate([picked, (rng.standard_normal(n_quantized - picked.size)).astype(np.float32)])
        quantized = quantize(source, qtype).reshape(-1)
        blocks = np.concatenate([quantized, random_blocks(qtype, n_random_blocks).reshape(-1)])
        write(name, blocks, dequantize(blocks, qtype))
        if qtype in (T.Q8_0, T.Q4_0):
            (OUT_DIR / f"{name}.source.f32").write_bytes(source.astype("<f4").tobytes())

    # K-quants: the package has no quantizer for these, so random blocks only.
    for qtype in [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]:
        block_elements, _ = GGML_QUANT_SIZES[qtype]
        blocks = random_blocks(qtype, N_ELEMENTS // block_elements).reshape(-1)
        write(qtype.name, blocks, dequantize(blocks, qtype))

    total = sum(p.stat().st_size for p in OUT_DIR.iterdir())
    print(f"gguf {version('gguf')}, numpy {np.__version__}: "
          f"wrote {len(list(OUT_DIR.iterdir()))} files, {total} bytes to {OUT_DIR}")


if __name__ == "__main__":
    main()
