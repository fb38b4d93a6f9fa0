"""Chat formatting: a user prompt (and optionally an assistant completion) to token ids.

Uses the tokenizer's own chat template, with one user turn and no system message (the convention of
SafeSeek's code and of Arditi et al.; the other methods' conventions: docs/choices.md, "Chat
format"); a template that writes a default system prompt when none is given (Qwen2.5's) keeps it. A tokenizer without a template falls back to plain ``user: ...`` / ``assistant: ...``
lines, with a warning.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

FALLBACK_TEMPLATE = "user: {prompt}\nassistant:"


@dataclass
class ChatFormatter:
    """Formats prompts for one tokenizer. ``prompt_ids`` ends where the assistant's answer starts."""

    tokenizer: Any
    use_template: bool = field(init=False)

    def __post_init__(self) -> None:
        self.use_template = bool(getattr(self.tokenizer, "chat_template", None))
        if not self.use_template:
            warnings.warn(
                "the tokenizer has no chat template; prompts are formatted as plain "
                f"{FALLBACK_TEMPLATE!r} lines",
                stacklevel=3,
            )

    def prompt_text(self, prompt: str) -> str:
        """The text of a one-turn chat up to the start of the assistant's answer."""
        if not self.use_template:
            return FALLBACK_TEMPLATE.format(prompt=prompt)
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )

    def _encode(self, text: str) -> list[int]:
        # Chat templates already write any BOS/special tokens into the text.
        return list(self.tokenizer(text, add_special_tokens=not self.use_template).input_ids)

    def prompt_ids(self, prompt: str) -> list[int]:
        return self._encode(self.prompt_text(prompt))

    def post_instruction_length(self, probes: tuple[str, ...] = ("Hello", "How do I bake bread?")) -> int:
        """How many tokens the template writes after the user's text: the post-instruction positions.

        For each probe prompt, the templated text is cut right after the user's text and tokenized;
        the tokens of the full prompt beyond the longest prefix it shares with that cut are the
        template's own. Counted in context, so a token that the tokenizer merges across the end of
        the user's text counts as post-instruction; the smallest count over the probes is returned.
        """
        counts = []
        for probe in probes:
            text = self.prompt_text(probe)
            full, head = self.prompt_ids(probe), self._encode(text[: text.rfind(probe) + len(probe)])
            shared = next((i for i, (a, b) in enumerate(zip(full, head)) if a != b), min(len(full), len(head)))
            counts.append(len(full) - shared)
        return min(counts)

    def pair_ids(self, prompt: str, completion: str) -> tuple[list[int], list[int]]:
        """Token ids of the prompt part and of the completion part (with the end-of-turn tokens).

        The completion is cut from the full two-turn template when the prompt part is a prefix of
        it (so end-of-turn tokens come out exactly as the template writes them); otherwise the
        completion is tokenized on its own and the EOS token appended.
        """
        prompt_ids = self.prompt_ids(prompt)
        if self.use_template:
            full_text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}], tokenize=False
            )
            full_ids = self._encode(full_text)
            if full_ids[: len(prompt_ids)] == prompt_ids and len(full_ids) > len(prompt_ids):
                return prompt_ids, full_ids[len(prompt_ids) :]
        completion_ids = list(self.tokenizer(" " + completion, add_special_tokens=False).input_ids)
        if self.tokenizer.eos_token_id is not None:
            completion_ids.append(int(self.tokenizer.eos_token_id))
        return prompt_ids, completion_ids
