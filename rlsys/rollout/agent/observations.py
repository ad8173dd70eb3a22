"""Observation text -> token ids, once: through the chat template's tool role when there is one.

With a chat template that renders a `tool` message, the ids are the template's text for that
message plus the next assistant turn's generation prompt (verl's delta trick: render
[user, assistant, tool] with the generation prompt, minus the rendering of [user, assistant]).
When the model's turn did not end with the end-of-turn token, the template's turn closer
(e.g. "<|im_end|>\n") comes first; when it did, only what follows that token ("\n").
Without a template (the embedded character tokenizer), the observation text is tokenised as is.
"""

from __future__ import annotations

_USER, _ASSISTANT = "rlsys-user", "rlsys-assistant"


class ObservationEncoder:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.eos_text = tokenizer.eos_token or ""
        self.template = self._probe_template()

    def _render(self, messages: list[dict], generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)

    def _probe_template(self) -> tuple[str, str] | None:
        """(text after the assistant content, i.e. the turn closer) or None without a usable tool role."""
        if not getattr(self.tokenizer, "chat_template", None):
            return None
        base = [{"role": "user", "content": _USER}, {"role": "assistant", "content": _ASSISTANT}]
        try:
            prefix = self._render(base, False)
            probe = self._render(base + [{"role": "tool", "content": "rlsys-probe"}], True)
        except Exception:  # noqa: BLE001 -- a template without a tool role: plain text
            return None
        if not probe.startswith(prefix) or "rlsys-probe" not in probe[len(prefix):] or _ASSISTANT not in prefix:
            return None
        closer = prefix[prefix.rindex(_ASSISTANT) + len(_ASSISTANT):]
        return closer, prefix

    def text(self, observation: str, turn_ended_with_eos: bool) -> str:
        """The text that is tokenised for `observation`."""
        if self.template is None:
            return observation
        closer, prefix = self.template
        base = [{"role": "user", "content": _USER}, {"role": "assistant", "content": _ASSISTANT}]
        delta = self._render(base + [{"role": "tool", "content": observation}], True)[len(prefix):]
        if turn_ended_with_eos and self.eos_text and closer.startswith(self.eos_text):
            closer = closer[len(self.eos_text):]
        return closer + delta

    def encode(self, observation: str, turn_ended_with_eos: bool) -> list[int]:
        return self.tokenizer(self.text(observation, turn_ended_with_eos), add_special_tokens=False)["input_ids"]
