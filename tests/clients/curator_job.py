"""The bespokelabs-curator job the curator test runs: a researcher's script, unchanged, in batch mode.

Runs in .venv-curator (locks/curator.txt; curator's pins conflict with runner's), not under pytest:
    python curator_job.py MODEL OUT.json
OPENAI_BASE_URL and OPENAI_API_KEY point it at runner, as they would at OpenAI. It asks for a
pydantic response_format and writes what curator returns (its parsed rows and its counts) to OUT.json.
"""

from __future__ import annotations

import json
import os
import sys

from bespokelabs import curator
from pydantic import BaseModel


class Capital(BaseModel):
    country: str
    capital: str


class Capitals(curator.LLM):
    response_format = Capital

    def prompt(self, row: dict) -> str:
        return f"What is the capital of {row['country']}? Answer in JSON."

    def parse(self, row: dict, response: Capital) -> dict:
        return {"asked": row["country"], **response.model_dump()}


def main() -> None:
    model, out = sys.argv[1], sys.argv[2]
    llm = Capitals(
        model_name=model,
        backend="openai",
        batch=True,
        # curator's own knobs: the server (the SDK reads OPENAI_BASE_URL, curator passes base_url on
        # too) and a 1 s status poll instead of its 60 s default, so the test is not mostly waiting
        backend_params={"base_url": os.environ["OPENAI_BASE_URL"], "api_key": os.environ["OPENAI_API_KEY"],
                        "batch_check_interval": 1},
    )
    result = llm([{"country": c} for c in ("France", "Italy", "Japan")])
    rows = result.dataset.to_list()
    stats = result.request_stats
    with open(out, "w") as f:
        json.dump({"rows": rows, "succeeded": stats.succeeded, "failed": stats.failed,
                   "total": stats.total, "batch_mode": result.batch_mode}, f)


if __name__ == "__main__":
    main()
