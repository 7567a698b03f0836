"""`Generator`: a decoder language model loaded for text generation. The CLI (`lmforge generate`),
the server (`POST /v1/generate`) and the code benchmarks all generate through it.

    g = Generator.from_pretrained("smollm2-135m")          # or a run folder, or a local HF folder
    g.generate(["What is the capital of France?"], max_new_tokens=32)
    # [{'text': 'The capital of France is Paris.', 'tokens': 8, 'finish_reason': 'stop'}]
    for piece in g.stream("Tell me a joke."):
        print(piece, end="", flush=True)

Prompts are wrapped in the tokenizer's chat template (one user turn plus the assistant prefix)
when it has one, batched with left padding, and decoded with a KV cache: greedily at temperature 0,
else by sampling (temperature, nucleus top_p). Stop strings cut the text at their first occurrence
and end a sequence early; the batch ends when every sequence has hit a stop string, an
end-of-sequence token or max_new_tokens.

Speed on CPU (measured with bench/generation_speed.py): weights cast to bf16 where the CPU has
native bf16 (faster than fp32 and than bf16 autocast, which re-casts every weight each step), SDPA
attention (faster than eager for decoding), and 4-bit kernels for layers whose weights lie exactly
on a 4-bit grid (see lowbit.py; the packaged SmolLM2 does).
"""

from __future__ import annotations

import math
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from ..errors import UserError
from ..models.build import bf16_supported, load_model, load_tokenizer
from .refill import prompt_learning
from .sources import locate, repaired_cache, weights_version
from .stops import Cancelled, StopStrings, first_stop, pieces_until_stop

MAX_NEW_TOKENS = 8192
MIN_TEMPERATURE = 1e-4  # sampling below this is greedy in all but name, and 1/T overflows the logits
ATTENTION = "sdpa"  # measured faster than eager for decoding (bench/generation_speed.py)


class Generator:
    def __init__(self, model, tokenizer, *, source: Path, name: str, bf16: bool, packed: Sequence[str] = (),
                 version: str | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.source = source  # the model folder the weights came from
        self.name = name
        self.bf16 = bf16
        self.packed = list(packed)  # layers running on exact 4-bit kernels
        self.device = next(model.parameters()).device
        self.version = version or name
        self.max_positions = getattr(model.config, "max_position_embeddings", None)
        self.eos_ids = _eos_ids(model, tokenizer)
        self._lock = threading.Lock()  # one generation at a time: the model and its RNG are shared
        self.engine = None  # the continuous batch (RefillEngine or StreamEngine) once `start_continuous` is called (the server)

    # -- continuous batching (the server) ------------------------------------------------------
    def start_continuous(self, max_rows: int = 8, tokens_per_row: int = 2048) -> None:
        """Greedy streams (and `generate(..., continuous=True)`) from now on share one continuous batch of
        up to `max_rows` rows, whatever thread they come from: a finished request's row takes the next
        one at once. Sampled requests keep the static path (a seed reproduces a batch there). The batch
        runs on a dense cache (refill_engine.py) where the model allows, else on transformers' paged
        manager (continuous.py)."""
        from .refill import supported

        if prompt_learning(self.model):  # prefix tuning: its forward brings its own cache; static batches only
            return
        if self.engine is None and supported(self.model):
            from .refill_engine import RefillEngine

            self.engine = RefillEngine(self.model, eos_ids=self.eos_ids, max_rows=max_rows)
        elif self.engine is None:
            from .continuous import StreamEngine

            config = self._generation_config(256, 0.0, 1.0, False)
            self.engine = StreamEngine(self.model, config, max_rows=max_rows, tokens_per_row=tokens_per_row)

    def _usable_engine(self):
        """The continuous batch, unless this is its own thread (a job there cannot wait for the batch it blocks)."""
        engine = self.engine
        return None if engine is None or engine.on_engine_thread() else engine

    def stop_continuous(self) -> None:
        if self.engine is not None:
            engine, self.engine = self.engine, None
            engine.close()

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    @classmethod
    def from_pretrained(cls, source: str | Path, *, bf16: bool | None = None, device: str | torch.device | None = None,
                        quantize: str = "auto") -> "Generator":
        """Load a run folder (its `model/`), a packaged model short name or a local Hugging Face
        folder. bf16: None = where the hardware has native bf16. quantize: "auto" runs layers whose
        weights lie exactly on a 4-bit grid with 4-bit kernels (CPU + bf16 only; lossless), "none"
        never does."""
        from transformers import AutoModelForCausalLM

        if quantize not in ("auto", "none"):
            raise UserError(f"quantize={quantize!r}: use 'auto' or 'none'")
        folder, name, adapter = locate(source)
        try:
            tokenizer = load_tokenizer(folder)
            model = load_model(AutoModelForCausalLM, folder, attn_implementation=ATTENTION)
        except Exception:  # noqa: BLE001 - e.g. a SafetensorError from a damaged cached conversion
            if not repaired_cache(source):
                raise
            tokenizer = load_tokenizer(folder)
            model = load_model(AutoModelForCausalLM, folder, attn_implementation=ATTENTION)
        if adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter), local_files_only=True)
        device = torch.device(device) if device is not None else torch.device("cpu")
        bf16 = bf16_supported(device) if bf16 is None else bf16
        packed = []
        if quantize == "auto" and bf16 and device.type == "cpu" and adapter is None:
            from .lowbit import pack_exact_lowbit

            packed = pack_exact_lowbit(model)
        model = model.to(device=device, dtype=torch.bfloat16 if bf16 else torch.float32)
        return cls(model, tokenizer, source=folder, name=name, bf16=bf16, packed=packed, version=weights_version(name, folder))

    # -- inputs ----------------------------------------------------------------------------
    def encode(self, prompt: str, chat: bool = True) -> list[int]:
        """Token ids of a prompt: one user turn of the chat template plus the assistant prefix when
        the tokenizer has a template and `chat`, else the plain text with the tokenizer's specials."""
        tok = self.tokenizer
        if chat and getattr(tok, "chat_template", None):
            ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True)
            return list(ids["input_ids"] if not isinstance(ids, list) else ids)
        return tok(prompt, add_special_tokens=True)["input_ids"]

    # -- generation ------------------------------------------------------------------------
    def generate(self, prompts: Sequence[str], *, max_new_tokens: int = 128, temperature: float = 0.0, top_p: float = 1.0,
                 stop: Sequence[str] | str | None = None, seed: int | None = None, chat: bool = True, batch_size: int = 8,
                 ignore_eos: bool = False, continuous: bool = False, on_done: Callable[[int], None] | None = None) -> list[dict]:
        """One completion per prompt: {"text", "tokens" (generated, including the end token),
        "finish_reason": "stop" (end token or stop string) or "length" (max_new_tokens)}.
        Prompts of similar length are batched together; `seed` makes sampling reproducible for the
        same prompts and batch_size. `ignore_eos` generates exactly max_new_tokens (benchmarks).
        `continuous` (greedy only; ignored when sampling or with ignore_eos): up to `batch_size` prompts
        decode at once and a finished one is replaced by the next at once (continuous.py) instead of
        batches waiting for their longest completion; with `start_continuous` they join its shared batch.
        `on_done(i)` is called as prompt i's completion is known (progress)."""
        if isinstance(prompts, str):
            raise UserError("generate() takes a list of prompts, not a single string")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise UserError(f"batch_size={batch_size!r}: give a positive integer")
        stops = self._check(prompts, max_new_tokens, temperature, top_p, stop, seed)
        encoded = [self._encode_checked(p, i, chat, max_new_tokens) for i, p in enumerate(prompts)]
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))  # similar lengths share a batch
        results: list[dict] = [{}] * len(encoded)
        engine = self._usable_engine()
        if continuous and engine is not None and temperature == 0 and not ignore_eos:
            done = engine.run_many(encoded, max_new_tokens=max_new_tokens, eos_ids=self.eos_ids, stops=stops, decode=self._decode,
                                   ignore_eos=ignore_eos)
            for i in range(len(done)) if on_done else ():
                on_done(i)
            return [self._result(d.tokens, stops, d.stopped_at, max_new_tokens, ignore_eos) for d in done]
        if continuous and temperature == 0 and len(encoded) > 1 and not ignore_eos and not prompt_learning(self.model):
            from .refill import generate_refill, supported

            with self._lock, torch.inference_mode():
                if supported(self.model):
                    done = generate_refill(self.model, encoded, max_new_tokens=max_new_tokens, eos_ids=self.eos_ids, stops=stops,
                                           decode=self._decode, max_rows=batch_size, on_done=on_done)
                else:
                    from .continuous import generate_continuous

                    done = generate_continuous(self.model, self._generation_config(max_new_tokens, temperature, top_p, ignore_eos),
                                               encoded, max_new_tokens=max_new_tokens, eos_ids=self.eos_ids, stops=stops,
                                               decode=self._decode, max_rows=batch_size, on_done=on_done)
            return [self._result(d.tokens, stops, d.stopped_at, max_new_tokens, ignore_eos) for d in done]
        with self._lock, _seeded(seed):
            for start in range(0, len(order), batch_size):
                chunk = order[start:start + batch_size]
                for i, result in zip(chunk, self._generate_batch([encoded[i] for i in chunk], max_new_tokens, temperature,
                                                                 top_p, stops, ignore_eos)):
                    results[i] = result
                    if on_done:
                        on_done(i)
        return results

    def stream(self, prompt: str, *, max_new_tokens: int = 128, temperature: float = 0.0, top_p: float = 1.0,
               stop: Sequence[str] | str | None = None, seed: int | None = None, chat: bool = True) -> Iterator[str]:
        """The completion of one prompt as text pieces, yielded as they are generated (text that
        could still become a stop string is held back until it is known not to). The arguments are
        checked now; closing the iterator early stops the generation."""
        if not isinstance(prompt, str):
            raise UserError("stream() takes one prompt (a string)")
        stops = self._check([prompt], max_new_tokens, temperature, top_p, stop, seed)
        ids = self._encode_checked(prompt, 0, chat, max_new_tokens)
        engine = self._usable_engine()
        if engine is not None and temperature == 0:
            return self._engine_pieces(engine, ids, max_new_tokens, stops)
        return self._pieces(ids, max_new_tokens, temperature, top_p, stops, seed)

    def stream_into(self, emit: Callable[[str], None], prompt: str, *, max_new_tokens: int = 128, temperature: float = 0.0,
                    top_p: float = 1.0, stop: Sequence[str] | str | None = None, seed: int | None = None, chat: bool = True) -> None:
        """`stream()` pushed instead of pulled: each text piece goes to `emit` as it is known. Off the
        continuous batch, the generation and `emit` run on the calling thread (the server's model thread,
        which owns the model's OpenMP pool; a second thread running torch would slow both:
        lmforge/threads.py). If `emit` raises, the generation stops and its error is raised here."""
        from .row_streams import RowStreamer

        if not isinstance(prompt, str):
            raise UserError("stream_into() takes one prompt (a string)")
        stops = self._check([prompt], max_new_tokens, temperature, top_p, stop, seed)
        ids = self._encode_checked(prompt, 0, chat, max_new_tokens)
        engine = self._usable_engine()
        if engine is not None and temperature == 0:
            pieces = self._engine_pieces(engine, ids, max_new_tokens, stops)
            try:
                for piece in pieces:
                    emit(piece)  # a receiver that fails (client gone) ends the request here
            finally:
                pieces.close()
            return
        cancel = threading.Event()
        streamer = RowStreamer(self._decode, [emit], stops, self.eos_ids, cancel=cancel)
        with self._lock, _seeded(seed):
            self._generate_batch([ids], max_new_tokens, temperature, top_p, stops, False, streamer=streamer, cancel=cancel)
        if streamer.failures:
            raise streamer.failures[0]

    def check_prompt(self, prompt: str, *, max_new_tokens: int, chat: bool = True) -> None:
        """A UserError if this prompt cannot be generated (empty, or longer than the model's positions)."""
        self._encode_checked(prompt, 0, chat, max_new_tokens)

    def stream_batch_into(self, emits: Sequence[Callable[[str], None]], prompts: Sequence[str], *, max_new_tokens: int = 128,
                          stop: Sequence[str] | str | None = None, chat: bool = True) -> None:
        """Greedy completions of `prompts` decoded as one static batch on the calling thread, each row's
        text pieces pushed to its `emits[i]` as they are known (generation/row_streams.py)."""
        from .row_streams import RowStreamer

        stops = self._check(list(prompts), max_new_tokens, 0.0, 1.0, stop, None)
        batch = [self._encode_checked(p, i, chat, max_new_tokens) for i, p in enumerate(prompts)]
        cancel = threading.Event()  # set once every receiver is gone
        streamer = RowStreamer(self._decode, emits, stops, self.eos_ids, cancel=cancel)
        with self._lock:
            self._generate_batch(batch, max_new_tokens, 0.0, 1.0, stops, False, streamer=streamer, cancel=cancel)

    def _engine_pieces(self, engine, ids: list[int], max_new_tokens: int, stops: list[str]) -> Iterator[str]:
        """Text pieces of a greedy request on the continuous batch: the text so far is decoded after every
        token; what could still become a stop string, or ends in a partial character, is held back."""
        tokens = engine.tokens(ids, max_new_tokens=max_new_tokens, eos_ids=self.eos_ids)
        try:
            yield from pieces_until_stop((self._decode(generated) for generated in tokens), stops)
        finally:
            tokens.close()

    def _pieces(self, ids: list[int], max_new_tokens: int, temperature: float, top_p: float, stops: list[str],
                seed: int | None) -> Iterator[str]:
        """Generation on a worker thread feeding a TextIteratorStreamer; this side cuts at stop strings."""
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        cancel = threading.Event()
        failure: list[BaseException] = []

        def work() -> None:
            try:
                with self._lock, _seeded(seed):
                    self._generate_batch([ids], max_new_tokens, temperature, top_p, stops, False, streamer=streamer, cancel=cancel)
            except BaseException as err:  # noqa: BLE001 - re-raised in the consuming thread
                failure.append(err)
                streamer.end()

        worker = threading.Thread(target=work, name="lmforge-generate", daemon=True)
        worker.start()
        try:
            yield from pieces_until_stop(_growing(streamer), stops)
        finally:
            cancel.set()
            worker.join()
            if failure:
                raise failure[0]

    def _generate_batch(self, batch: list[list[int]], max_new_tokens: int, temperature: float, top_p: float,
                        stops: list[str], ignore_eos: bool, streamer=None, cancel: threading.Event | None = None) -> list[dict]:
        from transformers import StoppingCriteriaList

        width = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), width), self.tokenizer.pad_token_id, dtype=torch.long)  # [B, L], left-padded
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            attention_mask[row, width - len(ids):] = 1
        stopper = StopStrings(self.tokenizer, stops, width) if stops else None
        criteria = StoppingCriteriaList([c for c in (stopper, Cancelled(cancel) if cancel else None) if c is not None])
        config = self._generation_config(max_new_tokens, temperature, top_p, ignore_eos)
        with torch.inference_mode():
            out = self.model.generate(input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device),
                                      generation_config=config, stopping_criteria=criteria, streamer=streamer)
        new = out[:, width:].tolist()  # [B, <= max_new_tokens]
        return [self._result(row, stops, stopper.stopped_at.get(r) if stopper else None, max_new_tokens, ignore_eos)
                for r, row in enumerate(new)]

    def _result(self, ids: list[int], stops: list[str], stopped_at: int | None, max_new_tokens: int, ignore_eos: bool) -> dict:
        end = len(ids)
        if not ignore_eos:
            end = next((i + 1 for i, t in enumerate(ids) if t in self.eos_ids), end)
        if stopped_at is not None:
            end = min(end, stopped_at)
        text = self.tokenizer.decode(ids[:end], skip_special_tokens=True)
        cut = first_stop(text, stops)
        if cut is not None:
            return {"text": text[:cut], "tokens": end, "finish_reason": "stop"}
        ended = not ignore_eos and end > 0 and ids[end - 1] in self.eos_ids
        return {"text": text, "tokens": end, "finish_reason": "stop" if ended or end < max_new_tokens else "length"}

    def _generation_config(self, max_new_tokens: int, temperature: float, top_p: float, ignore_eos: bool):
        from transformers import GenerationConfig

        sample = temperature > 0
        # explicit values: unset ones would be filled from the model's generation_config and from
        # transformers' defaults (top_k=50), which would change what temperature / top_p mean here
        return GenerationConfig(
            max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens if ignore_eos else 0, do_sample=sample,
            temperature=temperature if sample else 1.0, top_p=top_p if sample else 1.0, top_k=0, num_beams=1,
            num_return_sequences=1, use_cache=True, pad_token_id=self.tokenizer.pad_token_id, eos_token_id=sorted(self.eos_ids))

    # -- validation ------------------------------------------------------------------------
    def _check(self, prompts, max_new_tokens, temperature, top_p, stop, seed) -> list[str]:
        """Every problem with the arguments at once; returns the stop strings as a list."""
        problems = []
        if not isinstance(prompts, (list, tuple)) or not prompts:
            problems.append("prompts: give a non-empty list of strings")
        else:
            problems += [f"prompt {i}: expected a non-empty string, got {p!r:.40}" for i, p in enumerate(prompts)
                         if not isinstance(p, str) or not p.strip()][:5]
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
            problems.append(f"max_new_tokens={max_new_tokens!r}: give an integer from 1 to {MAX_NEW_TOKENS}")
        if (not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature < 0
                or 0 < temperature < MIN_TEMPERATURE):  # dividing logits by a tiny temperature overflows them
            problems.append(f"temperature={temperature!r}: give 0 (greedy) or a number from {MIN_TEMPERATURE} up")
        if not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
            problems.append(f"top_p={top_p!r}: give a number in (0, 1]")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            problems.append(f"seed={seed!r}: give a non-negative integer or None")
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if any(not isinstance(s, str) or not s for s in stops):
            problems.append(f"stop={stop!r}: stop sequences must be non-empty strings")
        if problems:
            raise UserError("invalid generation arguments:\n" + "\n".join(f"  - {p}" for p in problems))
        return stops

    def _encode_checked(self, prompt: str, index: int, chat: bool, max_new_tokens: int) -> list[int]:
        ids = self.encode(prompt, chat)
        if not ids:
            raise UserError(f"prompt {index} encodes to no tokens")
        if self.max_positions and len(ids) + max_new_tokens > self.max_positions:
            raise UserError(f"prompt {index} has {len(ids)} tokens; with max_new_tokens={max_new_tokens} that exceeds the "
                            f"model's {self.max_positions} positions. Shorten the prompt or lower max_new_tokens")
        return ids


def _growing(streamer) -> Iterator[str]:
    """The completion so far after each piece a TextIteratorStreamer hands over."""
    text = ""
    for piece in streamer:
        text += piece
        yield text


def _eos_ids(model, tokenizer) -> set[int]:
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


@contextmanager
def _seeded(seed: int | None):
    """Seed torch's RNG for the block and restore it afterwards (other users of the RNG are unaffected)."""
    if seed is None:
        yield
        return
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
