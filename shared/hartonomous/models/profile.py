"""What a model is, from its GGUF metadata: registry fields and a searchable profile text."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from hartonomous.models.gguf_layout import GGUFLayout, InvalidModel

INT_MAX = 2**31 - 1  # what the registry's integer columns hold
INFO_STRING_MAX = 2048

_FILE_TYPES = {  # llama.cpp's LLAMA_FTYPE names for general.file_type
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
    29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0",
}  # fmt: skip


def summary(layout: GGUFLayout) -> dict[str, Any]:
    """The registry's columns for a model (``models`` table), from its header alone."""
    quantization = Counter(t.ggml_type.name for t in layout.tensors)
    info: dict[str, Any] = {}
    for key, entry in layout.metadata.items():
        value = _json_safe(entry.value)
        if key.startswith("general.") and value is not None:
            info[key.removeprefix("general.")] = value
    file_type = layout.value("general.file_type")
    if isinstance(file_type, int):
        info["file_type_name"] = _FILE_TYPES.get(file_type, f"type {file_type}")
    info["gguf_version"] = layout.version
    info["tensor_count"] = len(layout.tensors)
    arch = layout.architecture
    if arch is not None and len(arch) > 100:
        raise InvalidModel("general.architecture is longer than 100 characters")
    license_ = layout.value("general.license")
    return {
        "architecture": arch,
        "parameter_count": sum(t.n_elements for t in layout.tensors),
        "quantization": dict(sorted(quantization.items())),
        "context_length": _int(layout.arch_value("context_length")),
        "vocab_size": _int(layout.array_count("tokenizer.ggml.tokens")),
        "block_count": _int(layout.arch_value("block_count")),
        "chat_template": "tokenizer.chat_template" in layout.metadata,
        "license": license_[:200] if isinstance(license_, str) else None,
        "info": info,
    }


def _int(value: Any) -> int | None:
    """Integers the registry can hold; anything else (absurd, negative, not an int) is None."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= INT_MAX:
        return value
    return None


def _json_safe(value: Any) -> Any:
    """Metadata as JSON the API can always render: finite numbers, bounded strings."""
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value[:INFO_STRING_MAX]
    if isinstance(value, list):
        return [v for v in (_json_safe(x) for x in value) if v is not None]
    return None  # summaries of long arrays and strings


def human_count(n: int) -> str:
    for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def profile_text(name: str, fields: dict[str, Any], layers: list[int] | None = None) -> str:
    """A paragraph a search can match: "small multilingual completion model" finds it."""
    info = fields.get("info") or {}
    arch = fields.get("architecture") or "unknown"
    params = fields.get("parameter_count") or 0
    lines = [
        f"{name}: a {human_count(params)}-parameter {arch} language model in GGUF format"
        + (f", {fields['block_count']} transformer blocks" if fields.get("block_count") else "")
        + ".",
    ]
    if layers is not None:
        lines.append(f"A slice keeping blocks {', '.join(map(str, layers))} of its parent.")
    if info.get("file_type_name"):
        lines.append(f"Quantized as {info['file_type_name']}.")
    quant = fields.get("quantization") or {}
    if quant:
        lines.append("Tensor types: " + ", ".join(f"{k} ({v})" for k, v in quant.items()) + ".")
    if fields.get("context_length"):
        lines.append(f"Context length {fields['context_length']} tokens.")
    if fields.get("vocab_size"):
        lines.append(f"Vocabulary of {fields['vocab_size']} tokens.")
    lines.append(
        "Has a chat template: an instruction-tuned chat model."
        if fields.get("chat_template")
        else "No chat template: a base completion model."
    )
    for key, label in (
        ("license", "License"),
        ("size_label", "Size"),
        ("finetune", "Fine-tune"),
        ("basename", "Family"),
        ("organization", "Organization"),
        ("description", "Description"),
    ):
        value = fields.get(key) if key == "license" else info.get(key)
        if isinstance(value, str) and value:
            lines.append(f"{label}: {value}.")
    for key, label in (("tags", "Tags"), ("languages", "Languages")):
        value = info.get(key)
        if isinstance(value, list) and value:
            lines.append(f"{label}: {', '.join(map(str, value))}.")
    return "\n".join(lines)
