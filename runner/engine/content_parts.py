"""Chat content parts that are not text (images, audio, video, files), and the one error for a model
that cannot take them.

Every backend checks a chat line's parts here before anything else looks at them: a text-only model
answers an image part with a 400 that says the model has no vision, on every backend alike. On
vLLM this check also runs before vLLM's own chat parser, which would otherwise fetch an
`image_url` from the network for a model that could never use it.
"""

from __future__ import annotations

from typing import Any

from runner.errors import LineError, clip

# OpenAI's chat part types, plus vLLM's extra media kinds; "text" (and "refusal", which an
# assistant turn may carry) are the text parts
TEXT_PARTS = ("text", "input_text", "output_text", "refusal")
MEDIA_PARTS = ("image_url", "input_image", "image_embeds", "image_pil", "input_audio", "audio_url",
               "video_url", "file", "input_file")


def first_media_part(messages: Any) -> tuple[str, str] | None:
    """(param, part type) of the first media part of a chat line's messages, else None."""
    if not isinstance(messages, list):
        return None
    for i, m in enumerate(messages):
        content = m.get("content") if isinstance(m, dict) else None
        if not isinstance(content, list):
            continue
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if isinstance(kind, str) and kind in MEDIA_PARTS:
                return f"messages[{i}].content[{j}].type", kind
    return None


def no_vision(model: str, param: str, kind: str) -> LineError:
    what = "audio" if "audio" in kind else "video" if "video" in kind else "file" if "file" in kind else "vision"
    message = (f"model {clip(model, quote=True)} has no {what} input: it takes text parts only, and "
               f"'{param}' is a {clip(kind, quote=True)} part. Send it to a multimodal model (on the vLLM backend).")
    return LineError(message, status=400, param=param, code="model_not_multimodal")


def check_text_only(model: str, messages: Any) -> None:
    """Raise no_vision for the first media part, if any."""
    media = first_media_part(messages)
    if media is not None:
        raise no_vision(model, *media)
