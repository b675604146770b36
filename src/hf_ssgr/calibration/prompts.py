"""R1-style prompts: the problem in the model's chat template, the generation prompt opening `<think>`.

The user turn is the problem followed by `PROMPT_SUFFIX`; when the template does not open `<think>` itself, it is
appended. The rendered text is encoded with `add_special_tokens=False` (the template already holds them).
"""

from __future__ import annotations

__all__ = ["PROMPT_SUFFIX", "THINK_OPEN", "render_prompt", "encode_prompt"]

PROMPT_SUFFIX = "Please reason step by step, and put your final answer within \\boxed{}."
THINK_OPEN = "<think>"


def render_prompt(
    tokenizer, problem: str, chat_template: str | None = None, chat_template_kwargs: dict | None = None
) -> str:
    """The R1-style prompt text: chat template, user turn = problem + instruction, generation prompt opening `<think>`.

    Args:
        tokenizer: a transformers tokenizer; its `chat_template` is used unless `chat_template` is given.
        problem (`str`): the problem statement.
        chat_template (`str`, *optional*): a Jinja template to use instead of the tokenizer's.
        chat_template_kwargs (`dict`, *optional*): extra arguments of `apply_chat_template`.
    """
    template = chat_template or getattr(tokenizer, "chat_template", None)
    if not template:
        raise ValueError(
            f"The tokenizer of this model has no chat template, so R1-style prompts cannot be rendered: set "
            f"tokenizer.chat_template, or pass CalibrationConfig(chat_template=...) (a Jinja template that ends the "
            f"generation prompt with '{THINK_OPEN}')."
        )
    messages = [{"role": "user", "content": f"{problem}\n{PROMPT_SUFFIX}"}]
    text = tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=True, **(chat_template_kwargs or {})
    )
    if not text.rstrip().endswith(THINK_OPEN):
        text = text + f"{THINK_OPEN}\n"
    return text


def encode_prompt(
    tokenizer, problem: str, chat_template: str | None = None, chat_template_kwargs: dict | None = None
) -> list[int]:
    """The token ids of [`render_prompt`] (encoded with `add_special_tokens=False`)."""
    return tokenizer(render_prompt(tokenizer, problem, chat_template, chat_template_kwargs), add_special_tokens=False)[
        "input_ids"
    ]
