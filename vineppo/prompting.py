"""From a task's question to prompt token ids: the paper's template or the tokenizer's chat template.

Sits between Task (text only) and Engine (token ids only), docs/design.md:
- paper (default): `Task.prompt(row)` = `[MATH_TASK] Problem:\\n{query}\\n\\nSolution:`, encoded with
  BOS (`vineppo.tokens.encode_prompt`), as in the official code;
- chat (`prompt.chat: true`): messages = [optional system message, user message = the question
  with `prompt.instruction`], tokenized by `tokenizer.apply_chat_template(messages,
  add_generation_prompt=True)`: exactly the ids the model's template gives, nothing added.

Also here: building the task that grades (`make_task`: grader + custom fields + reasoning tags) and
the chat stop rule (`end_of_turn_token`: generation ends at the token that closes an assistant turn).
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

from vineppo.config import ConfigError, DataConfig, PromptConfig, TrainConfig
from vineppo.tasks import Row, Task, get_task
from vineppo.tasks.base import STOP_STRINGS
from vineppo.tokens import encode_prompt

log = logging.getLogger(__name__)


def chat_messages(question: str, cfg: PromptConfig) -> list[dict[str, str]]:
    """[system?, user]: the user message is the question and the instruction, a blank line apart."""
    parts = [question, cfg.instruction] if cfg.instruction_after_question else [cfg.instruction, question]
    messages = [{"role": "system", "content": cfg.system}] if cfg.system else []
    messages.append({"role": "user", "content": "\n\n".join(p for p in parts if p)})
    return messages


def _ids(encoded: Any) -> list[int]:
    # apply_chat_template(tokenize=True) returns a list, or a BatchEncoding in newer transformers.
    if hasattr(encoded, "keys") and "input_ids" in encoded:
        encoded = encoded["input_ids"]
    return [int(t) for t in encoded]


def require_chat_template(tokenizer) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"prompt.chat is true but the tokenizer ({getattr(tokenizer, 'name_or_path', '?')}) "
                         f"has no chat template; use an instruct model's tokenizer or set prompt.chat=false")


def generation_prompt(tokenizer) -> str:
    """The text the chat template appends for `add_generation_prompt=True` (e.g.
    `<|im_start|>assistant\\n`): every chat prompt ends with it."""
    require_chat_template(tokenizer)
    msgs = [{"role": "user", "content": "x"}]
    with_prompt = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    without = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
    if not with_prompt.startswith(without):
        raise ValueError("the chat template renders the conversation differently with add_generation_prompt")
    return with_prompt[len(without):]


def end_of_turn_token(tokenizer) -> str | None:
    """The special token the chat template writes right after an assistant message (e.g.
    `<|im_end|>`, `<|eot_id|>`): generation of a chat response stops there. None if unknown."""
    require_chat_template(tokenizer)
    marker = "ANSWER_END_PROBE"
    msgs = [{"role": "user", "content": "x"}, {"role": "assistant", "content": marker}]
    try:
        text = tokenizer.apply_chat_template(msgs, tokenize=False)
    except Exception:  # noqa: BLE001 - templates may reject this conversation; then we cannot tell
        return None
    at = text.rfind(marker)
    if at < 0:
        return None
    after = text[at + len(marker):]
    specials = sorted(set(tokenizer.all_special_tokens) | set(getattr(tokenizer, "added_tokens_encoder", {})),
                      key=len, reverse=True)
    stripped = after.lstrip()
    for tok in specials:
        if tok and stripped.startswith(tok):
            return tok
    return None


def end_of_turn_id(tokenizer) -> int:
    """The id of the template's end-of-turn token (`end_of_turn_token`), else the tokenizer's EOS."""
    eot = end_of_turn_token(tokenizer)
    return tokenizer.convert_tokens_to_ids(eot) if eot is not None else tokenizer.eos_token_id


def use_end_of_turn_as_eos(tokenizer) -> None:
    """Chat stop rule: make the tokenizer's EOS the template's end-of-turn token (a base model's
    tokenizer may say `<|endoftext|>` while its template closes turns with `<|im_end|>`). Both
    engines stop at the EOS and the trainer appends it to finished responses, so they then agree."""
    eot = end_of_turn_token(tokenizer)
    if eot is None or eot == tokenizer.eos_token:
        return
    log.info("chat prompts: EOS %r -> the template's end-of-turn token %r", tokenizer.eos_token, eot)
    tokenizer.eos_token = eot


class PromptBuilder:
    """Prompt text and token ids of a row, by the paper's template or the chat template."""

    def __init__(self, tokenizer, task: Task, cfg: PromptConfig | None = None) -> None:
        self.tokenizer = tokenizer
        self.task = task
        self.cfg = cfg or PromptConfig()
        if self.cfg.chat:
            require_chat_template(tokenizer)

    def messages(self, row: Row) -> list[dict[str, str]]:
        return chat_messages(self.task.query(row), self.cfg)

    def text(self, row: Row) -> str:
        """The prompt as text (chat: the rendered template, special tokens written out)."""
        if not self.cfg.chat:
            return self.task.prompt(row)
        return self.tokenizer.apply_chat_template(self.messages(row), tokenize=False, add_generation_prompt=True)

    def ids(self, row: Row) -> list[int]:
        if not self.cfg.chat:
            return encode_prompt(self.tokenizer, self.task.prompt(row))
        return _ids(self.tokenizer.apply_chat_template(self.messages(row), tokenize=True,
                                                       add_generation_prompt=True))

    def opens_reasoning(self) -> bool:
        """The chat template's generation prompt opens the reasoning block (`prompt.think_tags`)."""
        tags = self.cfg.think_tags
        return bool(self.cfg.chat and tags and generation_prompt(self.tokenizer).rstrip().endswith(tags[0]))

    def chat_target(self, row: Row) -> str:
        """Chat SFT: the assistant message after the generation prompt (the end-of-turn token
        follows it): the gold solution; when the generation prompt opened a reasoning block, the
        solution, the close tag, a blank line and the solution's last line (its final answer, e.g.
        `#### 18`), so the model learns to close the block and answer after it."""
        solution = self.task.gold_solution(row).strip()
        if not self.opens_reasoning():
            return solution
        return f"{solution}\n{self.cfg.think_tags[1]}\n\n{solution.splitlines()[-1].strip()}"

    def many(self, rows: Sequence[Row]) -> list[list[int]]:
        return [self.ids(r) for r in rows]


def uses_custom_fields(data: DataConfig) -> bool:
    return bool(data.question_field or data.answer_field or data.solution_field)


def make_task(data: DataConfig, prompt: PromptConfig | None = None, tokenizer=None,
              grading_mode: str = "official") -> Task:
    """The task that grades `data.task` with `grading_mode` ("official" | "math_verify"), reading the
    user's fields and answer format; with chat prompts and a tokenizer, also the reasoning-block
    rule (`vineppo.tasks.thinking`)."""
    from vineppo.tasks.gsm8k import GSM8KTask

    task = get_task(data.task, grading_mode=grading_mode)
    if data.answer_format != "hashes":
        if not isinstance(task, GSM8KTask):
            raise ConfigError(f"data.answer_format={data.answer_format!r} is for GSM8K-style tasks, not {data.task!r}")
        task.answer_format = data.answer_format
    if uses_custom_fields(data):
        from vineppo.tasks.custom import CustomFieldsTask

        task = CustomFieldsTask(task, data.question_field or task.query_field, data.answer_field,
                                data.solution_field)
    if prompt is not None and prompt.chat and prompt.think_tags and tokenizer is not None:
        from vineppo.tasks.thinking import ThinkingTask

        open_tag, close_tag = prompt.think_tags
        opened = PromptBuilder(tokenizer, task, prompt).opens_reasoning()
        task = ThinkingTask(task, open_tag, close_tag, opened_in_prompt=opened)
    return task


def stop_strings(cfg: TrainConfig) -> list[str]:
    """Stop strings for sampling: with chat prompts the paper's `\\n\\n\\nProblem:` (a property of
    its template) is dropped; the end-of-turn token ends chat responses."""
    if not cfg.prompt.chat:
        return list(cfg.sampling.stop)
    return [s for s in cfg.sampling.stop if s not in STOP_STRINGS]


def tiny_init_texts(task: Task, rows: Sequence[Row], cfg: PromptConfig) -> list[str]:
    """Texts to train a tiny tokenizer on: question (+ instruction) and solution, or the bare answer."""
    from vineppo.tasks.custom import MissingSolutionError

    out = []
    for r in rows:
        try:
            target = task.sft_target(r)
        except MissingSolutionError:
            target = f"\n\\boxed{{{task.gold_answer(r)}}}\n#### {task.gold_answer(r)}\n"
        head = "\n\n".join(m["content"] for m in chat_messages(task.query(r), cfg)) if cfg.chat else task.prompt(r)
        out.append(head + target)
    return out
