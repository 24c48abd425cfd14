"""`rvm-tegrastats-exporter`: the Jetson's own telemetry (tegrastats) as Prometheus metrics.

One long-lived `tegrastats --interval N` child; every line it prints is parsed and
replaces the previous one, and `/metrics` shows the values of the last line: RAM and
swap, per-core CPU load and clock (offline cores as `rvm_jetson_cpu_online 0`), GPU
(GR3D) and EMC load and clock, the accelerator engines, every temperature sensor
(-256 C means "no sensor there": exported as offline, never as a temperature), every
power rail's instant and average power, and the nvpmodel mode (`nvpmodel -q`, at
start and then every `--nvpmodel-interval` seconds). A child that dies is started
again with exponential backoff. Values older than `--stale-after` are withdrawn
(`rvm_tegrastats_up 0`) rather than shown as if current.

The parser reads JetPack 4, 5 and 6 lines, with or without the leading timestamp.
A field it does not know is skipped and counted in
`rvm_tegrastats_unknown_fields_total{field}`; a line without the RAM field every
tegrastats line has (an error message, a cut line) is counted in
`rvm_tegrastats_parse_errors_total`, logged at most once a minute, and does not replace
the last good line.

`--once` reads lines on standard input instead and prints the exposition of the
last line (no HTTP server, no child, no nvpmodel), for checks and tests:
    tegrastats --interval 1000 | head -1 | rvm-tegrastats-exporter --once

Only the standard library and prometheus_client: it runs beside the detector on
every device and must stay small (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, generate_latest, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("rvm_detector.tegrastats")

DEFAULT_LISTEN = "127.0.0.1:9102"
MHZ = 1_000_000
_UNIT_BYTES = {"B": 1, "kB": 1024, "KB": 1024, "MB": 1024**2, "GB": 1024**3}

# Accelerator engines tegrastats reports as `NAME off`, `NAME <MHz>` or `NAME <load>%@<MHz>`
# (JetPack 4 adds `_FREQ` to some: `VIC_FREQ 0%@115`). Anything else of that shape is unknown.
ENGINES = frozenset(
    {"APE", "NVDEC", "NVDEC1", "NVENC", "NVENC1", "NVJPG", "NVJPG1", "VIC", "OFA", "MSENC", "SE"}
    | {f"NVDLA{i}" for i in range(2)}
    | {f"DLA{i}_{part}" for i in range(2) for part in ("CORE", "FALC")}
    | {f"PVA{i}_{part}" for i in range(2) for part in ("VPS0", "VPS1", "AXI", "CPU_AXI")}
)

_NUM = r"-?\d+(?:\.\d+)?"
_TIMESTAMP = re.compile(r"\d\d-\d\d-\d{4} \d\d:\d\d:\d\d(?=\s|$)")
_MEMORY = re.compile(r"(RAM|SWAP) (\d+)/(\d+)(B|kB|KB|MB|GB)(?: ?\([^)]*\))?(?=\s|$)")
_CPU = re.compile(r"CPU \[([^\]]*)\](?=\s|$)")
_CPU_CORE = re.compile(r"(\d+)%(?:@(\d+))?")
# GR3D_FREQ 99%@[612] | 7%@[1300,1300] | 0%@318 | 0% (no clock without root)
_LOAD_FREQ = re.compile(r"(EMC_FREQ|GR3D_FREQ) (\d+)%(?:@\[?(\d+(?:,\d+)*)\]?)?(?=\s|$)")
_ENGINE = re.compile(r"([A-Z][A-Z0-9_]*?)(?:_FREQ)? (off|(\d+)%@(\d+)|(\d+))(?=\s|$)")
_TEMPERATURE = re.compile(rf"([A-Za-z][A-Za-z0-9_]*)@({_NUM})C(?=\s|$)")
# VDD_IN 4809mW/4809mW (JetPack 5/6) | VDD_IN 4809/4809mW | POM_5V_IN 1109/1109 (JetPack 4)
_RAIL = re.compile(r"([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?=\s|$)")
_WORD = re.compile(r"\S+")
_NAME = re.compile(r"[A-Z][A-Z0-9_]+ ")  # an upper-case word: the next field's name


class ParseError(ValueError):
    """Not a tegrastats line: it lacks the RAM field every tegrastats line has."""


@dataclass
class Core:
    online: bool
    load: float | None = None  # ratio 0..1
    hertz: float | None = None  # None: tegrastats printed no clock (no root)


@dataclass
class Sample:
    """The values of one tegrastats line, in base units (bytes, ratio, hertz, celsius, watts)."""

    memory: dict[str, tuple[int, int]] = field(default_factory=dict)  # RAM/SWAP: (used, total)
    cpus: list[Core] = field(default_factory=list)
    gpu_load: float | None = None
    gpu_hertz: list[float] = field(default_factory=list)  # one per GPC
    emc_load: float | None = None
    emc_hertz: float | None = None
    engines: dict[str, float | None] = field(default_factory=dict)  # None: off
    temperatures: dict[str, float | None] = field(default_factory=dict)  # None: offline (-256C)
    rails: dict[str, tuple[float, float]] = field(default_factory=dict)  # (instant, average)
    unknown: list[str] = field(default_factory=list)


def _cpus(body: str) -> list[Core]:
    cores = []
    for entry in body.split(","):
        entry = entry.strip()
        m = _CPU_CORE.fullmatch(entry)
        if entry == "off" or not m:
            cores.append(Core(online=False))
            continue
        hertz = float(m.group(2)) * MHZ if m.group(2) else None
        cores.append(Core(online=True, load=int(m.group(1)) / 100, hertz=hertz))
    return cores


def _field(sample: Sample, line: str, pos: int) -> int | None:
    """Parse the known field at `pos` into `sample`; its end, or None if none is known there."""
    if m := _MEMORY.match(line, pos):
        unit = _UNIT_BYTES[m.group(4)]
        sample.memory[m.group(1)] = (int(m.group(2)) * unit, int(m.group(3)) * unit)
    elif m := _CPU.match(line, pos):
        sample.cpus = _cpus(m.group(1))
    elif m := _LOAD_FREQ.match(line, pos):
        load = int(m.group(2)) / 100
        clocks = [float(f) * MHZ for f in m.group(3).split(",")] if m.group(3) else []
        if m.group(1) == "GR3D_FREQ":
            sample.gpu_load, sample.gpu_hertz = load, clocks
        else:
            sample.emc_load, sample.emc_hertz = load, (clocks[0] if clocks else None)
    elif m := _TEMPERATURE.match(line, pos):
        celsius = float(m.group(2))
        sample.temperatures[m.group(1).lower()] = None if celsius <= -256 else celsius
    elif m := _RAIL.match(line, pos):
        if m.group(1) != "NC":  # AGX Orin lists unconnected monitor channels as `NC 0mW/0mW`
            sample.rails[m.group(1)] = (int(m.group(2)) / 1000, int(m.group(3)) / 1000)
    elif (m := _ENGINE.match(line, pos)) and m.group(1) in ENGINES:
        mhz = m.group(4) or m.group(5)
        sample.engines[m.group(1)] = None if m.group(2) == "off" else float(mhz) * MHZ
    else:
        return None
    return m.end()


def parse_line(line: str) -> Sample:
    """One tegrastats line -> Sample. Unknown fields are skipped (listed in `unknown`)."""
    line = line.strip()
    sample = Sample()
    pos, known = 0, 0
    if m := _TIMESTAMP.match(line):
        pos = m.end()
    while True:
        while pos < len(line) and line[pos].isspace():
            pos += 1
        if pos >= len(line):
            break
        end = _field(sample, line, pos)
        if end is not None:
            known += 1
            pos = end
            continue
        # An unknown field: its name is the next word; its values are the words up to the
        # next known field or upper-case name (`MTS fg 0% bg 0%`, `IRAM 0/252kB(lfb 252kB)`).
        word = _WORD.match(line, pos)
        sample.unknown.append(re.sub(r"[^A-Za-z0-9_]", "", word.group().split("@")[0])[:40] or "?")
        pos = word.end()
        while pos < len(line):
            while pos < len(line) and line[pos].isspace():
                pos += 1
            if pos >= len(line) or _NAME.match(line, pos) or _field(Sample(), line, pos):
                break
            pos = _WORD.match(line, pos).end()
    if "RAM" not in sample.memory:  # every tegrastats line has it, whatever the board
        what = "no RAM field" if known else "no tegrastats field"
        raise ParseError(f"{what} in line: {line[:120]!r}")
    return sample


def parse_nvpmodel(text: str) -> tuple[str, str] | None:
    """`nvpmodel -q` output -> (mode id, mode name), or None if it does not say.

    The tool prints `NV Power Mode: 15W` then the id on a line of its own (after any
    `NVPM WARN` lines)."""
    m = re.search(r"NV Power Mode:\s*(\S+)\s*\n\s*(\d+)\s*$", text, re.MULTILINE)
    return (m.group(2), m.group(1)) if m else None


class TegrastatsCollector(Collector):
    """Exposes the last Sample; everything withdrawn once it is older than `stale_after`."""

    def __init__(self, stale_after: float | None = None) -> None:
        self._lock = threading.Lock()
        self._sample: Sample | None = None
        self._at = 0.0
        self._nvpmodel: tuple[str, str] | None = None
        self.stale_after = stale_after

    def update(self, sample: Sample, at: float | None = None) -> None:
        with self._lock:
            self._sample, self._at = sample, time.time() if at is None else at

    def set_nvpmodel(self, mode: tuple[str, str] | None) -> None:
        with self._lock:
            self._nvpmodel = mode

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []  # the series vary with the board: never checked at registration

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            sample, at, nvpmodel = self._sample, self._at, self._nvpmodel
        fresh = sample is not None and (
            self.stale_after is None or time.time() - at <= self.stale_after
        )
        yield GaugeMetricFamily(
            "rvm_tegrastats_up", "1 while tegrastats delivers fresh lines", value=int(fresh)
        )
        if sample is not None:
            yield GaugeMetricFamily(
                "rvm_tegrastats_last_line_timestamp_seconds",
                "Unix time the last parsed tegrastats line was read",
                value=at,
            )
        if nvpmodel is not None:
            info = GaugeMetricFamily(
                "rvm_jetson_nvpmodel_info",
                "The power mode nvpmodel -q reports (always 1; id and name as labels)",
                labels=["id", "name"],
            )
            info.add_metric(list(nvpmodel), 1)
            yield info
        if fresh:
            yield from _families(sample)


def _gauge(name: str, doc: str, labels: list[str], rows: Iterable[tuple]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for *label_values, value in rows:
        family.add_metric([str(v) for v in label_values], value)
    return family


def _families(s: Sample) -> Iterator[GaugeMetricFamily]:
    for kind, (used, total) in sorted(s.memory.items()):
        k = kind.lower()
        yield GaugeMetricFamily(f"rvm_jetson_{k}_used_bytes", f"{kind} in use", value=used)
        yield GaugeMetricFamily(f"rvm_jetson_{k}_total_bytes", f"{kind} size", value=total)
    if s.cpus:
        cores = list(enumerate(s.cpus))
        yield _gauge(
            "rvm_jetson_cpu_online",
            "1 when the core is online (tegrastats 'off': 0)",
            ["core"],
            ((i, int(c.online)) for i, c in cores),
        )
        yield _gauge(
            "rvm_jetson_cpu_load_ratio",
            "Load of an online core, 0..1",
            ["core"],
            ((i, c.load) for i, c in cores if c.online),
        )
        yield _gauge(
            "rvm_jetson_cpu_frequency_hertz",
            "Clock of an online core",
            ["core"],
            ((i, c.hertz) for i, c in cores if c.hertz is not None),
        )
    if s.gpu_load is not None:
        yield GaugeMetricFamily("rvm_jetson_gpu_load_ratio", "GR3D load, 0..1", value=s.gpu_load)
        yield _gauge(
            "rvm_jetson_gpu_frequency_hertz",
            "GR3D clock per GPC (absent when tegrastats runs without root)",
            ["gpc"],
            enumerate(s.gpu_hertz),
        )
    if s.emc_load is not None:
        yield GaugeMetricFamily(
            "rvm_jetson_emc_load_ratio", "Memory controller load, 0..1", value=s.emc_load
        )
        if s.emc_hertz is not None:
            yield GaugeMetricFamily(
                "rvm_jetson_emc_frequency_hertz", "Memory controller clock", value=s.emc_hertz
            )
    if s.engines:
        yield _gauge(
            "rvm_jetson_engine_online",
            "1 when the accelerator engine is clocked (tegrastats 'off': 0)",
            ["engine"],
            ((n, int(hz is not None)) for n, hz in sorted(s.engines.items())),
        )
        yield _gauge(
            "rvm_jetson_engine_frequency_hertz",
            "Clock of an accelerator engine that is on",
            ["engine"],
            ((n, hz) for n, hz in sorted(s.engines.items()) if hz is not None),
        )
    if s.temperatures:
        temps = sorted(s.temperatures.items())
        yield _gauge(
            "rvm_jetson_temperature_sensor_online",
            "1 when the sensor reads a temperature (tegrastats -256C: 0)",
            ["sensor"],
            ((n, int(c is not None)) for n, c in temps),
        )
        yield _gauge(
            "rvm_jetson_temperature_celsius",
            "Temperature per online sensor (sensor names lower-cased)",
            ["sensor"],
            ((n, c) for n, c in temps if c is not None),
        )
    if s.rails:
        rails = sorted(s.rails.items())
        yield _gauge(
            "rvm_jetson_power_watts",
            "Instant power per rail",
            ["rail"],
            ((n, cur) for n, (cur, _) in rails),
        )
        yield _gauge(
            "rvm_jetson_power_average_watts",
            "Average power per rail since tegrastats started",
            ["rail"],
            ((n, avg) for n, (_, avg) in rails),
        )


class Exporter:
    """The registry and the bookkeeping around parsing: counters, rate-limited error logs."""

    ERROR_LOG_EVERY_S = 60.0
    MAX_UNKNOWN = 50  # distinct `field` labels of rvm_tegrastats_unknown_fields_total

    def __init__(self, stale_after: float | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.collector = TegrastatsCollector(stale_after)
        self.registry.register(self.collector)
        self.lines = Counter(
            "rvm_tegrastats_lines", "Lines read from tegrastats", registry=self.registry
        )
        self.parse_errors = Counter(
            "rvm_tegrastats_parse_errors",
            "Lines that are not tegrastats lines (no RAM field): skipped",
            registry=self.registry,
        )
        self.unknown_fields = Counter(
            "rvm_tegrastats_unknown_fields",
            "Fields skipped because this exporter does not know them",
            ["field"],
            registry=self.registry,
        )
        self.restarts = Counter(
            "rvm_tegrastats_restarts",
            "Times the tegrastats child was started again after it ended",
            registry=self.registry,
        )
        self.nvpmodel_errors = Counter(
            "rvm_tegrastats_nvpmodel_errors",
            "nvpmodel -q runs that failed or printed no mode",
            registry=self.registry,
        )
        self._unknown_seen: set[str] = set()
        self._last_error_log = float("-inf")
        self._errors_unlogged = 0

    def feed(self, line: str) -> bool:
        """Parse one line and make it the current one; False if it was not parsable."""
        if not line.strip():
            return False
        self.lines.inc()
        try:
            sample = parse_line(line)
        except ParseError as e:
            self.parse_errors.inc()
            self._errors_unlogged += 1
            now = time.monotonic()
            if now - self._last_error_log >= self.ERROR_LOG_EVERY_S:
                log.warning(
                    "unparsable tegrastats line",
                    extra={"error": str(e), "unparsable_lines": self._errors_unlogged},
                )
                self._last_error_log, self._errors_unlogged = now, 0
            return False
        for name in sample.unknown:
            if name not in self._unknown_seen and len(self._unknown_seen) >= self.MAX_UNKNOWN:
                name = "_other"  # bounded label set, whatever a broken tool prints
            self._unknown_seen.add(name)
            self.unknown_fields.labels(name).inc()
        self.collector.update(sample)
        return True

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class Child:
    """Runs `tegrastats --interval N` for as long as the exporter runs; restarts it with backoff."""

    def __init__(
        self,
        exporter: Exporter,
        argv: list[str],
        stop: threading.Event,
        backoff: tuple[float, float] = (1.0, 60.0),
    ) -> None:
        self.exporter, self.argv, self.stop = exporter, argv, stop
        self.backoff_min, self.backoff_max = backoff
        self.proc: subprocess.Popen[str] | None = None

    def run(self) -> None:
        delay, first = self.backoff_min, True
        while not self.stop.is_set():
            if not first:
                self.exporter.restarts.inc()
            first = False
            started = time.monotonic()
            try:
                self.proc = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    text=True,
                    errors="replace",
                    bufsize=1,
                )
            except OSError as e:
                log.error("cannot start tegrastats", extra={"argv": self.argv, "error": str(e)})
            else:
                if self.stop.is_set():  # stopped while it was starting: terminate() missed it
                    self.terminate()
                assert self.proc.stdout is not None
                for line in self.proc.stdout:
                    self.exporter.feed(line)
                rc = self.proc.wait()
                if not self.stop.is_set():
                    log.warning("tegrastats ended", extra={"argv": self.argv, "rc": rc})
            if time.monotonic() - started >= self.backoff_max:
                delay = self.backoff_min  # it ran a good while: this is a fresh failure
            if self.stop.wait(delay):
                break
            log.info("starting tegrastats again", extra={"after_s": delay})
            delay = min(delay * 2, self.backoff_max)

    def terminate(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()


def query_nvpmodel(exporter: Exporter, argv: list[str]) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        mode = parse_nvpmodel(done.stdout) if done.returncode == 0 else None
        problem = None if mode else f"rc {done.returncode}: {(done.stderr or done.stdout)[-200:]}"
    except (OSError, subprocess.TimeoutExpired) as e:
        mode, problem = None, str(e)
    if problem:
        exporter.nvpmodel_errors.inc()
        log.warning("nvpmodel -q gave no mode", extra={"argv": argv, "error": problem})
    exporter.collector.set_nvpmodel(mode)


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT (e.g. {DEFAULT_LISTEN})")
    return host.strip("[]") or "0.0.0.0", int(port)


def _positive_ms(value: str) -> int:
    if not value.isdigit() or int(value) < 10:
        raise argparse.ArgumentTypeError(f"{value!r}: give milliseconds, at least 10")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rvm-tegrastats-exporter",
        description="Export the Jetson's tegrastats (RAM, CPU, GPU, EMC, temperatures, power"
        " rails) and nvpmodel mode as Prometheus metrics.",
    )
    p.add_argument(
        "--listen",
        type=_listen,
        default=DEFAULT_LISTEN,
        help=f"HOST:PORT of /metrics (default {DEFAULT_LISTEN}; port 0 = any free port)",
    )
    p.add_argument("--tegrastats", default="tegrastats", help="path of tegrastats")
    p.add_argument(
        "--interval", type=_positive_ms, default=1000, help="tegrastats --interval, ms (1000)"
    )
    p.add_argument(
        "--stale-after",
        type=float,
        help="seconds after which the last line's values are withdrawn"
        " (default: 5 intervals, at least 10 s)",
    )
    p.add_argument("--nvpmodel", default="nvpmodel", help="path of nvpmodel ('' = do not ask)")
    p.add_argument(
        "--nvpmodel-interval",
        type=float,
        default=300.0,
        help="seconds between nvpmodel -q runs (0 = only at start; default 300)",
    )
    p.add_argument(
        "--once",
        action="store_true",
        help="read tegrastats lines on stdin, print the exposition of the last one, exit",
    )
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def _once(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, stream=sys.stderr, format="%(levelname)s %(message)s")
    exporter = Exporter(stale_after=None)
    parsed = sum(exporter.feed(line) for line in sys.stdin)
    sys.stdout.write(exporter.exposition().decode())
    if not parsed:
        print("rvm-tegrastats-exporter: no parsable tegrastats line on stdin", file=sys.stderr)
        return 1
    return 0


def _serve(args: argparse.Namespace) -> int:
    from rvm_detector.logs import setup_logging

    setup_logging(args.log_level)
    stale = args.stale_after or max(5 * args.interval / 1000, 10.0)
    exporter = Exporter(stale_after=stale)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    host, port = args.listen
    try:
        server, _ = start_http_server(port, addr=host, registry=exporter.registry)
    except OSError as e:
        log.error("cannot listen", extra={"listen": f"{host}:{port}", "error": str(e)})
        return 2
    bound = server.server_address
    log.info("serving /metrics", extra={"listen": f"{bound[0]}:{bound[1]}"})

    if args.nvpmodel:

        def nvpmodel_loop() -> None:
            while True:
                query_nvpmodel(exporter, [args.nvpmodel, "-q"])
                if args.nvpmodel_interval <= 0 or stop.wait(args.nvpmodel_interval):
                    return

        threading.Thread(target=nvpmodel_loop, name="nvpmodel", daemon=True).start()

    child = Child(exporter, [args.tegrastats, "--interval", str(args.interval)], stop)
    runner = threading.Thread(target=child.run, name="tegrastats", daemon=True)
    runner.start()
    stop.wait()
    child.terminate()
    runner.join(10)
    server.shutdown()
    log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _once(args) if args.once else _serve(args)


if __name__ == "__main__":
    sys.exit(main())
