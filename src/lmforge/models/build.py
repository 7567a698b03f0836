"""Loading tokenizers and task models from local folders, and wrapping them with peft methods."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from ..errors import UserError

# Every load reads a local folder: never the hub (no download, no remote code). Passed per call, so
# importing lmforge leaves the process's own hub settings (HF_HUB_OFFLINE, ...) alone.
LOCAL_ONLY = {"local_files_only": True, "trust_remote_code": False}
HEAD_NAMES = ("classifier", "score")
OUTPUT_NAMES = HEAD_NAMES + ("lm_head",)  # never LoRA targets: the task head is trained whole, the LM head is tied


def quiet_transformers() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*were not initialized.*")
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)  # raised inside peft


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    quiet_transformers()
    tok = AutoTokenizer.from_pretrained(str(path), **LOCAL_ONLY)
    if not getattr(tok, "is_fast", False):
        raise UserError(f"{path}: lmforge needs a fast (tokenizers-backed) tokenizer; this folder has no tokenizer.json")
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise UserError(f"{path}: the tokenizer has neither a padding nor an end-of-sequence token; add a pad_token to tokenizer_config.json")
        tok.pad_token = tok.eos_token  # decoder tokenizers often ship without one
    return tok


HIDDEN_DROPOUT_KEYS = ("hidden_dropout_prob", "hidden_dropout", "resid_pdrop", "embd_pdrop")  # names across model families


def load_model(model_class, path: Path, *, attention_dropout: float | None = None, hidden_dropout: float | None = None,
               training: bool = False, **kwargs: Any) -> nn.Module:
    """Load weights (safetensors only, no remote code). Attention on a CPU: SDPA, except for training
    on a CPU with native bf16 (`training=True`), where eager attention measured faster for these model
    sizes with bf16 autocast and padding masks (MiniLM-L6 CoNLL-2003 step 262 vs 379 ms on an AMX
    Xeon); dev passes during such training switch to SDPA (`inference_attention`), which runs a
    forward 1.3x faster there (CoNLL-2003 dev 3.8-3.9 s vs 4.7-5.5 s). On an fp32-only CPU SDPA
    trains at the same speed and runs 11% faster forwards. An ONNX export switches back to eager
    (`export.onnx`). Decoders (the generation task) ask for SDPA through `model_kwargs`: at their
    sequence lengths eager attention's stored probabilities cost more memory and time than they save."""
    from transformers import AutoConfig

    quiet_transformers()
    try:
        config = AutoConfig.from_pretrained(str(path), **LOCAL_ONLY)
        if attention_dropout is not None:
            for key in ("attention_probs_dropout_prob", "attention_dropout"):
                if hasattr(config, key):
                    kwargs[key] = attention_dropout
        if hidden_dropout is not None:
            for key in HIDDEN_DROPOUT_KEYS:
                if hasattr(config, key):
                    kwargs[key] = hidden_dropout
        if not torch.cuda.is_available():
            kwargs.setdefault("attn_implementation", training_attention() if training else "sdpa")
        return model_class.from_pretrained(str(path), use_safetensors=True, **LOCAL_ONLY, **kwargs)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load a model from {path}: {err}") from None


def training_attention() -> str:
    """The attention a CPU trains encoders with: eager where bf16 is native, else SDPA (see load_model)."""
    return "eager" if bf16_supported(torch.device("cpu")) else "sdpa"


@contextmanager
def inference_attention(model) -> Iterator[None]:
    """Run `model` (loaded for training with eager attention, see `load_model`) with SDPA inside the
    block, as a model loaded for prediction runs, and switch back after. Models that cannot switch
    stay as they are."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if torch.cuda.is_available() or getattr(config, "_attn_implementation", None) != "eager" or training_attention() != "eager":
        yield
        return
    try:
        base.set_attn_implementation("sdpa")
    except (ValueError, AttributeError, ImportError):
        yield
        return
    try:
        yield
    finally:
        base.set_attn_implementation("eager")


def _linear_names(model: nn.Module) -> list[str]:
    """Leaf names of the Linear layers of the encoder (not the task head): the LoRA targets."""
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and not any(part in OUTPUT_NAMES for part in name.split(".")):
            names.add(name.split(".")[-1])
    return sorted(names)


def peft_config(method: str, task_type: str, settings, model: nn.Module):
    """The peft config for a method (`task_type`: a peft TaskType name, from the task's spec); the
    task head is always trained (modules_to_save)."""
    from peft import IA3Config, LoraConfig, PrefixTuningConfig, TaskType

    task_type = TaskType[task_type]
    heads = [n for n in HEAD_NAMES if hasattr(model, n)]
    if method == "lora":
        return LoraConfig(task_type=task_type, r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                          target_modules=settings.target_modules or _linear_names(model), modules_to_save=heads)
    if method == "ia3":
        kwargs = {}
        if settings.target_modules:
            kwargs = {"target_modules": settings.target_modules, "feedforward_modules": []}
        return IA3Config(task_type=task_type, modules_to_save=heads, **kwargs)
    if method == "prefix":
        return PrefixTuningConfig(task_type=task_type, num_virtual_tokens=settings.num_virtual_tokens)
    raise UserError(f"unknown method '{method}'; available: full, lora, ia3, prefix")


def wrap_peft(model: nn.Module, method: str, task_type: str, settings) -> nn.Module:
    from peft import get_peft_model

    try:
        return get_peft_model(model, peft_config(method, task_type, settings, model))
    except ValueError as err:
        raise UserError(f"method '{method}' cannot be applied to this model: {err}. Set peft.target_modules.") from None


def count_parameters(model: nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def freeze_word_embeddings(model: nn.Module) -> None:
    emb = model.get_input_embeddings()
    if emb is not None:
        emb.weight.requires_grad_(False)


def uses_bf16(precision: str, device: torch.device) -> bool:
    """Whether training.precision means bf16 autocast on `device` (auto: where it has native bf16 units).
    Training, the few-shot stage, dev and test scoring and the Predictor all decide it here."""
    return precision == "bf16" or (precision == "auto" and bf16_supported(device))


def bf16_supported(device: torch.device) -> bool:
    """bf16 autocast pays off only with native bf16 units (AVX512-BF16/AMX on CPU, Ampere+ GPUs)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
