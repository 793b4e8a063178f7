"""Workload generator: write an N-line batch JSONL with controlled input and output lengths.

    python benchmarks/make_batch.py --lines 5000 --endpoint chat --model sim-chat -o /tmp/chat.jsonl
    python benchmarks/make_batch.py --lines 2000 --endpoint completions --token-ids --input-len 1024 \
        --output-len 512 --vocab 32000 --model llama -o /tmp/ids.jsonl      # exact, for GPU comparisons
    python benchmarks/make_batch.py --lines 1000 --shared-prefix 2000 ...  # many lines share a long prefix
    python benchmarks/make_batch.py --lines 5000 --endpoint embeddings --model minilm -o /tmp/emb.jsonl

Lengths: --length-dist fixed (every line exactly --input-len / --output-len), uniform (each in
[len*(1-r), len*(1+r)] with --range-ratio r), or longtail (lognormal: most lines short, a few 10x).
Output lengths are pinned with max_tokens plus ignore_eos (a vLLM extension runner accepts), so every
system under comparison generates the same number of tokens. Deterministic for a given --seed.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

WORDS = (
    "the of and to in is was for on are with as by at from that this be or an which have it not but "
    "model batch engine token river mountain city history science music garden ocean energy market "
    "language system network memory signal planet light season journey question answer story"
).split()

ENDPOINTS = {
    "chat": "/v1/chat/completions",
    "completions": "/v1/completions",
    "embeddings": "/v1/embeddings",
}


def lengths(rng: random.Random, mean: int, dist: str, ratio: float) -> int:
    if dist == "fixed":
        return max(1, mean)
    if dist == "uniform":
        lo, hi = int(mean * (1 - ratio)), int(mean * (1 + ratio))
        return max(1, rng.randint(max(1, lo), max(1, hi)))
    if dist == "longtail":
        # median ~ mean/2, a tail reaching ~10x the mean.
        return max(1, min(int(rng.lognormvariate(0, 1.0) * mean / 2), mean * 10))
    raise ValueError(dist)


def text_of(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def make_lines(args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    rng = random.Random(args.seed)
    url = ENDPOINTS[args.endpoint]
    prefix_text = text_of(random.Random(args.seed + 1), args.shared_prefix) if args.shared_prefix else ""
    prefix_ids = [random.Random(args.seed + 2).randrange(args.vocab) for _ in range(args.shared_prefix)]
    for i in range(args.lines):
        n_in = lengths(rng, args.input_len, args.length_dist, args.range_ratio)
        n_out = lengths(rng, args.output_len, args.length_dist, args.range_ratio)
        body: dict[str, Any] = {"model": args.model}
        if args.endpoint == "embeddings":
            body["input"] = prefix_text + " " + text_of(rng, n_in) if prefix_text else text_of(rng, n_in)
        elif args.token_ids:
            ids = prefix_ids + [rng.randrange(args.vocab) for _ in range(n_in)]
            if args.endpoint == "chat":
                raise SystemExit("--token-ids needs --endpoint completions")
            body.update(prompt=ids, max_tokens=n_out, temperature=args.temperature, top_p=1.0, ignore_eos=True)
        elif args.endpoint == "chat":
            messages = []
            if prefix_text:
                messages.append({"role": "system", "content": prefix_text})
            messages.append({"role": "user", "content": text_of(rng, n_in)})
            body.update(messages=messages, max_tokens=n_out, temperature=args.temperature, ignore_eos=True)
        else:
            prompt = (prefix_text + " " if prefix_text else "") + text_of(rng, n_in)
            body.update(prompt=prompt, max_tokens=n_out, temperature=args.temperature, ignore_eos=True)
        yield {"custom_id": f"req-{i}", "method": "POST", "url": url, "body": body}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=1000)
    ap.add_argument("--endpoint", choices=sorted(ENDPOINTS), default="chat")
    ap.add_argument("--model", required=True)
    ap.add_argument("--input-len", type=int, default=64, help="words, or token ids with --token-ids")
    ap.add_argument("--output-len", type=int, default=32, help="max_tokens (with ignore_eos)")
    ap.add_argument("--length-dist", choices=("fixed", "uniform", "longtail"), default="fixed")
    ap.add_argument("--range-ratio", type=float, default=0.5)
    ap.add_argument("--token-ids", action="store_true", help="completions prompts as token-id lists")
    ap.add_argument("--vocab", type=int, default=32000, help="token-id range for --token-ids")
    ap.add_argument("--shared-prefix", type=int, default=0, help="words/ids of a prefix every line shares")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--output", required=True)
    return ap


def write_batch(args: argparse.Namespace) -> Path:
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:
        for line in make_lines(args):
            f.write(orjson.dumps(line) + b"\n")
    return out


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    out = write_batch(args)
    print(f"wrote {args.lines} lines, {out.stat().st_size / 1e6:.1f} MB -> {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
