"""SMTP intake throughput: emaild end to end beside a bare aiosmtpd sink.

Each server runs in its own process on loopback; one asyncio load generator
(another process) runs 1, 8 and 32 concurrent clients, each opening a new
connection per message (EHLO, MAIL, RCPT, DATA, QUIT) with a unique 4 KiB
message. Latency is connect -> final reply to DATA. Figures for both servers
come from the same run, so the ratio is the figure to read.

- bare: aiosmtpd with a handler whose DATA hook answers 250 and stores nothing.
- stub: the emaild daemon and listener with a pipeline that stores nothing
  (what the SMTP layer itself costs).
- emaild: ``emaild run`` on its defaults (SQLite in WAL mode, blob store,
  parse, rules, threading, commit, JSON logs) in a fresh state directory.

Then memory: several oversized messages (no SIZE declared, so the server has
to read them) must each get 552 while the daemon's peak RSS stays bounded.

    .venv/bin/python bench/bench_smtp.py [--messages 1500] [--seconds 20]
    .venv/bin/python bench/bench_smtp.py --database-url postgresql+psycopg://...

With ``--workers 1,2`` (PostgreSQL only) it compares instead ``emaild run
--workers N`` for each N at 32 clients, in one run, and prints the throughput
ratio and where the CPU went: the supervisor and its workers, PostgreSQL's
processes, and this load generator (from /proc and ``getrusage``), since on a
small machine they all share the same cores.

    .venv/bin/python bench/bench_smtp.py --workers 1,2 --database-url postgresql+psycopg://...

Bounded in count (``--messages`` per level) and time (``--seconds`` per level).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LEVELS = (1, 8, 32)
MESSAGE_BYTES = 4096

BARE_SINK = r"""
import asyncio, sys
from aiosmtpd.smtp import SMTP

class Sink:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"

async def main(port):
    loop = asyncio.get_running_loop()
    # hostname given, as emaild does: otherwise aiosmtpd resolves the FQDN per
    # connection and the baseline would be artificially slow.
    server = await loop.create_server(
        lambda: SMTP(Sink(), hostname="bench.local", data_size_limit=36700160),
        "127.0.0.1", port, backlog=1024)
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main(int(sys.argv[1])))
"""


# The daemon with its pipeline replaced by a stub that stores nothing: how much
# of the gap is the listener itself (RCPT lookup, worker hand-off, session log)
# and how much the pipeline.
LISTENER_ONLY = r"""
import os, sys, tempfile
from pathlib import Path
from emaild import logs
from emaild.app import App
from emaild.config import load_config
from emaild.daemon import Daemon
from emaild.pipeline import IngestResult, Outcome

state = tempfile.mkdtemp(prefix="emaild-bench-stub-")
config = load_config(Path(sys.argv[2]), {"EMAILD_STATE_DIR": state, "HOME": state,
                                   "EMAILD_SMTP_LISTEN": "127.0.0.1:" + sys.argv[1]})
logs.configure(config.logging.level, config.logging.format)
app = App.open(config)
app.pipeline.ingest = lambda raw, envelope, **kw: IngestResult(Outcome.NEW_CASE, case_number=1)
sys.exit(Daemon(app, components=()).run())
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def build_message(n: int, run: str) -> bytes:
    head = (
        f"From: Customer {n} <customer{n % 97}@customer.test>\r\n"
        f"To: Support <support@example.com>\r\n"
        f"Subject: Order {n} has not arrived\r\n"
        f"Message-ID: <bench-{run}-{n}@customer.test>\r\n"
        f"Date: Mon, 03 Feb 2025 10:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    ).encode()
    line = b"Hello, my order has not arrived yet. Could you please look into it?\r\n"
    body = (line * (MESSAGE_BYTES // len(line) + 1))[: MESSAGE_BYTES - len(head) - 2]
    return head + body + b"\r\n"


@dataclass
class Level:
    clients: int
    sent: int
    failed: int
    seconds: float
    latencies: list[float]
    failures: Counter[str] = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def send_one(port: int, raw: bytes) -> tuple[float, str]:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:

        async def reply() -> str:
            while True:
                line = await reader.readline()
                if not line:
                    return "closed"
                if line[3:4] != b"-":
                    return line.decode().rstrip()

        await reply()
        for command in (b"EHLO bench.client", b"MAIL FROM:<bench@customer.test>"):
            writer.write(command + b"\r\n")
            await reply()
        writer.write(b"RCPT TO:<support@example.com>\r\n")
        answer = await reply()
        if not answer.startswith("250"):
            return time.perf_counter() - started, f"rcpt refused: {answer[:60]}"
        writer.write(b"DATA\r\n")
        await reply()
        writer.write(raw + b".\r\n")
        final = await reply()
        elapsed = time.perf_counter() - started
        writer.write(b"QUIT\r\n")
        await reply()
        return elapsed, final
    finally:
        writer.close()


async def run_level(port: int, clients: int, count: int, seconds: float, run: str) -> Level:
    messages = [build_message(n, f"{run}-{clients}") for n in range(count)]
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for raw in messages:
        queue.put_nowait(raw)
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    started = time.perf_counter()
    stop_at = started + seconds

    async def client() -> None:
        while time.perf_counter() < stop_at:
            try:
                raw = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                elapsed, final = await send_one(port, raw)
            except OSError as exc:
                failures[type(exc).__name__] += 1
                continue
            if final.startswith("250"):
                latencies.append(elapsed)
            else:
                failures[final] += 1

    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    return Level(clients, len(latencies), failures.total(), elapsed, latencies, failures)


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("server did not start")


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def start_emaild(
    port: int, state: Path, database_url: str, workers: int = 1, config: Path | None = None
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMAILD_", "NOTIFY_"))}
    env.update(
        {
            "EMAILD_STATE_DIR": str(state),
            "EMAILD_SMTP_LISTEN": f"127.0.0.1:{port}",
            "HOME": str(state),
        }
    )
    if database_url:
        env["EMAILD_DATABASE_URL"] = database_url
    if config is not None:
        env["EMAILD_CONFIG"] = str(config)
    log = (state.parent / "emaild.log").open("wb")
    command = [sys.executable, "-m", "emaild", "run", "--workers", str(workers)]
    return subprocess.Popen(command, env=env, stdout=log, stderr=log, cwd=ROOT)


def measure(
    name: str, proc: subprocess.Popen[bytes], port: int, args: argparse.Namespace
) -> list[Level]:
    wait_port(port, proc)
    asyncio.run(run_level(port, 4, 40, 10, f"{name}-warm"))  # imports, pools, caches
    results = []
    for clients in LEVELS:
        level = asyncio.run(run_level(port, clients, args.messages, args.seconds, name))
        results.append(level)
        print(
            f"  {name:6} {clients:3} clients: {level.rate:8.1f} msg/s  "
            f"p50 {level.percentile(0.5):6.1f} ms  p99 {level.percentile(0.99):6.1f} ms  "
            f"({level.sent} sent, {level.failed} failed, {level.seconds:.1f} s)",
            flush=True,
        )
        for reply, n in level.failures.most_common():
            print(f"           {n} x {reply}")
    return results


async def send_oversize(port: int, size: int) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:

        async def reply() -> str:
            while True:
                line = await reader.readline()
                if line[3:4] != b"-":
                    return line.decode().rstrip()

        await reply()
        for command in (
            b"EHLO bench.client",
            b"MAIL FROM:<big@customer.test>",
            b"RCPT TO:<support@example.com>",
            b"DATA",
        ):
            writer.write(command + b"\r\n")
            await reply()
        writer.write(b"From: big@customer.test\r\nSubject: huge\r\n\r\n")
        chunk = (b"A" * 998 + b"\r\n") * 1024
        sent = 0
        try:
            while sent < size:
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
            writer.write(b".\r\n")
        except (ConnectionResetError, BrokenPipeError):
            # The server answered and closed before the end: its reply is still
            # waiting to be read (or the connection was simply dropped).
            with contextlib.suppress(OSError):
                return await reply() or f"closed after {sent / 2**20:.0f} MiB, no reply"
            return f"reset after {sent / 2**20:.0f} MiB, no reply"
        return await reply()
    finally:
        writer.close()


def oversize(proc: subprocess.Popen[bytes], port: int, count: int, size: int) -> None:
    before = rss_kib(proc.pid, "VmRSS")
    replies = [asyncio.run(send_oversize(port, size)) for _ in range(count)]
    peak = rss_kib(proc.pid, "VmHWM")
    after = rss_kib(proc.pid, "VmRSS")
    print(
        f"  oversize: {count} x {size / 2**20:.0f} MiB without SIZE -> "
        f"{sorted(set(replies))}; daemon RSS {before / 1024:.0f} MiB before, "
        f"peak {peak / 1024:.0f} MiB, {after / 1024:.0f} MiB after "
        f"(total sent {count * size / 2**20:.0f} MiB)"
    )


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def proc_stat(pid: int) -> tuple[str, int, float]:
    """(command name, parent pid, CPU seconds used) of a process, from /proc."""
    text = Path(f"/proc/{pid}/stat").read_text()
    name = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    return name, int(fields[1]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpu_by_group(supervisor: int, database: str) -> dict[str, float]:
    """CPU seconds so far of the supervisor, its workers and PostgreSQL's processes
    that work for this run: the backends connected to ``database`` and the shared
    writers (WAL writer, checkpointer, background writer). Other databases'
    backends (other work on the same server) are left out."""
    out = {"emaild main process": 0.0, "emaild workers": 0.0, "postgres": 0.0}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name, parent, seconds = proc_stat(int(entry.name))
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
        if int(entry.name) == supervisor:
            out["emaild main process"] += seconds  # the supervisor, or the daemon itself
        elif parent == supervisor:
            out["emaild workers"] += seconds
        elif name.startswith("postgres") and (
            f" {database} " in title or title.split(": ")[-1].strip() in PG_WRITERS
        ):
            out["postgres"] += seconds
    return out


PG_WRITERS = ("walwriter", "checkpointer", "background writer")


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def wait_workers(proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    """Until the supervisor logged that all its workers are ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"emaild exited with {proc.returncode}")
        if '"supervisor.ready"' in log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise SystemExit("workers did not start")


def commits(database_url: str) -> int:
    """Transactions committed so far in the database (``pg_stat_database``; the
    statistics lag by up to ``stats_fetch_consistency``'s snapshot, not more)."""
    import psycopg

    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return int(row[0]) if row else 0


# The per-client-address limits (connections at once, new ones per minute) hold
# per process: with N workers one address gets N times them. All the load comes
# from 127.0.0.1 here, so they are lifted for every N alike: this measures
# capacity, not the limits.
SCALING_CONFIG = """
[[address]]
address = "support@example.com"

[smtp]
max_connections_per_ip = 1000
max_connection_rate_per_ip = 1000000
"""


def scaling(args: argparse.Namespace, counts: list[int]) -> None:
    """``emaild run --workers N`` for each N at 32 clients, with the CPU split."""
    clients = LEVELS[-1]
    rows = []
    print("per-address connection limits lifted for all runs (one client address here)")
    for workers in counts:
        with tempfile.TemporaryDirectory(prefix="emaild-bench-") as tmp:
            state = Path(tmp) / "state"
            state.mkdir()
            config = Path(tmp) / "emaild.toml"
            config.write_text(SCALING_CONFIG)
            port = free_port()
            proc = start_emaild(port, state, args.database_url, workers, config)
            try:
                wait_port(port, proc)
                if workers > 1:
                    wait_workers(proc, Path(tmp) / "emaild.log")
                # Every worker imports, connects and warms up before the clock starts.
                asyncio.run(run_level(port, 4 * workers, 40 * workers, 20, f"w{workers}-warm"))
                commits_before = commits(args.database_url)
                database = args.database_url.rsplit("/", 1)[1].split("?")[0]
                before, load_before = cpu_by_group(proc.pid, database), self_cpu()
                level = asyncio.run(
                    run_level(port, clients, args.messages, args.seconds, f"w{workers}")
                )
                after, load_after = cpu_by_group(proc.pid, database), self_cpu()
                time.sleep(11.0)  # an idle backend reports its commits to pg_stat within 10 s
                per_message = (commits(args.database_url) - commits_before) / max(1, level.sent)
            finally:
                code = stop(proc)
        cpu = {k: after[k] - before[k] for k in after}
        cpu["load generator"] = load_after - load_before
        rows.append((workers, level, cpu))
        split = ", ".join(f"{k} {v:.1f} s" for k, v in cpu.items())
        print(
            f"  workers={workers}: {level.rate:7.1f} msg/s  p50 {level.percentile(0.5):6.1f} ms  "
            f"p99 {level.percentile(0.99):6.1f} ms  ({level.sent} sent, {level.failed} failed, "
            f"{level.seconds:.1f} s; exit {code}; {per_message:.2f} commits/message)"
            f"\n      CPU: {split} "
            f"= {sum(cpu.values()) / level.seconds:.2f} cores busy of {os.cpu_count()}",
            flush=True,
        )
        for reply, n in level.failures.most_common(3):
            print(f"           {n} x {reply}")
    base = rows[0][1].rate
    for workers, level, _cpu in rows[1:]:
        print(
            f"\nthroughput ratio workers={workers} / workers={rows[0][0]} at {clients} clients: "
            f"{level.rate / base if base else 0.0:.2f}"
        )
    for workers, _level, cpu in rows:
        total = sum(cpu.values()) or 1.0
        shares = ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in cpu.items())
        print(f"CPU split workers={workers}: {shares}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1500, help="messages per level")
    parser.add_argument("--seconds", type=float, default=20.0, help="time cap per level")
    parser.add_argument("--database-url", default="", help="default: SQLite in a temp dir")
    parser.add_argument("--oversize", type=int, default=3, help="oversized messages to send")
    parser.add_argument(
        "--workers", default="", help="compare 'emaild run --workers N' for N in e.g. 1,2"
    )
    args = parser.parse_args()
    print(f"4 KiB messages, new connection per message, {os.cpu_count()} CPUs, loopback")
    if args.workers:
        if not args.database_url.startswith("postgresql"):
            raise SystemExit("--workers needs --database-url postgresql+psycopg://...")
        scaling(args, [int(n) for n in args.workers.split(",")])
        return

    port = free_port()
    bare = subprocess.Popen([sys.executable, "-c", BARE_SINK, str(port)], stdout=subprocess.DEVNULL)
    try:
        sink = measure("bare", bare, port, args)
    finally:
        stop(bare)

    # All the load comes from 127.0.0.1: its per-address limits are lifted for
    # the stub and emaild alike (SCALING_CONFIG), or they would measure the limits.
    print("per-address connection limits lifted (one client address here)")
    lifted = Path(tempfile.mkdtemp(prefix="emaild-bench-config-")) / "emaild.toml"
    lifted.write_text(SCALING_CONFIG)
    atexit.register(shutil.rmtree, lifted.parent, True)
    port = free_port()
    stub = subprocess.Popen(
        [sys.executable, "-c", LISTENER_ONLY, str(port), str(lifted)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        listener = measure("stub", stub, port, args)
    finally:
        stop(stub)

    with tempfile.TemporaryDirectory(prefix="emaild-bench-") as tmp:
        state = Path(tmp) / "state"
        state.mkdir()
        port = free_port()
        proc = start_emaild(port, state, args.database_url, config=lifted)
        try:
            ours = measure("emaild", proc, port, args)
            if args.oversize:
                oversize(proc, port, args.oversize, 40 * 2**20)
        finally:
            code = stop(proc)
        print(f"  emaild exit status after SIGTERM: {code}")
        problems = [
            line
            for line in (Path(tmp) / "emaild.log").read_text(errors="replace").splitlines()
            if '"level": "error"' in line or '"level": "warning"' in line
        ]
        print(f"  emaild log: {len(problems)} warnings/errors")
        for line in problems[:3]:
            print("    " + line[:300])

    print(
        "\nclients  bare msg/s  stub msg/s (ratio)  emaild msg/s (ratio)"
        "  emaild p50 ms  emaild p99 ms"
    )
    for b, st, e in zip(sink, listener, ours, strict=True):
        print(
            f"{b.clients:7}  {b.rate:10.1f}  {st.rate:10.1f} ({st.rate / b.rate:4.2f})"
            f"  {e.rate:12.1f} ({e.rate / b.rate:4.2f})"
            f"  {e.percentile(0.5):13.1f}  {e.percentile(0.99):13.1f}"
        )
    last_b, last_e = sink[-1], ours[-1]
    ratio = last_e.rate / last_b.rate if last_b.rate else 0.0
    one_b, one_e = sink[0], ours[0]
    one = one_e.rate / one_b.rate if one_b.rate else 0.0
    print(
        f"\nissue 19's goals: at 32 clients ratio >= 0.35 (got {ratio:.2f}) with "
        f"p99 <= 100 ms (got {last_e.percentile(0.99):.1f} ms); "
        f"at 1 client ratio >= 0.4 (got {one:.2f})"
    )


if __name__ == "__main__":
    main()
