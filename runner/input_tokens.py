"""Input tokens of a request line, estimated at validation for the per-key enqueued-token caps (#16).

The API process has no tokenizer: `tokenizers` is not in its install (locks/base.txt), and loading
each model's tokenizer there would cost memory and seconds per model for a number that only gates
a quota. So the count is an estimate, the one OpenAI documents for English text: about 4 bytes per
token, i.e. the UTF-8 bytes of the prompt's text / 4, rounded up, per line. Prompts given as token
ids (completions `prompt`, embeddings `input`) count exactly, one per id.

The text is what the model reads: chat `messages` (and `tools`), completions `prompt` and `suffix`,
embeddings `input`, responses `input` and `instructions`. Media parts (image_url, input_audio,
file: their base64 would count as thousands of "tokens") and the JSON around the text (keys,
custom_id, sampling parameters) are not counted; roles and part types are, which stands for the chat
template's few tokens per message. Real tokenizers give 2-6 bytes per token on other text (code,
CJK: fewer bytes per token), so a cap is a budget of about this size, not an exact bill.
"""

from __future__ import annotations

from typing import Any

BYTES_PER_TOKEN = 4
PROMPT_FIELDS = ("messages", "tools", "prompt", "suffix", "input", "instructions")
MEDIA_KEYS = frozenset({"image_url", "input_audio", "file", "file_data", "image", "video_url", "audio_url"})


def _walk(value: Any) -> tuple[int, int]:
    """(UTF-8 bytes of the text, token ids) in `value`: a loop over a stack, not a call per item,
    since this runs for every line at validation."""
    text = ids = 0
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            text += len(v) if v.isascii() else len(v.encode("utf-8"))
        elif isinstance(v, dict):
            stack.extend(x for k, x in v.items() if k not in MEDIA_KEYS)
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, int) and not isinstance(v, bool):
            ids += 1  # a token id
    return text, ids


def estimate(body: dict[str, Any]) -> int:
    """The estimated input tokens of one line's `body` (see the module's docstring)."""
    text = ids = 0
    for name in PROMPT_FIELDS:
        v = body.get(name)
        if v is not None:
            t, i = _walk(v)
            text += t
            ids += i
    return -(-text // BYTES_PER_TOKEN) + ids
