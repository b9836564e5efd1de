#!/usr/bin/env python3
"""Writes tests/golden/tokens_<name>.json: llama.cpp's token ids for a fixed corpus, the reference that
tests/unit/test_tokenizer_golden.c compares engine/tokenizer.c against.

Needs llama-cpp-python (the reference tokenizer); CI only reads the JSON this writes.

    python3 tests/tools/make_golden_tokens.py NAME FILE.gguf [NAME FILE.gguf ...]

e.g. smollm models/SmolLM2-135M-Instruct.Q4_1.gguf  gpt2 tests/data/ggml-vocab-gpt-2.gguf
     llama-spm tests/data/ggml-vocab-llama-spm.gguf  llama-bpe vocab/ggml-vocab-llama-bpe.gguf

Each case holds the text (as "text", or as "hex" when it is not valid UTF-8 or holds NUL), the ids with
the model's default BOS handling and parse_special=True ("special") and parse_special=False ("plain").
The file also records BOS/EOS, the end-of-generation set and a sample of token pieces."""
import ctypes
import json
import os
import pathlib
import random
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent


def corpus():
    c = [
        "",
        " ",
        "  ",
        "   ",
        "\t",
        "\n",
        "\n\n",
        "\n\n\n",
        "\r\n",
        "\r\n\r\n",
        " \n",
        "\n ",
        "\t\t\tx",
        "a",
        "Hello",
        "Hello world",
        " Hello world",
        "Hello world ",
        "  Hello  world  ",
        "Hello, world!",
        "hello WORLD HeLLo wOrLd",
        "The quick brown fox jumps over the lazy dog.",
        "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
        "It's a dog's life, isn't it? I'm sure you'll see; we've won, they'd say, you're right.",
        "IT'S I'M YOU'LL WE'VE THEY'D YOU'RE DON'T",
        "It'S i'M yoU'Ll we'Ve they'D you'Re don'T",
        "'s 't 're 've 'm 'll 'd",
        "'S 'T 'RE 'VE 'M 'LL 'D",
        "''s '''t 'x 'ss",
        "rock'n'roll",
        "  leading spaces",
        "trailing spaces   ",
        "multiple     spaces     between",
        "tab\tseparated\tvalues",
        "line one\nline two\nline three",
        "windows\r\nline\r\nendings\r\n",
        "mixed \t \n \r\n whitespace \n\n\t ",
        "para one.\n\n\npara two.\n\n  para three.",
        "0",
        "7",
        "42",
        "123",
        "1234",
        "12345",
        "123456789",
        "3.14159265358979323846264338327950288419716939937510",
        "1,000,000 and 2.5e-10 and 0x1F and 1_000",
        "99999999999999999999999999999999999999999999999999999999999999",
        "phone: +1 (555) 123-4567",
        "2024-01-15T10:30:00Z",
        "v1.2.3-rc.4+build.567",
        "a1b2c3d4e5",
        "abc123def456",
        "£100 €200 ¥300 $400 ₹500",
        "naïve café résumé façade jalapeño",
        "Ångström Øresund Ægir œuvre Straße",
        "Ελληνικά: Καλημέρα κόσμε",
        "Русский текст: Привет, мир!",
        "Українська: Добрий день",
        "עברית: שלום עולם",
        "العربية: مرحبا بالعالم",
        "فارسی: سلام دنیا",
        "हिन्दी: नमस्ते दुनिया",
        "বাংলা: হ্যালো বিশ্ব",
        "தமிழ்: வணக்கம் உலகம்",
        "ภาษาไทย: สวัสดีชาวโลก",
        "Tiếng Việt: Xin chào thế giới",
        "中文：你好，世界！",
        "日本語：こんにちは世界。カタカナ、ひらがな、漢字。",
        "한국어: 안녕하세요 세계",
        "中文English混合text测试",
        "一二三四五六七八九十",
        "１２３４５ ＡＢＣ ａｂｃ",
        "٠١٢٣٤٥٦٧٨٩",
        "Ⅳ Ⅻ ½ ¾ ² ³",
        "emoji: 😀😃😄😁",
        "👍",
        "👍🏽",
        "👨‍👩‍👧‍👦",
        "👩🏾‍💻 🧑‍🚀 🏳️‍🌈 ❤️‍🔥",
        "🇺🇸🇫🇷🇯🇵",
        "#️⃣ *️⃣ 1️⃣",
        "text with 🎉 emoji 🎊 inside",
        "∀x∈ℝ: x² ≥ 0 ∧ ∑ᵢ aᵢ ≤ ∞",
        "→ ← ↑ ↓ ⇒ ⇔",
        "«quotes» “curly” ‘single’ „german“",
        "em—dash en–dash hyphen-minus",
        "ellipsis… bullet • middot ·",
        "zero\u200bwidth\u200cnon\u200djoiner",
        "non\u00a0breaking\u00a0space",
        "ideographic\u3000space",
        "nel\u0085char",
        "line\u2028separator\u2029para",
        "thin\u2009space\u202fnarrow",
        "mongolian\u180evowel",
        "combining: e\u0301 a\u0308 n\u0303",
        "private\ue000use\U000f0000",
        "unassigned\U000e0080\u0378x",
        "control\x01\x02\x1fchars",
        "bell\x07 and del\x7f",
        "~!@#$%^&*()_+`-=[]\\{}|;':\",./<>?",
        "!!!???...,,,;;;",
        "<<>>[[]]{{}}(())",
        "a--b__c..d",
        "// comment\n/* block */\n# hash",
        "def main():\n    print(\"Hello, world!\")\n    return 0\n",
        "class Foo(Bar):\n    def __init__(self, x: int = 3) -> None:\n        self.x = x  # store\n",
        "#include <stdio.h>\n\nint main(void) {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n",
        "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!(\"{:?}\", v);\n}\n",
        "function add(a, b) { return a + b; }\nconst x = add(1, 2) ?? 0;\n",
        "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC LIMIT 10;",
        "<html><body><div class=\"x\">Hi &amp; bye</div></body></html>",
        "{\"key\": [1, 2.5, true, null], \"nested\": {\"a\": \"b\"}}",
        "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(\"hi\")\n}\n",
        "#!/bin/bash\nfor i in $(seq 1 10); do echo \"$i\"; done\n",
        "    indented four\n        indented eight\n\t\ttabbed",
        "if (x) {\n\n\n    y();\n}\n\n",
        "https://example.com/path?query=1&other=two#frag",
        "user@example.com",
        "C:\\Users\\name\\file.txt",
        "snake_case camelCase PascalCase kebab-case SCREAMING_CASE",
        "HTTPServer XMLHttpRequest getHTTPResponseCode",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "ababababababababababababab",
        "                                        ",
        "\n\n\n\n\n\n\n\n\n\n",
        "\t\t\t\t\t\t\t\t",
        " \t \t \t ",
        "word\n",
        "\nword",
        " word",
        "word ",
        "  word",
        "word  ",
        "a b c d e f g",
        "I",
        "I'm",
        "don't",
        "Mr. Smith went to Washington D.C. in the U.S.A.",
        "e.g. i.e. etc. vs.",
        "Ünïcödé Tëxt",
        "ÀÁÂÃÄÅ àáâãäå",
        "ǅ ǈ ǋ titlecase",
        "ﬁ ﬂ ligatures",
        "<|im_start|>",
        "<|im_end|>",
        "<|endoftext|>",
        "<|im_start|>user\nhi<|im_end|>",
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|><|im_end|>",
        "<|im_start|> user <|im_end|>",
        "text<|endoftext|>more text",
        "<|im_start|",
        "|im_start|>",
        "<|im_star",
        "<<|im_start|>>",
        "<|im_start|><|im_start|><|im_start|>",
        "<s>",
        "</s>",
        "<s> hello </s>",
        "<unk>",
        "[INST] hi [/INST]",
        "<<SYS>>\nsys\n<</SYS>>\n\n",
        "<|begin_of_text|>",
        "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>",
        "<|eot_id|><|eot_id|>",
        "<|reserved_special_token_0|>",
        "<repo_name>x<file_sep>y<filename>z",
        "<jupyter_code>print(1)<jupyter_output>1",
        "<issue_start>title<issue_comment>body<issue_closed>",
        "<gh_stars>100",
        "▁leading lower one eighth block",
        "▁▁▁",
        "<0x41>",
        "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et "
        "dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip "
        "ex ea commodo consequat.",
        "The year 1984 had 365 days; 2000 had 366. In 2023-2024, 1.5% of 12345 is 185.175.",
        "Q: What's 17 × 23?\nA: 391.",
        "ALL CAPS SENTENCE WITH NUMBERS 123 AND SYMBOLS !@#",
        "MiXeD cAsE wItH 'QuOtEs' AnD \"dOuBlE\"",
        "tokenization tokenizer tokenized tokens token",
        "antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
        "Supercalifragilisticexpialidocious!",
        "      \n      \n",
        "a\u00adb soft hyphen",
        "\ufeffBOM at start",
        "replacement \ufffd char",
        "max \U0010ffff codepoint",
        "surrogate-free 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝐁𝐨𝐥𝐝",
        "𝟘𝟙𝟚 math digits",
        "ℌ𝔢𝔩𝔩𝔬",
    ]
    # Invalid UTF-8 and odd byte sequences: the tokenizer must treat them exactly as llama.cpp does.
    b = [
        b"\xff",
        b"\xfe\xff",
        b"abc\x80def",
        b"\xc3",
        b"\xc3(",
        b"\xe2\x82",
        b"\xe2\x82(",
        b"\xf0\x9f\x98",
        b"\xf0\x9f\x98 x",
        b"\xed\xa0\x80 surrogate",
        b"\xc0\xaf overlong",
        b"\xe0\x80\xaf overlong3",
        b"\xf8\x88\x80\x80\x80",
        b"mixed \xc3\xa9 valid \xc3 invalid \xa9 orphan",
        b"nul\x00byte",
        b"\x00",
    ]
    out = [s.encode("utf-8") for s in c] + b
    # Variants that move words across pre-tokenizer boundaries.
    base = list(c[13:60])
    for s in base:
        out.append((" " + s).encode())
        out.append((s + "\n").encode())
        out.append(s.upper().encode())
    # Deterministic random mixes: letters, digits, spaces, punctuation, multi-byte characters, specials.
    rng = random.Random(1234)
    pieces = ["a", "b", "Z", "é", "ß", "中", "語", "😀", "👍🏽", " ", "  ", "\t", "\n", "\r\n", "0", "12", "345",
              "'s", "'LL", "!", "?!", "...", "-", "_", "\u00a0", "\u3000", "<|im_start|>", "<|im_end|>",
              "<|endoftext|>", "<s>", "</s>", "ab", "the", " the", "ing", "<", ">", "|", "▁", "\u0301"]
    for _ in range(80):
        n = rng.randint(1, 30)
        out.append("".join(rng.choice(pieces) for _ in range(n)).encode())
    # A few long inputs (kept a few KB so the JSON stays small).
    para = ("In 2023, the Fédération Internationale held its 42nd meeting; delegates' votes (1,234 in total) "
            "were counted twice.\n\n")
    out.append((para * 30).encode())
    out.append(("x" * 3000).encode())
    out.append((" " * 2000 + "end").encode())
    out.append(("😀" * 500).encode())
    out.append(("1234567890" * 200).encode())
    seen = set()
    uniq = []
    for s in out:
        if s not in seen:
            seen.add(s)
            uniq.append(s)
    return uniq


def text_field(s):
    try:
        t = s.decode("utf-8")
        if "\x00" not in t:
            return {"text": t}
    except UnicodeDecodeError:
        pass
    return {"hex": s.hex()}


def piece(vocab, tid, special):
    import llama_cpp
    buf = ctypes.create_string_buffer(256)
    n = llama_cpp.llama_token_to_piece(vocab, tid, buf, 256, 0, special)
    if n < 0:
        buf = ctypes.create_string_buffer(-n)
        n = llama_cpp.llama_token_to_piece(vocab, tid, buf, -n, 0, special)
    return buf.raw[:n]


def golden(name, path):
    import llama_cpp
    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    cases = []
    for s in corpus():
        case = text_field(s)
        case["special"] = llm.tokenize(s, add_bos=True, special=True)
        case["plain"] = llm.tokenize(s, add_bos=True, special=False)
        cases.append(case)
    eog = [i for i in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, i)]
    ids = sorted(set(list(range(min(n_vocab, 400))) + list(range(0, n_vocab, 97)) + eog +
                     [n_vocab - 1 - i for i in range(min(n_vocab, 300))]))
    pieces = [{"id": i, "plain": piece(vocab, i, False).hex(), "special": piece(vocab, i, True).hex()}
              for i in ids]
    # Relative to the source tree without resolving links (models/ may be a link to a shared cache).
    shown = os.path.relpath(os.path.abspath(path), ROOT)
    if shown.startswith(".."):
        shown = pathlib.Path(path).name
    doc = {
        "name": name,
        "gguf": shown,
        "reference": "llama-cpp-python " + llama_cpp.__version__,
        "n_vocab": n_vocab,
        "bos": llama_cpp.llama_vocab_bos(vocab),
        "eos": llama_cpp.llama_vocab_eos(vocab),
        "add_bos": bool(llama_cpp.llama_vocab_get_add_bos(vocab)),
        "eog": eog,
        "cases": cases,
        "pieces": pieces,
    }
    out = ROOT / "tests" / "golden" / f"tokens_{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"{out.relative_to(ROOT)}: {len(cases)} strings, {len(pieces)} pieces, eog={eog}")


def main(argv):
    if len(argv) < 3 or len(argv) % 2 == 0:
        sys.exit(__doc__)
    for i in range(1, len(argv), 2):
        golden(argv[i], argv[i + 1])


if __name__ == "__main__":
    main(sys.argv)
