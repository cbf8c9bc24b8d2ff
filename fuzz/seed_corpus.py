#!/usr/bin/env python3
"""Writes a seed corpus for each fuzz target into fuzz/corpus/<target>/.

Seeds come from tests/fixtures/reference-frames.jsonl (frames captured against the
TypeScript reference implementation): every text frame for frame_decode, every delta
they carry for delta_validate, every filter for filter_parse; plus the example
scripts under policies/ and filters/ for policy_script. Files are named by the SHA-1
of their content, as libFuzzer names its own, so running this twice adds nothing.

Usage (from anywhere): python3 fuzz/seed_corpus.py
"""

import hashlib
import json
import pathlib

FUZZ = pathlib.Path(__file__).resolve().parent
ROOT = FUZZ.parent
FIXTURE = ROOT / "tests" / "fixtures" / "reference-frames.jsonl"

# Shapes the captured frames lack: the legacy pointer form and every filter field.
EXTRA_DELTAS = [
    {
        "id": "legacy-1",
        "timestamp": 1700000000000,
        "author": "bob",
        "system": "ts",
        "pointers": [
            {"localContext": "on", "target": {"id": "prod_1"}, "targetContext": "comments"},
            {"localContext": "text", "target": "h\u00e9llo"},
            {"role": "n", "target": 1.5},
        ],
        "signature": "kept verbatim",
    }
]
EXTRA_FILTERS = [
    {},
    {
        "ids": ["a"],
        "targetIds": ["prod_1"],
        "targetContexts": ["comments"],
        "authors": ["alice"],
        "systems": ["wire-server"],
        "timestampRange": {"start": 1, "end": 2000000000000},
        "includeNegated": True,
    },
]


def write(target: str, data: bytes) -> bool:
    out = FUZZ / "corpus" / target
    out.mkdir(parents=True, exist_ok=True)
    path = out / hashlib.sha1(data).hexdigest()
    if path.exists():
        return False
    path.write_bytes(data)
    return True


def compact(value) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def main() -> None:
    counts = {"frame_decode": 0, "delta_validate": 0, "filter_parse": 0, "policy_script": 0}

    def add(target: str, data: bytes) -> None:
        if write(target, data):
            counts[target] += 1

    deltas, filters = list(EXTRA_DELTAS), list(EXTRA_FILTERS)
    for line in FIXTURE.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        text = json.loads(line)["frame"]
        if text.startswith("(binary frame)"):
            continue
        add("frame_decode", text.encode())
        try:
            frame = json.loads(text)
        except ValueError:
            continue  # malformed on purpose: a good frame_decode seed, nothing inside
        if not isinstance(frame, dict):
            continue
        if "delta" in frame:
            deltas.append(frame["delta"])
        if isinstance(frame.get("deltas"), list):
            deltas.extend(frame["deltas"][:3])  # batches repeat one shape
        if "filter" in frame:
            filters.append(frame["filter"])
    for d in deltas:
        add("delta_validate", compact(d))
    for f in filters:
        add("filter_parse", compact(f))
    for folder in ("policies", "filters"):
        for script in sorted((ROOT / folder).rglob("*.rhai")):
            add("policy_script", script.read_bytes())
    for target, n in counts.items():
        print(f"{target}: {n} new seeds in {FUZZ / 'corpus' / target}")


if __name__ == "__main__":
    main()
