"""Shared pieces of the benchmarks: interleaved rounds, medians, tables and child-process workers.

Contenders are measured in rounds, A, B, C, A, B, C, ..., and each is summarised by the
median of its rounds, so slow drift and bursts of load on this shared machine hit every
contender alike instead of whichever happened to run during the burst.

Contenders that need their own process (TF_ENABLE_ONEDNN_OPTS is read when TensorFlow is
imported, mixed precision is a process-wide policy) run in `Worker` children. A worker
builds its model and traces its step once, then waits for commands on stdin. Between its
rounds it is frozen with SIGSTOP, so its tf.data threads cannot fill prefetch buffers or
take CPU while another contender is being timed; SIGCONT resumes it exactly where its
last round left off. Each worker times its own rounds (time.perf_counter inside the
child), so process start-up and pipe traffic are never counted.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import select
import signal
import statistics
import subprocess
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "bench" / ".data"  # git-ignored (bench/.gitignore): demo images and worker logs
LOGS = DATA / "logs"
_PREFIX = "@@bench "  # marks protocol lines on a worker's private result pipe

if str(REPO) not in sys.path:  # `python bench/x.py` puts bench/ on the path, not the repo root
    sys.path.insert(0, str(REPO))


# Arguments, statistics, tables -------------------------------------------------------------------

def arguments(doc: str, extra: Optional[Callable[[argparse.ArgumentParser], None]] = None) -> argparse.Namespace:
    """--quick (a short run to check the script works), --rounds N; `--worker SPEC` is internal."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer and shorter rounds (about a minute)")
    parser.add_argument("--rounds", type=int, default=None, help="override the number of interleaved rounds")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    if extra:
        extra(parser)
    return parser.parse_args()


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def spread(values: Sequence[float]) -> str:
    """min-max of the rounds as a short string, to show how noisy a median is."""
    return f"{min(values):.4g}-{max(values):.4g}" if values else "-"


def others_summary(results: Dict[str, List[float]]) -> str:
    """One line on the load other processes put on the machine during the rounds."""
    values = results.get("_others_cores", [])
    if not values:
        return ""
    return (f"other processes kept {median(values):.1f} cores busy (median over rounds; "
            f"{min(values):.1f}-{max(values):.1f}) of {os.cpu_count()}")


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def paired(results: Dict[str, List[float]], a: str, b: str) -> str:
    """The median of a's per-round ratios to b, steadier under bursts of load than the ratio of the medians."""
    return f"{median([x / y for x, y in zip(results[a], results[b])]):.2f}x"


def worker_rounds(script: str, workers: Sequence[Tuple[str, Dict[str, Any]]], command: str, budget: float,
                  rounds: int, label: str = "img/s") -> Tuple[Dict[str, List[float]], Dict[str, Dict[str, Any]]]:
    """Start a Worker of `script` per (name, spec), run `rounds` interleaved rounds of its `command` (each
    returning images_per_second), close them; return (the values by name, each worker's info)."""
    print("\nstarting workers (set-up and warm-up are not timed):", flush=True)
    started = launch([lambda n=n, s=s: Worker(n, script, s) for n, s in workers])
    try:
        contenders = [(w.name, lambda w=w: w.call(command, budget=budget)["images_per_second"]) for w in started]
        print(f"\n{rounds} interleaved rounds ({label}):", flush=True)
        results = interleave(contenders, rounds, own_pids=lambda: [w.proc.pid for w in started])
        return results, {w.name: w.info for w in started}
    finally:
        close_all(started)


def interleave(contenders: Sequence[Tuple[str, Callable[[], float]]], rounds: int, label: str = "round",
               own_pids: Callable[[], Sequence[int]] = lambda: ()) -> Dict[str, List[float]]:
    """Call every contender once per round, in the same order each round; return each one's values.

    Each round's line also shows how many cores other processes of the machine kept busy during
    it (not this script nor its `own_pids` children): on a shared machine that is the noise.
    """
    results: Dict[str, List[float]] = {name: [] for name, _ in contenders}
    results["_others_cores"] = []
    for r in range(rounds):
        line = []
        meter = OtherLoad(own_pids())
        for name, measure in contenders:
            value = measure()
            results[name].append(value)
            line.append(f"{name} {value:.4g}")
        others = meter.cores()
        results["_others_cores"].append(others)
        print(f"  {label} {r + 1}/{rounds} (other processes busy {others:.1f} cores): " + ", ".join(line),
              flush=True)
    return results


class OtherLoad:
    """CPU time spent by processes other than this one and `pids`, in cores, since creation (Linux /proc)."""

    def __init__(self, pids: Sequence[int] = ()):
        self.pids = [os.getpid(), *pids]
        self.start = (time.perf_counter(), self._busy(), self._own())

    def cores(self) -> float:
        wall, busy, own = time.perf_counter(), self._busy(), self._own()
        seconds = wall - self.start[0]
        if seconds <= 0 or busy is None:
            return float("nan")
        return max(0.0, ((busy - self.start[1]) - (own - self.start[2])) / seconds)

    @staticmethod
    def _busy() -> Optional[float]:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    def _own(self) -> float:
        total = 0
        for pid in self.pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime (this process and its threads)
                if pid == os.getpid():
                    total += int(fields[13]) + int(fields[14])  # cutime, cstime: its children that have ended
            except (OSError, ValueError, IndexError):
                pass
        return total / os.sysconf("SC_CLK_TCK")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: Optional[str] = None) -> str:
    """A Markdown table (readable as plain text too); printed and returned."""
    cells = [[str(h) for h in headers]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [] if title is None else [f"### {title}", ""]
    for i, row in enumerate(cells):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
        if i == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    text = "\n".join(lines)
    print("\n" + text + "\n", flush=True)
    return text


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def machine() -> Dict[str, str]:
    """CPU model, core count, Python and TensorFlow versions (without importing TensorFlow)."""
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for package in ("tensorflow", "keras"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "?"
    return {"cpu": cpu, "cores": str(os.cpu_count()), "python": platform.python_version(), **versions}


def print_header(title: str, args: argparse.Namespace, settings: Dict[str, Any]) -> None:
    m = machine()
    print(f"# {title}\n")
    print(f"machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}, TensorFlow {m['tensorflow']}, "
          f"Keras {m['keras']}")
    print(f"command: python {' '.join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:])}")
    print(f"tree: {tree_state()}; started {time.strftime('%Y-%m-%d %H:%M:%S')}, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()), flush=True)


def tree_state() -> str:
    """The commit the work tree is at and whether worklab/, conf/ or run.py have local changes (read-only git)."""
    def git(*args):
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "?"
    changed = git("status", "--porcelain", "--", "worklab", "conf", "run.py")
    return f"commit {commit}" + (f" with {len(changed.splitlines())} uncommitted change(s) in worklab/, conf/, run.py"
                                 if changed else ", worklab/, conf/ and run.py clean")


def demo_set(image_size: int = 48, train_per_class: int = 100, test_per_class: int = 30, seed: int = 0):
    """The worklab demo set under bench/.data (written on first use); (train_json, test_json)."""
    from worklab.data.demo import ensure_demo

    return ensure_demo(DATA, image_size, train_per_class, test_per_class, seed)


# Child-process workers ------------------------------------------------------------------------------

class Worker:
    """A child process running `script --worker SPEC`, driven by one JSON command per round."""

    def __init__(self, name: str, script: str, spec: Dict[str, Any], env: Optional[Dict[str, str]] = None):
        self.name = name
        self.spec = spec
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log_path = LOGS / f"{Path(script).stem}-{_slug(name)}.log"
        self._log = open(self.log_path, "w")
        child_env = dict(os.environ, **(env or {}))
        child_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        child_env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen([sys.executable, script, "--worker", json.dumps(spec)], cwd=REPO,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     env=child_env, text=True)
        self.info: Dict[str, Any] = {}
        self._paused = False

    def wait_ready(self) -> Dict[str, Any]:
        """Wait for the child's set-up (build, trace, warm-up) to finish, then freeze it."""
        self.info = self._read()
        self.pause()
        return self.info

    def call(self, command: str, **kwargs) -> Dict[str, Any]:
        """Resume the child, run one command in it, freeze it again; return its reply."""
        self.resume()
        try:
            self.proc.stdin.write(json.dumps({"command": command, **kwargs}) + "\n")
            self.proc.stdin.flush()
            return self._read()
        finally:
            self.pause()

    def pause(self) -> None:
        if self.proc.poll() is None and not self._paused:
            os.kill(self.proc.pid, signal.SIGSTOP)
            self._paused = True

    def resume(self) -> None:
        if self.proc.poll() is None and self._paused:
            os.kill(self.proc.pid, signal.SIGCONT)
            self._paused = False

    def close(self, wait: bool = True) -> None:
        """Let the child finish (EOF on its stdin ends its command loop); kill it if it hangs."""
        if self.proc.poll() is None:
            self.resume()
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        if wait:
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self._log.close()

    def _read(self) -> Dict[str, Any]:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait()
                raise RuntimeError(f"worker {self.name!r} exited ({self.proc.returncode}); "
                                   f"last lines of {self.log_path}:\n{_tail(self.log_path)}")
            if line.startswith(_PREFIX):
                reply = json.loads(line[len(_PREFIX):])
                if "error" in reply:
                    raise RuntimeError(f"worker {self.name!r} failed:\n{reply['error']}")
                return reply


def launch(makers: Sequence[Callable[[], Worker]], at_once: int = 2) -> List[Worker]:
    """Start workers in order, at most `at_once` setting up at a time (set-up is untimed, but the
    cores and memory are shared); each is frozen once ready, and the next one is started. Put a
    worker with a long set-up first: the others then set up beside it. On any failure the
    started ones are closed and the error raised."""
    workers: List[Worker] = []
    pending = list(makers)
    running: Dict[Any, Tuple[Worker, float]] = {}
    try:
        while pending or running:
            while pending and len(running) < at_once:
                worker = pending.pop(0)()
                workers.append(worker)
                running[worker.proc.stdout] = (worker, time.perf_counter())
            for pipe in select.select(list(running), [], [])[0]:
                worker, started = running.pop(pipe)
                worker.wait_ready()  # its only output during set-up is the one ready line
                print(f"  worker ready: {worker.name} ({time.perf_counter() - started:.0f} s)", flush=True)
    except BaseException:
        close_all(workers)
        raise
    return workers


def close_all(workers: Sequence[Worker]) -> None:
    """Close every worker, all at once (each takes a few seconds to tear TensorFlow down)."""
    for wait in (False, True):
        for worker in workers:
            try:
                worker.close(wait=wait)
            except Exception as error:  # closing the rest matters more than this one's error
                print(f"  closing {worker.name}: {error}", file=sys.stderr)


def serve(setup: Callable[[Dict[str, Any]], Tuple[Dict[str, Any], Dict[str, Callable[..., Dict[str, Any]]]]],
          spec_json: str) -> None:
    """Worker side: run `setup(spec)` -> (info, handlers), report info, then answer commands until EOF.

    Replies go to a private copy of stdout; file descriptor 1 is pointed at stderr so that
    whatever TensorFlow or Keras print cannot corrupt the protocol.
    """
    _die_with_parent()
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def reply(message: Dict[str, Any]) -> None:
        out.write(_PREFIX + json.dumps(message) + "\n")
        out.flush()

    try:
        info, handlers = setup(json.loads(spec_json))
    except BaseException:
        reply({"error": traceback.format_exc()})
        return
    reply(info)
    for line in sys.stdin:
        request = json.loads(line)
        try:
            reply(handlers[request.pop("command")](**request))
        except BaseException:
            reply({"error": traceback.format_exc()})


def _die_with_parent() -> None:
    """Ask Linux to kill this worker if the driving script dies (a frozen worker reads no EOF)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def print_workers(infos) -> None:
    """One line per worker process: what it reported about itself (settings, set-up times)."""
    print("workers:")
    for name, info in infos.items():
        print(f"  {name}: " + ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                                        for k, v in info.items()))
