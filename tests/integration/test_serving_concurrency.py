"""32 concurrent openai clients x 20 requests each against the real stack (uvicorn, controller,
two worker processes, continuous batching): every answer equals the one the same prompt gets
alone, so requests joining and leaving the running batch never change an output."""

import concurrent.futures

import openai
import pytest

import serving.run
from serving.config import load_config
from tests.servingctl import tiny_model

pytestmark = pytest.mark.slow

CLIENTS, REQUESTS = 32, 20
PROMPTS = ["Once upon a time", "The", "In the beginning the", "x = 1\ny =", "def f(a, b):",
           "Hello, world", "Lorem ipsum dolor sit amet", "A"]


def test_32_clients_x_20_requests_all_get_the_answer_they_get_alone(tmp_path):
    tiny = tiny_model(tmp_path / "models")
    config = load_config(None, port=0, workers=2, store=str(tmp_path / "store"),
                         dram_per_worker="64MiB", disk_per_worker="1GiB", threads_per_worker=1,
                         models=[{"name": "tiny", "path": tiny, "max_instances": 2,
                                  "target_concurrency": 16, "queue_limit": 1024}])
    with serving.run.Server(config) as server, openai.OpenAI(
            base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=600) as client:

        def ask(prompt: str, stream: bool) -> str:
            args = dict(model="tiny", prompt=prompt, max_tokens=6, temperature=0)
            if not stream:
                return client.completions.create(**args).choices[0].text
            chunks = client.completions.create(stream=True, **args)
            return "".join(c.choices[0].text for c in chunks if c.choices)

        alone = {p: ask(p, False) for p in PROMPTS}  # one at a time: the reference

        def one_client(i: int) -> list[tuple[str, str]]:
            got = []
            for j in range(REQUESTS):
                prompt = PROMPTS[(i + j) % len(PROMPTS)]
                got.append((prompt, ask(prompt, stream=(i + j) % 2 == 0)))
            return got

        with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
            results = [r for rs in pool.map(one_client, range(CLIENTS)) for r in rs]
    assert len(results) == CLIENTS * REQUESTS
    wrong = [(p, text, alone[p]) for p, text in results if text != alone[p]]
    assert wrong == []
