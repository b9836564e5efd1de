#!/usr/bin/env python3
"""Writes tests/golden/chat_cases.json: prompts rendered by jinja2 from real chat templates, the
reference that tests/unit/test_chat.c compares engine/chat.c against.

    python3 tests/tools/make_golden_chat.py [model.gguf]

The SmolLM2 template is read from the GGUF (default: models/SmolLM2-135M-Instruct.Q4_1.gguf); the
Llama 2, Llama 3, Phi-3 and Gemma 3 templates are the ones their instruct models publish in
tokenizer_config.json (and the early Phi-3 form that llama.cpp's ggml-vocab-phi-3.gguf carries).
Rendering follows transformers' apply_chat_template: a sandboxed environment with trim_blocks and
lstrip_blocks, add_generation_prompt=True, bos_token/eos_token of the family, and raise_exception."""
import json
import pathlib
import sys

import jinja2
import jinja2.sandbox

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent

CHATML_PLAIN = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)

LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim"
    " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

# Phi-3-mini-4k-instruct's template (with a system turn), and the early form that llama.cpp's
# ggml-vocab-phi-3.gguf carries (no system turn; each user turn opens the assistant's).
PHI3 = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\\n' + message['content'] + "
    "'<|end|>\\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"
)

PHI3_EARLY = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') %}{{'<|user|>' + '\\n' + "
    "message['content'] + '<|end|>' + '\\n' + '<|assistant|>' + '\\n'}}{% elif (message['role'] == 'assistant') %}"
    "{{message['content'] + '<|end|>' + '\\n'}}{% endif %}{% endfor %}"
)

# Gemma 3 instruct's template (google/gemma-3-*-it, tokenizer_config.json).
GEMMA = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""

CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Tell me a joke."}],
    [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "  padded question \n\n"},
     {"role": "assistant", "content": "\t answer with spaces  "}, {"role": "user", "content": "next"}],
    [{"role": "user", "content": "Unicode: café 中文 😀 — «ok»"}],
    [{"role": "user", "content": "\u3000ideographic space and nbsp\u00a0"}],
    [{"role": "user", "content": ""}],
    [{"role": "system", "content": ""}, {"role": "user", "content": "empty system"}],
    [{"role": "user", "content": "line one\nline two\n\n  indented\n"}],
    [{"role": "user", "content": "<|im_start|> and [INST] written in text"}],
    [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
    [{"role": "assistant", "content": "I speak first."}],
    [],
]


def render(template, messages, bos, eos):
    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template).render(messages=messages, add_generation_prompt=True, bos_token=bos,
                                                eos_token=eos)
    except (jinja2.exceptions.TemplateError, IndexError, jinja2.exceptions.UndefinedError):
        return None


def smollm_template(path):
    import gguf
    r = gguf.GGUFReader(str(path))
    f = r.fields["tokenizer.chat_template"]
    return bytes(f.parts[f.data[0]]).decode("utf-8")


def main(argv):
    model = pathlib.Path(argv[1]) if len(argv) > 1 else ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    templates = [
        ("smollm2", smollm_template(model), "<|im_start|>", "<|im_end|>"),
        ("chatml", CHATML_PLAIN, "<|im_start|>", "<|im_end|>"),
        ("llama2", LLAMA2, "<s>", "</s>"),
        ("llama3", LLAMA3, "<|begin_of_text|>", "<|eot_id|>"),
        ("phi3", PHI3, "<s>", "<|endoftext|>"),
        ("phi3-early", PHI3_EARLY, "<s>", "<|endoftext|>"),
        ("gemma", GEMMA, "<bos>", "<eos>"),
    ]
    cases = []
    for name, tmpl, bos, eos in templates:
        for conv in CONVERSATIONS:
            cases.append({"template": name, "messages": conv, "expected": render(tmpl, conv, bos, eos)})
    doc = {
        "reference": "jinja2 " + jinja2.__version__,
        "templates": {name: tmpl for name, tmpl, _, _ in templates},
        "cases": cases,
    }
    out = ROOT / "tests" / "golden" / "chat_cases.json"
    with open(out, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"{out.relative_to(ROOT)}: {len(cases)} cases")


if __name__ == "__main__":
    main(sys.argv)
