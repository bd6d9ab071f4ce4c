"""Run the benchmarks of numpyro_fsdiff one after the other (what `make bench` does).

Each benchmark prints its table; nothing under benchmarks/results/ is overwritten unless
`--write` is given, in which case each writes the results file it documents. The recorded
results (and the exact commands that produced them) are in benchmarks/results/.

    python benchmarks/run_all.py                  # the quick set (about 10 minutes on 2 cores)
    python benchmarks/run_all.py --all            # everything (hours on 2 CPU cores)
    python benchmarks/run_all.py --only train_step scaling
    python benchmarks/run_all.py --list
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name: (script, arguments, the results file it writes with --write, quick?)
BENCHMARKS = {
    "train_step": ("bench_train_step.py", [], ["--out", "results/train_step.md"], True),
    "scaling": ("bench_scaling.py", [], ["--out", "results/scaling.md"], True),
    "sampling": (
        "bench_sampling.py",
        ["--num", "64", "--resolution", "28"],
        ["--out", "results/sampling.md"],
        True,
    ),
    "logprob": ("bench_logprob.py", [], [], False),
    "multilevel": ("bench_multilevel.py", [], ["--out", "results/multilevel.md"], False),
    "inverse": ("bench_inverse.py", ["--suite", "gaussian"], [], False),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="include the long benchmarks")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run just these")
    parser.add_argument("--write", action="store_true", help="let each write its results file")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, (script, extra, _, quick) in BENCHMARKS.items():
            print(f"{name:12s} {'quick' if quick else 'long '}  {script} {' '.join(extra)}")
        return 0
    names = args.only or [n for n, spec in BENCHMARKS.items() if args.all or spec[3]]
    failed = []
    for name in names:
        script, extra, write, _ = BENCHMARKS[name]
        command = [sys.executable, str(HERE / script), *extra]
        if args.write:
            command += [str(HERE / w) if w.startswith("results/") else w for w in write]
        elif write:
            # Point a results file that the script writes by default somewhere harmless.
            command += [write[0], str(Path(tempfile.gettempdir()) / f"fsdiff_bench_{name}.md")]
        print(f"== {name}: {' '.join(command)}", flush=True)
        start = time.perf_counter()
        code = subprocess.call(command)
        print(f"== {name}: exit {code} after {time.perf_counter() - start:.0f} s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
