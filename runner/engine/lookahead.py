"""Admission order: a feed's lines, reordered inside a bounded look-ahead (#16).

A batch runner sees its lines before it runs them, so it can choose the order they enter the engine
(BatchLLM, arXiv 2412.03594). Each feed of a generate model (feeder.py: one batch's lines for one
model) reads its lines through a Lookahead, which holds up to its share of the model's look-ahead,
orders what it holds, and hands the lines out in that order:

- Shared prefixes together. Each line has a prefix key: the text its prompt starts with (chat: the
  tools, then each message as "role: content"; completions: the prompt; responses: the instructions,
  then the input items), at most KEY_CHARS characters. The held lines form a prefix tree whose
  edges are whole blocks of BLOCK_CHARS characters, the way vLLM's prefix cache keys whole blocks of
  16 tokens by a chained hash: two lines sit under one node exactly when their keys share those
  blocks. The lines are handed out depth first, so the lines under a shared prefix go one after
  another and its cached blocks are reused before they are evicted. A key shorter than one block
  shares no cached block with anything: it is a leaf of its own.
- Long answers first. Each line has an output budget: max_completion_tokens / max_tokens /
  max_output_tokens (absent: the model's max_tokens, or 16 for completions, as the parsers default
  them), times n and the number of prompts. Siblings in the tree go in the order of the longest
  budget under them, so the longest answers start early and the tail of the batch is made of short
  ones that fill the engine's slots as the long ones end. Equal budgets keep the tree's order, and
  equal keys keep file order.

Bounds. A model's look-ahead is RUNNER_ADMISSION_LOOKAHEAD lines and LOOKAHEAD_BYTES bytes (the
lines' JSON plus their prefix keys), shared equally by the model's feeds that are still reading:
with N batches of one model each feed holds at most 1/N of each (and one line past its byte share,
since a line's size is known only once it is read). Memory is therefore bounded whatever the file
sizes and the number of batches. A fill reads until the share is full or the input ends, orders
the held lines, and hands out the first three quarters; the last quarter (the shortest answers, the
smallest clusters) stays and is ordered again with the next fill, so short lines drift to the end
of the batch without being held more than the share allows. RUNNER_ADMISSION_ORDER=file, or a
look-ahead of 0, keeps file order.

Exactly-once is not this module's business: it only reorders lines that the feed has not written
yet; a line held here when the engine stops was never handed out and is read again on restart.
Lines that cannot run (feeder.BadLine) are not held: they pass through at once.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Callable, Iterator
from itertools import groupby
from operator import itemgetter
from typing import Any

import orjson

from runner.engine.bodies import COMPLETIONS_DEFAULT_MAX_TOKENS
from runner.model_specs import ModelSpec

BLOCK_CHARS = 64  # one prefix-cache block of text: vLLM's 16 tokens at ~4 characters a token
KEY_CHARS = 16 * 1024  # longest prefix key compared; lines equal that far count as sharing it all
LOOKAHEAD_BYTES = 64 * 1024 * 1024  # bytes one model's feeds hold together
KEEP = 4  # a fill hands out all but 1/KEEP of what it ordered (the rest is ordered again)

# a held line: (prefix key, output budget, bytes, packed line); a subtree: (longest budget, its lines)
_Held = tuple[str, int, int, Any]
_key = itemgetter(0)
_budget = itemgetter(1)
_first = itemgetter(0)


class Pool:
    """One model's look-ahead, shared equally by its feeds that are still reading."""

    def __init__(self, lines: int, nbytes: int) -> None:
        self.lines = lines
        self.nbytes = nbytes
        self.members: weakref.WeakSet[Lookahead] = weakref.WeakSet()  # a dropped feed leaves

    def share(self) -> tuple[int, int]:
        n = max(1, len(self.members))
        return max(1, self.lines // n), max(1, self.nbytes // n)


def pool(pools: dict[str, Pool], model: str, spec: ModelSpec | None, order: str, lines: int) -> Pool | None:
    """The look-ahead of `model`'s feeds, kept in `pools` (the feeder's: one per model); None keeps
    file order: the order is "file", the look-ahead is 0, or the model does not generate (nothing to
    cache)."""
    if order != "prefix" or lines <= 0 or spec is None or spec.task != "generate":
        return None
    p = pools.get(model)
    if p is None or p.lines != lines:
        p = pools[model] = Pool(lines, LOOKAHEAD_BYTES)
    return p


class Lookahead:
    """Items from `source` (in file order), handed out by `next()` in admission order.

    `describe(item)` gives (prefix key, output budget, bytes, packed), or None for an item to hand
    out at once (a line that cannot run); `unpack(packed)` gives back what is handed out. The held
    form should hold no containers (the feed keeps the line's raw bytes and parses it again when it
    leaves): a look-ahead of parsed bodies kept thousands of dicts alive across garbage
    collections, which cost the whole pipeline ~15% of its lines/s. Exceptions from the source
    (InputDamaged) propagate."""

    def __init__(self, source: Iterator[Any], pool: Pool, describe: Callable[[Any], tuple[str, int, int, Any] | None],
                 unpack: Callable[[Any], Any]) -> None:
        self.source = source
        self.pool = pool
        self.describe = describe
        self.unpack = unpack
        self.held: list[_Held] = []
        self.held_bytes = 0
        self.ready: deque[_Held] = deque()
        self.ended = False
        pool.members.add(self)

    def __len__(self) -> int:
        return len(self.held) + len(self.ready)

    def next(self) -> Any:
        """The next item in admission order; None once the source and the look-ahead are empty."""
        if self.ready:
            return self.unpack(self.ready.popleft()[3])
        held = self.held
        if not self.ended:
            max_lines, max_bytes = self.pool.share()
            source, describe, nbytes = self.source, self.describe, self.held_bytes
            for _ in range(max_lines - len(held)):
                if nbytes >= max_bytes:
                    break
                item = next(source, None)
                if item is None:
                    self.ended = True
                    break
                d = describe(item)
                if d is None:
                    self.held_bytes = nbytes
                    return item  # held lines stay held; the next call fills on
                held.append(d)
                nbytes += d[2]
            self.held_bytes = nbytes
        if not held:
            self.pool.members.discard(self)  # its share goes to the feeds still reading
            return None
        order = arrange(held)
        cut = len(order) if self.ended else len(order) - len(order) // KEEP
        self.ready = deque(order[:cut])
        self.held = order[cut:]
        self.held_bytes = sum(h[2] for h in self.held)
        return self.unpack(self.ready.popleft()[3])


def arrange(held: list[_Held]) -> list[_Held]:
    """The held lines depth first through their prefix tree, siblings longest budget first."""
    long = [h for h in held if len(h[0]) >= BLOCK_CHARS]
    if not long:  # no key shares a whole block with another: budgets alone order them
        return sorted(held, key=_budget, reverse=True)  # stable (reverse keeps equal items in order)
    units: list[tuple[int, list[_Held]]] = [(h[1], [h]) for h in held if len(h[0]) < BLOCK_CHARS]
    long.sort(key=_key)  # stable: equal keys stay in file order
    shared, kids = _children(long, 0)
    units += [_join(kids)] if shared else kids  # shared: one subtree under the root
    units.sort(key=_first, reverse=True)
    return [h for _, hs in units for h in hs]


def _children(group: list[_Held], depth: int) -> tuple[int, list[tuple[int, list[_Held]]]]:
    """For a group sorted by key whose keys share their first `depth` blocks: how many blocks they
    all share, and the subtrees below that node, each as (its longest budget, its lines in order)."""
    first, last = group[0][0], group[-1][0]
    if first == last:  # one key (sorted: all equal): no deeper sharing to keep together
        if len(group) > 1:
            group = sorted(group, key=_budget, reverse=True)
        return len(first) // BLOCK_CHARS, [(group[0][1], group)]
    d = _shared_blocks(first, last, depth)  # every key of the group shares d blocks; then they split
    lo, hi = d * BLOCK_CHARS, (d + 1) * BLOCK_CHARS
    out: list[tuple[int, list[_Held]]] = []
    for _, g in groupby(group, key=lambda h: h[0][lo:hi]):
        sub = list(g)
        if len(sub) == 1:
            out.append((sub[0][1], sub))
        else:  # the keys of sub share block d too: one subtree
            out.append(_join(_children(sub, d + 1)[1]))
    return d, out


def _join(kids: list[tuple[int, list[_Held]]]) -> tuple[int, list[_Held]]:
    """One subtree from its children: longest budget first."""
    if len(kids) == 1:
        return kids[0]
    kids.sort(key=_first, reverse=True)
    return kids[0][0], [h for _, hs in kids for h in hs]


def _shared_blocks(a: str, b: str, known: int) -> int:
    """Whole blocks a and b share, knowing they share `known` (binary search on the rest)."""
    lo, hi = known, min(len(a), len(b)) // BLOCK_CHARS
    while lo < hi:
        mid = (lo + hi + 1) // 2
        s, e = lo * BLOCK_CHARS, mid * BLOCK_CHARS
        if a[s:e] == b[s:e]:
            lo = mid
        else:
            hi = mid - 1
    return lo


# -- what a line says about itself ---------------------------------------------------------------------
def describe(spec: ModelSpec, endpoint: str, body: dict[str, Any]) -> tuple[str, int]:
    """(prefix key, output budget) of a line's body. Never raises: a body the backend will refuse
    gets what can be read of it (its order does not matter)."""
    get = body.get
    try:
        if endpoint.endswith("/chat/completions"):
            budget = _int(get("max_completion_tokens") or get("max_tokens")) or spec.max_tokens
            n = get("n")
            return _chat_key(body), budget * n if type(n) is int and n > 1 else budget
        if endpoint.endswith("/completions"):
            prompt = get("prompt")
            count = 1
            if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
                count, prompt = len(prompt), prompt[0]  # several prompts: keyed by the first
            if isinstance(prompt, list):
                key = " ".join(map(str, prompt[:KEY_CHARS // 2]))
            else:
                key = prompt if isinstance(prompt, str) else ""
            budget = _int(get("max_tokens")) or min(COMPLETIONS_DEFAULT_MAX_TOKENS, spec.max_tokens)
            return key[:KEY_CHARS], budget * (_int(get("n")) or 1) * count
        if endpoint.endswith("/responses"):
            return _responses_key(body), _int(get("max_output_tokens")) or spec.max_tokens
    except (TypeError, ValueError, AttributeError, KeyError, orjson.JSONEncodeError):
        pass
    return "", spec.max_tokens


def _int(v: object) -> int:
    return v if type(v) is int and v > 0 else 0


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: text as it is, an image or file by its JSON
        return "".join(p["text"] if isinstance(p, dict) and isinstance(p.get("text"), str)
                       else orjson.dumps(p).decode() for p in content)
    return "" if content is None else orjson.dumps(content).decode()


def _chat_key(body: dict[str, Any]) -> str:
    messages = body["messages"]
    tools = body.get("tools")
    if len(messages) == 1 and not tools:  # the common case, cheaply
        m = messages[0]
        content = m["content"]
        return (f"{m['role']}: {content if type(content) is str else _text(content)}\n")[:KEY_CHARS]
    parts = []
    if tools:  # chat templates render the tools into the system prompt, ahead of the messages
        parts.append(orjson.dumps(tools).decode())
    size = 0
    for m in messages:
        text = f"{m.get('role')}: {_text(m.get('content'))}\n"
        parts.append(text)
        size += len(text)
        if size >= KEY_CHARS:
            break
    return "".join(parts)[:KEY_CHARS]


def _responses_key(body: dict[str, Any]) -> str:
    parts = []
    tools = body.get("tools")
    if tools:
        parts.append(orjson.dumps(tools).decode())
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        parts.append(f"system: {instructions}\n")
    inp = body.get("input")
    if isinstance(inp, str):
        parts.append(f"user: {inp}\n")
    elif isinstance(inp, list):
        size = 0
        for item in inp:
            text = (f"{item.get('role')}: {_text(item.get('content'))}\n" if isinstance(item, dict) and "role" in item
                    else orjson.dumps(item).decode() + "\n")
            parts.append(text)
            size += len(text)
            if size >= KEY_CHARS:
                break
    return "".join(parts)[:KEY_CHARS]
