"""Write a configuration dict as TOML for tests that run the `helpdesk` command."""
from __future__ import annotations

import json
from pathlib import Path


def _value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(str(value), ensure_ascii=False)


def dumps(doc: dict) -> str:
    lines: list[str] = []
    for section, body in doc.items():
        if isinstance(body, list):
            for item in body:
                lines.append(f"[[{section}]]")
                lines += [f"{json.dumps(k)} = {_value(v)}" for k, v in item.items()]
        else:
            lines.append(f"[{section}]")
            lines += [f"{json.dumps(k)} = {_value(v)}" for k, v in body.items()]
        lines.append("")
    return "\n".join(lines)


def write_config(path: Path, doc: dict) -> Path:
    path.write_text(dumps(doc), encoding="utf-8")
    return path
