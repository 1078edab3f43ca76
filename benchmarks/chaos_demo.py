"""Chaos check of resume: SIGKILL a run at random moments, resume it each time, and compare its final artifacts with an
uninterrupted run's. Prints one JSON object; ``equal`` is the verdict. Not part of CI (it runs the job 12+ times).

    python benchmarks/chaos_demo.py                       # the demo config, 10 kills
    python benchmarks/chaos_demo.py --kills 3 \
        --run "python tests/support/spar_pipeline_driver.py {workdir} MODEL --scripted"

``--run`` is the command line of one attempt; ``{workdir}`` is replaced by the run's directory. Kill moments are drawn
uniformly over the uninterrupted run's working time (its wall time less a finished rerun's, i.e. start-up; seeded by
``--seed``) and sorted; attempt i runs for the start-up time plus the progress between moments i-1 and i, so kills
land in every stage in proportion to its length and each attempt makes some progress. Compared: every JSONL artifact
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
import shlex
import signal
import subprocess
import sys
import tempfile
import time

DEFAULT_RUN = f"{sys.executable} -m spar_jax.main --config=configs/demo.py --config.workdir={{workdir}}"
SKIPPED_DIRS = {"logs", "tensorboard", "checkpoints"}
SKIPPED_FILES = {"inputs.json", "config.json", "config.latest.json", "report.md", "metrics.jsonl", "metrics.png"}
# DONE.json fields that measure the process, not the artifact: wall time, training speed, and the engines' counters
# (a resumed step counts only the shards its last attempt sampled).
MEASURED = ("seconds", "tokens_per_s", "step_time_s", "sampling")


def _command(template: str, workdir: str) -> list[str]:
    return shlex.split(template.replace("{workdir}", workdir))


def run_once(template: str, workdir: str, kill_after: float | None) -> dict:
    """One attempt; SIGKILLed after ``kill_after`` seconds unless it finished. Returns what happened."""
    start = time.time()
    proc = subprocess.Popen(_command(template, workdir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        proc.wait(timeout=kill_after)
        killed = False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed = True
    err = proc.stderr.read().decode(errors="replace")
    if not killed and proc.returncode != 0:
        raise RuntimeError(f"attempt in {workdir} failed with exit code {proc.returncode}:\n{err[-3000:]}")
    return {"killed": killed, "seconds": round(time.time() - start, 2), "exit_code": proc.returncode}


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
    uninterrupted = run_once(args.run, reference, None)
    startup = run_once(args.run, reference, None)["seconds"]  # a rerun of a finished run: start-up and skips only
    work = max(uninterrupted["seconds"] - startup, 1.0)
    rng = random.Random(args.seed)
    moments = sorted(rng.uniform(0.0, work) for _ in range(args.kills))  # points of progress through the run
    print(
        json.dumps(
            {
                "reference_seconds": uninterrupted["seconds"],
                "startup_seconds": startup,
                "moments": [round(m, 1) for m in moments],
            }
        ),
        file=sys.stderr,
        flush=True,
    )
    attempts = []
    for i, (previous, moment) in enumerate(zip([0.0, *moments], [*moments, None])):
        attempts.append(run_once(args.run, chaos, None if moment is None else startup + moment - previous))
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
        "startup_seconds": startup,
        "attempts": attempts,
        "compared_files": len(artifacts(reference)),
        "root": root,
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    sys.exit(0 if main()["equal"] else 1)
