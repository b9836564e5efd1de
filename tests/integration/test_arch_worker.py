"""The worker pair serving models of other architectures (the tiny models of tests/tools/make_arch_models.py):
/info, /v1/models and the `started` event report the architecture and the file's weight types, plain
prompts and chat requests (the model's own template) run, and the greedy text through the front is the
engine's. The default model reports itself too."""
import json
import pathlib
import subprocess

import pytest

from harness import ready_worker

TINY = pathlib.Path(__file__).resolve().parents[1] / ".cache" / "models"


def tiny(name):
    path = TINY / f"tiny-{name}.gguf"
    if not path.exists():
        pytest.fail(f"{path} is missing: run tests/tools/make_arch_models.py (needs llama-cpp-python)")
    return path


@pytest.fixture(scope="module", params=[("gemma3", ["F16", "F32"]), ("phi3", ["F16", "F32"]),
                                        ("qwen2", ["Q8_0", "F32"])], ids=lambda p: p[0])
def arch_worker(request, build_dir):
    name, types = request.param
    for w in ready_worker(build_dir, tiny(name), slots=2):
        yield name, types, w


def model_fields(doc):
    return doc["architecture"], doc["weight_types"]


def test_info_models_and_started_report_the_architecture_and_weight_types(arch_worker):
    name, types, w = arch_worker
    assert model_fields(w.info()) == (name, types)
    status, models, _ = w.request("GET", "/v1/models")
    assert status == 200 and model_fields(models["data"][0]) == (name, types)
    text, events = w.run("The capital of France is", 8)
    assert events[0]["data"]["type"] == "started" and model_fields(events[0]["data"]) == (name, types)
    assert events[-2]["data"]["type"] == "end" and events[-2]["data"]["tokens_out"] == 8


def test_plain_and_chat_requests_give_the_engines_greedy_text(arch_worker, engine_bin):
    name, _, w = arch_worker
    text, _ = w.run("Once upon a time", 12)
    p = subprocess.run([str(engine_bin), "--model", str(tiny(name)), "--generate", "--json", "--temperature", "0",
                        "--max-tokens", "12", "--threads", "1", "--prompt", "Once upon a time"],
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert text == "".join(json.loads(x).get("t", "") for x in p.stdout.decode().splitlines()[:-1])
    status, body, _ = w.request("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}],
                                                                 "max_tokens": 4, "temperature": 0})
    assert status == 200, body
    assert body["usage"]["completion_tokens"] >= 1


def test_default_model_reports_llama_and_its_weight_types(build_dir, model_path):
    for w in ready_worker(build_dir, model_path, slots=1):
        assert model_fields(w.info()) == ("llama", ["Q4_1", "Q8_0", "F32"])


@pytest.mark.parametrize("name", ["qwen2", "qwen3", "phi3", "gemma3"])
def test_cuda_backend_refuses_other_architectures_with_one_line(engine_bin, name):
    p = subprocess.run([str(engine_bin), "--model", str(tiny(name)), "--backend", "cuda", "--generate", "--prompt", "hi",
                        "--max-tokens", "1"], capture_output=True, text=True, timeout=60)
    if "built without CUDA" in p.stderr:
        pytest.skip("this engine was built without CUDA")
    err = p.stderr.strip()
    assert p.returncode == 1 and "\n" not in err, (p.returncode, err)
    assert f"this {name} model" in err and "--backend cpu" in err, err


def test_chat_needs_a_known_template_but_plain_prompts_always_work(engine_bin):
    """The tiny llama model carries no chat template and its vocabulary (Llama 3's) has no ChatML tokens."""
    base = [str(engine_bin), "--model", str(tiny("llama3")), "--generate", "--prompt", "hi", "--max-tokens", "2"]
    chat = subprocess.run(base + ["--chat"], capture_output=True, text=True, timeout=60)
    last = chat.stderr.strip().splitlines()[-1]  # after the engine's "loaded" log line
    assert chat.returncode == 1 and last.startswith("beeworker-engine: chat: the model file has no chat template"), \
        chat.stderr
    plain = subprocess.run(base + ["--json"], capture_output=True, text=True, timeout=60)
    assert plain.returncode == 0 and json.loads(plain.stdout.splitlines()[-1])["tokens_out"] == 2, plain.stderr
