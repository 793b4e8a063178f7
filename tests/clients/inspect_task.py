"""The eval the inspect-ai test runs: plain `inspect eval` over this file, as a researcher writes one.

Not a test module (pytest does not collect it); tests/clients/test_inspect_batch.py runs it in a
subprocess with `inspect eval ... --batch` against a real `runner serve`.
"""

from inspect_ai import Task, task
from inspect_ai.dataset import Sample
from inspect_ai.scorer import includes
from inspect_ai.solver import generate

QUESTIONS = [
    ("What is the capital of France?", "Paris"),
    ("What is the capital of Italy?", "Rome"),
    ("What is the capital of Japan?", "Tokyo"),
]


@task
def capitals() -> Task:
    return Task(
        dataset=[Sample(id=f"q{i}", input=q, target=a) for i, (q, a) in enumerate(QUESTIONS)],
        solver=generate(),
        scorer=includes(),
    )
