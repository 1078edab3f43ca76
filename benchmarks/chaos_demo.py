"""Chaos check of resume: SIGKILL a run at random moments, resume it each time, and compare its final artifacts with an
uninterrupted run's. Prints one JSON object; ``equal`` is the verdict. Not part of CI (it runs the job 12+ times).

    python benchmarks/chaos_demo.py                       # the demo config, 10 kills
    python benchmarks/chaos_demo.py --kills 3 \
        --run "python tests/support/spar_pipeline_driver.py {workdir} MODEL --scripted"

``--run`` is the command line of one attempt; ``{workdir}`` is replaced by the run's directory. Kill moments are drawn
uniformly over the uninterrupted run's wall time (seeded by ``--seed``) and sorted. A moment is placed by progress,
not by the clock: it is read as "d seconds after progress line L" (the last ``[HH:MM:SS] ...`` line the reference
printed before it), and an attempt is killed d seconds after it prints L, or as soon as it prints a line the reference
printed later (it is already past that point). A resumed step pays its start-up again (loading, compiling, restoring),
so kills by the clock alone would keep landing in the first long step; by progress, kills land in every stage in
proportion to its length and each attempt gets at least as far as the moment it stands for. Each attempt reports the
line it was killed after (``killed_after``). Compared: every JSONL artifact
and DONE.json (without the fields that measure the process: wall time, training speed, sampling counters; and
without workdir paths) byte for byte, every ``*.safetensors`` tensor within ``--atol``.
Logs, TensorBoard files, plots, Orbax step directories and inputs records (their start times) are not artifacts and
are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time

DEFAULT_RUN = f"{sys.executable} -m spar_jax.main --config=configs/demo.py --config.workdir={{workdir}}"
SKIPPED_DIRS = {"logs", "tensorboard", "checkpoints"}
SKIPPED_FILES = {"inputs.json", "config.json", "config.latest.json", "report.md", "metrics.jsonl", "metrics.png"}
# DONE.json fields that measure the process, not the artifact: wall time, training speed, and the engines' counters
# (a resumed step counts only the shards its last attempt sampled).
MEASURED = ("seconds", "seconds_earlier_attempts", "tokens_per_s", "step_time_s", "sampling")


def _command(template: str, workdir: str) -> list[str]:
    return shlex.split(template.replace("{workdir}", workdir))


_LINE = re.compile(r"^\[\d\d:\d\d:\d\d\] (.+)$")


def marker(line: str, workdir: str) -> str | None:
    """The progress line's text without what varies between runs (timings, the workdir), or None for other output."""
    m = _LINE.match(line.strip())
    if not m:
        return None
    text = m.group(1).replace(os.path.abspath(workdir), "<workdir>")
    text = re.sub(r"^" + re.escape(os.path.basename(os.path.abspath(workdir))) + "/", "<run>/", text)
    return re.sub(r": done in .*", ": done", text)


def run_once(template: str, workdir: str, kill=None) -> dict:
    """One attempt, reading its progress lines as they come. ``kill(seconds, markers)`` -> bool decides, about every
    0.1 s, whether to SIGKILL it now (``markers``: [(seconds since start, marker)] so far). Returns what happened."""
    start = time.monotonic()
    proc = subprocess.Popen(
        _command(template, workdir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="replace"
    )
    markers, tail = [], []

    def read():
        for line in proc.stderr:
            tail[:] = (tail + [line])[-60:]
            key = marker(line, workdir)
            if key is not None:
                markers.append((time.monotonic() - start, key))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    killed = False
    while proc.poll() is None:
        if kill is not None and kill(time.monotonic() - start, list(markers)):
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.1)
    proc.wait()
    reader.join(timeout=10)
    if not killed and proc.returncode != 0:
        raise RuntimeError(f"attempt in {workdir} failed with exit code {proc.returncode}:\n{''.join(tail)[-3000:]}")
    last = markers[-1][1] if markers else None
    seconds = round(time.monotonic() - start, 2)
    where = "killed_after" if killed else "last_line"
    return {"killed": killed, "seconds": seconds, "exit_code": proc.returncode, where: last, "markers": markers}


def kill_at(reference: list[tuple[float, str]], moment: float):
    """The ``kill`` rule for a moment of the reference run: d seconds after the reference's last progress line before
    it, or at once after any line the reference printed later."""
    before = [i for i, (t, _) in enumerate(reference) if t <= moment]
    if not before:
        return lambda seconds, markers: seconds >= moment or bool(markers)
    index = before[-1]
    key, delay = reference[index][1], moment - reference[index][0]
    order = {k: i for i, (_, k) in reversed(list(enumerate(reference)))}  # first position of each line

    def kill(seconds, markers):
        for t, k in markers:
            if k == key and seconds >= t + delay:
                return True
            if order.get(k, -1) > index:
                return True
        return False

    return kill


def artifacts(workdir: str) -> dict[str, str]:
    """{relative path: absolute path} of the files compared."""
    out = {}
    for root, dirs, files in os.walk(workdir):
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS]
        for name in files:
            if name in SKIPPED_FILES or name.startswith(".tmp") or name.startswith("events.out"):
                continue
            if name.endswith((".jsonl", ".json", ".safetensors")):
                full = os.path.join(root, name)
                out[os.path.relpath(full, workdir)] = full
    return out


def _normalized(path: str, workdir: str) -> bytes:
    data = open(path, "rb").read()
    if os.path.basename(path) == "DONE.json":
        record = json.loads(data)
        for key in MEASURED:
            record.pop(key, None)
        data = json.dumps(record, sort_keys=True).encode()
    return data.replace(os.path.abspath(workdir).encode(), b"<workdir>")


def finished_stages(workdir: str) -> list[str]:
    """Stage directories (relative) that hold a DONE.json."""
    return sorted(os.path.relpath(root, workdir) for root, _, files in os.walk(workdir) if "DONE.json" in files)


def compare(reference: str, candidate: str, atol: float, stages: list[str] | None = None) -> list[str]:
    """The differing artifacts (empty when the runs agree); with ``stages``, only those stage directories' files."""
    import numpy as np
    from safetensors.numpy import load_file

    a, b = artifacts(reference), artifacts(candidate)
    if stages is not None:
        inside = lambda rel: any(rel.startswith(s + os.sep) for s in stages)  # noqa: E731
        a, b = {k: v for k, v in a.items() if inside(k)}, {k: v for k, v in b.items() if inside(k)}
    problems = [f"only in reference: {p}" for p in sorted(set(a) - set(b))]
    problems += [f"only in chaos run: {p}" for p in sorted(set(b) - set(a))]
    for rel in sorted(set(a) & set(b)):
        if rel.endswith(".safetensors"):
            try:
                x, y = load_file(a[rel]), load_file(b[rel])
            except Exception:  # noqa: BLE001 -- not a readable safetensors file (a stand-in): compare the bytes
                x = y = None
            if x is None:
                if open(a[rel], "rb").read() != open(b[rel], "rb").read():
                    problems.append(f"differs: {rel}")
            elif sorted(x) != sorted(y) or any(not np.allclose(x[k], y[k], atol=atol, rtol=0) for k in x):
                problems.append(f"tensors differ: {rel}")
        elif _normalized(a[rel], reference) != _normalized(b[rel], candidate):
            problems.append(f"differs: {rel}")
    return problems


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default=DEFAULT_RUN, help="command of one attempt; {workdir} is substituted")
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", default="", help="where the two workdirs go (default: a new temp directory)")
    parser.add_argument("--atol", type=float, default=1e-6)
    # Progress (one JSON line per attempt: finished stages and any that differ from the reference's) goes to stderr.
    args = parser.parse_args(argv)
    root = args.root or tempfile.mkdtemp(prefix="chaos-")
    reference, chaos = os.path.join(root, "reference"), os.path.join(root, "chaos")
    uninterrupted = run_once(args.run, reference)
    rng = random.Random(args.seed)
    moments = sorted(rng.uniform(0.0, uninterrupted["seconds"]) for _ in range(args.kills))
    print(
        json.dumps({"reference_seconds": uninterrupted["seconds"], "moments": [round(m, 1) for m in moments]}),
        file=sys.stderr,
        flush=True,
    )
    attempts = []
    for i, moment in enumerate([*moments, None]):
        kill = None if moment is None else kill_at(uninterrupted["markers"], moment)
        attempts.append({k: v for k, v in run_once(args.run, chaos, kill).items() if k != "markers"})
        # Progress, so that an interrupted check still tells something: the stages finished so far against the
        # reference's.
        done = finished_stages(chaos)
        print(
            json.dumps(
                {
                    "attempt": i + 1,
                    **attempts[-1],
                    "finished_stages": done,
                    "differing": compare(reference, chaos, args.atol, done)[:5],
                }
            ),
            file=sys.stderr,
            flush=True,
        )
    problems = compare(reference, chaos, args.atol)
    result = {
        "equal": not problems,
        "problems": problems[:20],
        "kills": args.kills,
        "killed_attempts": sum(a["killed"] for a in attempts),
        "reference_seconds": uninterrupted["seconds"],
        "attempts": attempts,
        "compared_files": len(artifacts(reference)),
        "root": root,
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    sys.exit(0 if main()["equal"] else 1)
