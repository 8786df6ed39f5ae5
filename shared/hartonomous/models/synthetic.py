"""Synthetic GGUF files, written with the ``gguf`` package: test and benchmark fixtures.

A llama-shaped tensor set with random bytes (seeded per tensor name, so a "fine-tune"
that changes a few tensors shares every other tensor's bytes with its base). Tensors are
written one at a time: a 4 GB file needs no more memory than its largest tensor.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFWriter

ARCH = "llama"


def tensor_plan(
    blocks: int, width: int, ffn: int, vocab: int
) -> list[tuple[str, tuple[int, ...], GGMLQuantizationType]]:
    """(name, GGUF shape, type) in file order: embeddings, blocks, output norm."""
    q8, f32 = GGMLQuantizationType.Q8_0, GGMLQuantizationType.F32
    plan: list[tuple[str, tuple[int, ...], GGMLQuantizationType]] = [
        ("token_embd.weight", (width, vocab), q8)
    ]
    for b in range(blocks):
        plan += [
            (f"blk.{b}.attn_norm.weight", (width,), f32),
            (f"blk.{b}.attn_q.weight", (width, width), q8),
            (f"blk.{b}.attn_k.weight", (width, width), q8),
            (f"blk.{b}.attn_v.weight", (width, width), q8),
            (f"blk.{b}.attn_output.weight", (width, width), q8),
            (f"blk.{b}.ffn_norm.weight", (width,), f32),
            (f"blk.{b}.ffn_gate.weight", (width, ffn), q8),
            (f"blk.{b}.ffn_up.weight", (width, ffn), q8),
            (f"blk.{b}.ffn_down.weight", (ffn, width), q8),
        ]
    plan.append(("output_norm.weight", (width,), f32))
    return plan


def nbytes(shape: tuple[int, ...], ggml_type: GGMLQuantizationType) -> int:
    block, size = GGML_QUANT_SIZES[ggml_type]
    return int(np.prod(shape)) // block * size


def blocks_for(target_bytes: int, width: int, ffn: int, vocab: int) -> int:
    """How many blocks make a file of about ``target_bytes``."""
    one = sum(nbytes(s, t) for n, s, t in tensor_plan(1, width, ffn, vocab) if n.startswith("blk"))
    rest = sum(nbytes(s, t) for n, s, t in tensor_plan(0, width, ffn, vocab))
    return max(1, round((target_bytes - rest) / one))


def write_synthetic_gguf(
    path: Path,
    *,
    blocks: int = 2,
    width: int = 64,
    ffn: int = 128,
    vocab: int = 256,
    seed: int = 0,
    changed: Iterable[str] = (),
    name: str = "synthetic",
    extra: Callable[[GGUFWriter], None] | None = None,
) -> Path:
    """Write the model; tensors named in ``changed`` get other bytes than ``seed`` gives;
    ``extra`` adds metadata of its own."""
    if width % 32 or ffn % 32:
        raise ValueError("width and ffn must be multiples of 32 (Q8_0 blocks)")
    changed = set(changed)
    plan = tensor_plan(blocks, width, ffn, vocab)
    writer = GGUFWriter(path, ARCH)
    writer.add_name(name)
    writer.add_license("apache-2.0")
    writer.add_file_type(7)  # Q8_0
    writer.add_context_length(2048)
    writer.add_embedding_length(width)
    writer.add_feed_forward_length(ffn)
    writer.add_block_count(blocks)
    writer.add_head_count(max(1, width // 32))
    writer.add_tokenizer_model("llama")
    writer.add_token_list([f"<t{i}>" for i in range(vocab)])
    if extra is not None:
        extra(writer)
    for tensor_name, shape, ggml_type in plan:
        writer.add_tensor_info(
            tensor_name, _byte_shape(shape, ggml_type), np.dtype(np.uint8),
            nbytes(shape, ggml_type), raw_dtype=ggml_type,
        )  # fmt: skip
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor_name, shape, ggml_type in plan:
        key = f"{seed}:{tensor_name}:{'changed' if tensor_name in changed else 'base'}"
        rng = np.random.default_rng(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8]))
        data = np.frombuffer(rng.bytes(nbytes(shape, ggml_type)), dtype=np.uint8)
        writer.write_tensor_data(data.reshape(_byte_shape(shape, ggml_type)))
    writer.close()
    return path


def _byte_shape(shape: tuple[int, ...], ggml_type: GGMLQuantizationType) -> tuple[int, ...]:
    """The NumPy shape of the tensor's bytes (slowest dimension first), as GGUFWriter takes."""
    block, size = GGML_QUANT_SIZES[ggml_type]
    return (*reversed(shape[1:]), shape[0] // block * size)
