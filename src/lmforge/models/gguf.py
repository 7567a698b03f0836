"""GGUF checkpoints (llama.cpp's format, e.g. smollm2-135m) as Hugging Face folders; converted
once into the model cache (models/cache.py)."""

from __future__ import annotations

from pathlib import Path


def write_hf_folder(sources: list[Path], target: Path) -> None:
    """Load a GGUF causal LM with transformers (de-quantized to fp32) and save it with its tokenizer
    and chat template as a plain safetensors folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .build import LOCAL_ONLY, quiet_transformers

    (gguf,) = sources

    quiet_transformers()
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, **LOCAL_ONLY)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, **LOCAL_ONLY)
    # transformers marks a GGUF-loaded model as quantized and refuses to save it; the weights are
    # already de-quantized, so dropping the marks saves exactly what was loaded.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(target), safe_serialization=True)
    tokenizer.save_pretrained(str(target))
