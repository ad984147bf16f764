#!/usr/bin/env python3
"""One Markdown row of reports/experiments.md from an `eval` report.json (the first K in it).

Usage: tools/report_row.py REPORT.json NAME "what changed" [COMMAND]
Columns: run, K, seeds, test posts, steps, TLC Acc@1 / macro / unnamed, engine Acc@1 / macro / unnamed /
Acc@161km, engine + profile Acc@1 / unnamed (when the report has it), what changed, command."""
import json
import sys

report = json.load(open(sys.argv[1]))
name, changed = sys.argv[2], sys.argv[3]
command = sys.argv[4] if len(sys.argv) > 4 else ""
shot = report["results"][0]
methods = shot["methods"]
engine = methods.get("engine") or methods.get("TLC+TLM rerank")
tlc = methods["TLC"]
profile = methods.get("engine + profile location")
steps = "/".join(str(r["train"]["steps"]) for r in shot["runs"])
slices = shot.get("slices") or {}
if slices:
    held = {rule: slices.get(f"{rule} / held-out cities") for rule in ("zero-shot", "TLC", "engine")}
    trained = {rule: slices.get(f"{rule} / trained cities") for rule in ("zero-shot", "engine")}
    if all(held.values()) and all(trained.values()):
        changed += (
            f"; held-out cities Acc@1 zero-shot / TLC / engine {held['zero-shot']['overall']['acc1']:.3f} / "
            f"{held['TLC']['overall']['acc1']:.3f} / {held['engine']['overall']['acc1']:.3f} "
            f"(trained cities: zero-shot {trained['zero-shot']['overall']['acc1']:.3f}, engine "
            f"{trained['engine']['overall']['acc1']:.3f})"
        )


def f(x):
    return f"{x:.3f}"


cells = [
    name,
    str(shot["shots"]),
    ",".join(str(s) for s in report["spec"]["seeds"]),
    str(report["test_posts"]),
    steps,
    f"{f(tlc['overall']['acc1'])} / {f(tlc['macro_avg']['acc1'])} / {f(tlc['unnamed']['acc1'])}",
    f"{f(engine['overall']['acc1'])} / {f(engine['macro_avg']['acc1'])} / {f(engine['unnamed']['acc1'])} / "
    f"{f(engine['overall']['acc161'])}",
    f"{f(profile['overall']['acc1'])} / {f(profile['unnamed']['acc1'])}" if profile else "-",
    changed,
    f"`{command}`" if command else "",
]
print("| " + " | ".join(cells) + " |")
