#!/usr/bin/env python3
"""Generates testdata/template-vectors/python_compat.json: small chat templates that exercise
the Python semantics a renderer must copy (printing, tojson, string methods, loop controls,
namespace, raise_exception, trim/lstrip blocks), rendered by Hugging Face transformers' own
template compiler. Usage: python3 scripts/gen-template-edge-vectors.py OUT.json
(needs `pip install transformers jinja2`; no model files)."""
import json
import sys

from transformers.utils.chat_template_utils import _compile_jinja_template

SPECIAL = {"bos_token": "<s>", "eos_token": "</s>"}
MSGS = [
    {"role": "system", "content": "\x1c Be brief.\x1f ", "name": "sys"},
    {"role": "user", "content": "  Hi <b>&'\"</b> 😀 naïve\n\nline two\r\nthree\u2028four  "},
    {"role": "assistant", "content": "Hello!", "tool_calls": [
        {"type": "function", "function": {"name": "get_time", "arguments": {"city": "Paris", "n": 1.5, "ok": True, "none": None}}}]},
    {"role": "user", "content": "a  b\tc\x1dd"},
]
TOOLS = [{"type": "function", "function": {"name": "get_time", "description": "Time in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Zürich"]}},
                         "required": ["city"]}}}]

TEMPLATES = {
    "printing": "{{ none }}|{{ true }}|{{ false }}|{{ 1.0 }}|{{ 2.50 }}|{{ 1e20 }}|{{ 3 }}|{{ [1, 'a', none, true] }}|{{ {'k': 'v', 'n': none} }}|{{ messages[2]['tool_calls'][0]['function']['arguments'] }}|{{ messages[0].name }}|{{ undefined_thing }}|{{ 'x' | string }}{{ none | string }}",
    "tojson": "{{ messages | tojson }}\n{{ tools | tojson(indent=4) }}\n{{ tools[0] | tojson(separators=(',', ':')) }}\n{{ messages[1]['content'] | tojson }}\n{{ {'b': 1, 'a': [], 'c': {}} | tojson(indent=2) }}\n{{ messages[2] | tojson(sort_keys=true) }}\n{{ 'é' | tojson(ensure_ascii=true) }}",
    "string_methods": "{% for m in messages %}[{{ m['content'].strip() }}][{{ m['content'] | trim }}][{{ m['content'].lstrip() }}][{{ m['content'].rstrip() }}][{{ m['content'].split() | join(',') }}][{{ m['content'].split(none, 1) | join(',') }}][{{ m['content'].splitlines() | join('/') }}][{{ m['content'].isspace() }}][{{ m['role'].upper() }}][{{ m['role'].title() }}][{{ m['role'].startswith(('sys', 'ass')) }}][{{ m['role'].endswith('er') }}][{{ m['content'].replace('a', 'A') }}][{{ m['role'].strip('s') }}][{{ m['content'].split('\\n') | length }}]\n{% endfor %}",
    "loops_and_namespace": "{%- set ns = namespace(last_user=-1, seen=[]) %}\n{%- for m in messages %}\n    {%- if m.role == 'user' %}{% set ns.last_user = loop.index0 %}{% endif %}\n    {%- if m.role == 'system' %}{% continue %}{% endif %}\n    {%- if loop.index0 > 2 %}{% break %}{% endif %}\n    {{- loop.index }}:{{ m.role }}{% if not loop.last %}, {% endif %}\n{%- endfor %}\n{{ ns.last_user }} {{ messages[::-1] | map(attribute='role') | join(' ') }} {{ messages | selectattr('role', 'equalto', 'user') | list | length }}\n{% for k, v in messages[2].items() %}{{ k }} {% endfor %}{{ messages[2].get('missing', 'default') }} {{ messages[2].keys() | list }}",
    "blocks_whitespace": "{{ bos_token }}\n{% for message in messages %}\n    {% if message['role'] == 'user' %}\n        USER: {{ message['content'] | trim }}\n    {% elif message['role'] == 'assistant' %}\n        BOT: {{ message['content'] }}{{ eos_token }}\n    {% endif %}\n{% endfor %}\n{% if add_generation_prompt %}\n    BOT:\n{% endif %}\n",
    "raise": "{% for m in messages %}{% if m.role == 'assistant' and m.tool_calls is defined %}{{ raise_exception('Tool calls are not supported: ' ~ m.tool_calls | length ~ ' found') }}{% endif %}{% endfor %}",
    "macros_and_filters": "{% macro render(m) %}<{{ m.role }}>{{ m.content[:10] }}{% endmacro %}{% for m in messages %}{{ render(m) }}{% endfor %}|{{ messages | length }}|{{ messages | first | attr('role') if false else (messages | first)['role'] }}|{{ '%s-%d' | format('a', 3) }}|{{ [3,1,2] | sort | join }}|{{ 'abc' | upper | reverse }}|{{ range(3) | list }}|{{ 7 // 2 }} {{ 7 % 3 }} {{ 2 ** 3 }}|{{ 'a' in 'cat' }}|{{ messages[-1].content[:3] }}",
}


def case(name, template, tools, add_generation_prompt):
    c = {
        "name": f"python_compat_{name}" + ("" if add_generation_prompt else "_nogen") + ("_tools" if tools else ""),
        "model": None,
        "chat_template": template,
        "special_tokens": SPECIAL,
        "messages": MSGS,
        "tools": tools,
        "add_generation_prompt": add_generation_prompt,
        "kwargs": {},
        "expected": None,
        "expected_error": None,
        "expected_token_ids": None,
    }
    compiled = _compile_jinja_template(template)
    try:
        c["expected"] = compiled.render(messages=MSGS, tools=tools, documents=None,
                                        add_generation_prompt=add_generation_prompt, **SPECIAL)
    except Exception as e:  # the template's own raise_exception
        c["expected_error"] = str(e)
    return c


cases = []
for name, template in TEMPLATES.items():
    cases.append(case(name, template, TOOLS, True))
    if name == "blocks_whitespace":
        cases.append(case(name, template, None, False))
json.dump(cases, open(sys.argv[1], "w"), ensure_ascii=False, indent=1)
print(f"{len(cases)} cases written to {sys.argv[1]}")
