"""Reader for generation data: JSON Lines with a prompt and a completion, or a chat.

    {"prompt": "Write a function that ...", "completion": "def f(...): ..."}
    {"messages": [{"role": "system", "content": "..."}, {"role": "user", "content": "..."},
                  {"role": "assistant", "content": "..."}]}

Field names come from the config (data.prompt_field / completion_field / messages_field). Every bad
row is reported at once with its `file:line`; nothing is silently dropped. `mbpp:train` (and
`mbpp:validation`, `mbpp:test`) read the MBPP benchmark file of the shared data directly, as
instruction/completion pairs (see `lmforge.codeeval.benchmarks.mbpp_training_pairs`).
"""

from __future__ import annotations

from pathlib import Path

from lmforge.data.text_files import check_file, json_type_name, parse_json_line, shown, stripped_lines, surrogate_problem
from lmforge.data.types import ChatExample
from lmforge.errors import ProblemCollector, UserError

ROLES = ("system", "user", "assistant")
BENCHMARK_PREFIX = "mbpp:"


def read_generation(path: str | Path, *, prompt_field: str = "prompt", completion_field: str = "completion",
                    messages_field: str = "messages", require_completion: bool = True) -> list[ChatExample]:
    """Examples from a JSONL file (or an `mbpp:SPLIT` name). Raises DataError listing bad rows."""
    if str(path).startswith(BENCHMARK_PREFIX):
        return _read_mbpp(str(path)[len(BENCHMARK_PREFIX):])
    if Path(path).suffix.lower() not in (".jsonl", ".json"):
        raise UserError(f"{path}: generation data is JSON Lines (one object per line, .jsonl) with "
                        f"'{prompt_field}'/'{completion_field}' or '{messages_field}'")
    check_file(path)
    problems = ProblemCollector()
    examples: list[ChatExample] = []
    for number, line in stripped_lines(path):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        row, problem = parse_json_line(where, line)
        if problem is not None:
            problems.add(problem)
            continue
        if not isinstance(row, dict):
            problems.add(f"{where}: expected a JSON object, found {json_type_name(row)}")
            continue
        example = _example(row, where, prompt_field, completion_field, messages_field, require_completion, problems)
        if example is not None:
            examples.append(example)
    problems.raise_if_any()
    if not examples:
        raise UserError(f"{path}: no examples (the file is empty)")
    return examples


def _example(row: dict, where: str, prompt_field: str, completion_field: str, messages_field: str,
             require_completion: bool, problems: ProblemCollector) -> ChatExample | None:
    if messages_field in row:
        messages = row[messages_field]
        if not isinstance(messages, list) or not messages:
            problems.add(f"{where}: '{messages_field}' must be a non-empty list of {{role, content}} objects")
            return None
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or set(message) - {"role", "content", "name"} or "role" not in message or "content" not in message:
                problems.add(f"{where}: {messages_field}[{i}] must be an object with 'role' and 'content'")
                return None
            if message["role"] not in ROLES:
                problems.add(f"{where}: {messages_field}[{i}].role is {shown(repr(message['role']))}; expected one of {', '.join(ROLES)}")
                return None
            if not isinstance(message["content"], str):
                problems.add(f"{where}: {messages_field}[{i}].content must be a string")
                return None
            problem = surrogate_problem(where, message["content"], f"{messages_field}[{i}].content")
            if problem is not None:
                problems.add(problem)
                return None
        if require_completion and not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
            problems.add(f"{where}: the chat has no assistant message with content: nothing to learn from")
            return None
        return ChatExample(messages=[{"role": m["role"], "content": m["content"]} for m in messages], source=where)
    prompt = row.get(prompt_field)
    if not isinstance(prompt, str) or not prompt.strip():
        problems.add(f"{where}: missing or empty '{prompt_field}' (or give a chat in '{messages_field}'); "
                     f"keys found: {', '.join(shown(key) for key in row) or 'none'}")
        return None
    problem = surrogate_problem(where, prompt, f"'{prompt_field}'")
    if problem is not None:
        problems.add(problem)
        return None
    completion = row.get(completion_field)
    if completion is None and not require_completion:
        return ChatExample(messages=[{"role": "user", "content": prompt}], source=where)
    if not isinstance(completion, str) or not completion.strip():
        problems.add(f"{where}: missing or empty '{completion_field}'")
        return None
    problem = surrogate_problem(where, completion, f"'{completion_field}'")
    if problem is not None:
        problems.add(problem)
        return None
    return ChatExample(messages=[{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}], source=where)


def _read_mbpp(split: str) -> list[ChatExample]:
    from lmforge.codeeval.benchmarks import mbpp_training_pairs

    try:
        pairs = mbpp_training_pairs(split=split)
    except (TypeError, ValueError) as err:
        raise UserError(f"{BENCHMARK_PREFIX}{split}: {err}") from None
    return [ChatExample(messages=[{"role": "user", "content": p["prompt"]}, {"role": "assistant", "content": p["completion"]}],
                        source=f"{BENCHMARK_PREFIX}{split}:{p.get('task_id', i)}") for i, p in enumerate(pairs)]
