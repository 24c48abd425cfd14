"""rvm-tegrastats-exporter: real tegrastats lines through `--once`, and the long-running
exporter against a fake `tegrastats` (a small script that prints lines) scraped over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from rvm_detector.tegrastats import ParseError, parse_line, parse_nvpmodel

APP_SRC = Path(__file__).resolve().parents[1] / "src"
FIXTURES = Path(__file__).parent / "fixtures" / "tegrastats"
MIB = 1024**2
ORIN_NANO = (FIXTURES / "orin-nano-jp6.txt").read_text()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(APP_SRC), env.get("PYTHONPATH")]))
    return env


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "rvm_detector.tegrastats", *args]


def samples(exposition: str) -> dict[tuple[str, frozenset], float]:
    """{(sample name, labels): value} of a Prometheus text exposition."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
    }


def value(got: dict, metric: str, /, **labels: str) -> float:
    return got[(metric, frozenset(labels.items()))]


def names(got: dict) -> set[str]:
    return {name for name, _ in got}


def once(text: str) -> tuple[int, dict, str]:
    done = subprocess.run(
        _cmd("--once"), input=text, capture_output=True, text=True, env=_env(), timeout=60
    )
    return done.returncode, samples(done.stdout), done.stderr


# --- --once on the published line formats -------------------------------------------------


def test_orin_nano_jetpack6_line():
    rc, got, _ = once(ORIN_NANO)
    assert rc == 0
    assert value(got, "rvm_tegrastats_up") == 1
    assert value(got, "rvm_jetson_ram_used_bytes") == 2514 * MIB
    assert value(got, "rvm_jetson_ram_total_bytes") == 7620 * MIB
    assert value(got, "rvm_jetson_swap_used_bytes") == 0
    assert value(got, "rvm_jetson_swap_total_bytes") == 3810 * MIB
    for core, load in enumerate([0.04, 0.03, 0.02, 0.04, 0.0, 0.01]):
        assert value(got, "rvm_jetson_cpu_online", core=str(core)) == 1
        assert value(got, "rvm_jetson_cpu_load_ratio", core=str(core)) == pytest.approx(load)
        assert value(got, "rvm_jetson_cpu_frequency_hertz", core=str(core)) == 1510e6
    assert value(got, "rvm_jetson_gpu_load_ratio") == 0
    assert value(got, "rvm_jetson_gpu_frequency_hertz", gpc="0") == 612e6
    assert value(got, "rvm_jetson_emc_load_ratio") == 0
    assert value(got, "rvm_jetson_emc_frequency_hertz") == 2133e6
    temps = {"cpu": 50.5, "soc2": 49.156, "soc0": 48.843, "gpu": 49.906, "tj": 50.5, "soc1": 49.093}
    for sensor, celsius in temps.items():
        assert value(got, "rvm_jetson_temperature_celsius", sensor=sensor) == celsius
        assert value(got, "rvm_jetson_temperature_sensor_online", sensor=sensor) == 1
    rails = {"VDD_IN": 4.809, "VDD_CPU_GPU_CV": 0.6, "VDD_SOC": 1.401}
    for rail, watts in rails.items():
        assert value(got, "rvm_jetson_power_watts", rail=rail) == pytest.approx(watts)
        assert value(got, "rvm_jetson_power_average_watts", rail=rail) == pytest.approx(watts)
    for engine in ("NVDEC", "NVJPG", "NVJPG1", "VIC", "OFA"):
        assert value(got, "rvm_jetson_engine_online", engine=engine) == 0
    assert value(got, "rvm_jetson_engine_frequency_hertz", engine="APE") == 200e6
    assert value(got, "rvm_tegrastats_parse_errors_total") == 0
    assert "rvm_tegrastats_unknown_fields_total" not in names(got)
    assert "rvm_jetson_nvpmodel_info" not in names(got)  # --once never runs nvpmodel


def test_timestamp_offline_cores_and_busy_gpu():
    rc, got, _ = once((FIXTURES / "orin-nano-jp6-timestamp.txt").read_text())
    assert rc == 0
    assert value(got, "rvm_jetson_ram_used_bytes") == 3120 * MIB
    assert value(got, "rvm_jetson_swap_used_bytes") == 12 * MIB
    assert value(got, "rvm_jetson_cpu_load_ratio", core="1") == pytest.approx(0.41)
    for core in ("4", "5"):
        # an offline core is offline, not idle: no load or clock series at all
        assert value(got, "rvm_jetson_cpu_online", core=core) == 0
        assert ("rvm_jetson_cpu_load_ratio", frozenset({("core", core)})) not in got
        assert ("rvm_jetson_cpu_frequency_hertz", frozenset({("core", core)})) not in got
    assert value(got, "rvm_jetson_gpu_load_ratio") == pytest.approx(0.99)
    assert value(got, "rvm_jetson_emc_load_ratio") == pytest.approx(0.17)
    assert value(got, "rvm_jetson_power_watts", rail="VDD_IN") == pytest.approx(9.117)
    assert value(got, "rvm_jetson_power_average_watts", rail="VDD_IN") == pytest.approx(7.403)
    assert "rvm_tegrastats_unknown_fields_total" not in names(got)


def test_no_root_line_has_gpu_load_without_clock_and_no_emc():
    rc, got, _ = once((FIXTURES / "orin-nano-jp6-noroot.txt").read_text())
    assert rc == 0
    assert value(got, "rvm_jetson_gpu_load_ratio") == 0
    assert "rvm_jetson_gpu_frequency_hertz" not in names(got)
    assert not names(got) & {"rvm_jetson_emc_load_ratio", "rvm_jetson_emc_frequency_hertz"}
    assert value(got, "rvm_jetson_temperature_celsius", sensor="tj") == 46.25
    assert value(got, "rvm_jetson_power_watts", rail="VDD_SOC") == pytest.approx(1.363)


def test_agx_orin_jetpack5_line():
    rc, got, _ = once((FIXTURES / "agx-orin-jp5.txt").read_text())
    assert rc == 0
    online = {c: value(got, "rvm_jetson_cpu_online", core=str(c)) for c in range(12)}
    assert online == {c: int(c < 8) for c in range(12)}
    assert value(got, "rvm_jetson_gpu_load_ratio") == pytest.approx(0.07)
    assert value(got, "rvm_jetson_gpu_frequency_hertz", gpc="0") == 1300e6
    assert value(got, "rvm_jetson_gpu_frequency_hertz", gpc="1") == 1300e6
    # -256C: no sensor there. Offline, never a temperature of -256.
    for sensor in ("cv0", "cv1", "cv2", "gpu"):
        assert value(got, "rvm_jetson_temperature_sensor_online", sensor=sensor) == 0
        assert ("rvm_jetson_temperature_celsius", frozenset({("sensor", sensor)})) not in got
    assert value(got, "rvm_jetson_temperature_celsius", sensor="cpu") == 44.5  # `CPU@` lower-cased
    assert value(got, "rvm_jetson_temperature_celsius", sensor="tboard") == 33
    rails = {"VDD_GPU_SOC": 2.395, "VDD_CPU_CV": 0.399, "VIN_SYS_5V0": 3.135}
    rails["VDDQ_VDD2_1V8AO"] = 0.503
    exported = {dict(labels)["rail"] for name, labels in got if name == "rvm_jetson_power_watts"}
    assert exported == set(rails)  # the `NC` (not connected) channels are left out
    for rail, watts in rails.items():
        assert value(got, "rvm_jetson_power_watts", rail=rail) == pytest.approx(watts)
    assert value(got, "rvm_jetson_engine_frequency_hertz", engine="VIC") == 729e6  # VIC_FREQ
    assert "rvm_tegrastats_unknown_fields_total" not in names(got)


def test_xavier_line_counts_the_field_it_does_not_know():
    rc, got, _ = once((FIXTURES / "xavier-nx-jp5.txt").read_text())
    assert rc == 0
    assert value(got, "rvm_tegrastats_unknown_fields_total", field="MTS") == 1
    assert value(got, "rvm_jetson_temperature_sensor_online", sensor="thermal") == 0
    assert value(got, "rvm_jetson_temperature_celsius", sensor="ao") == 36.5  # right after MTS
    assert value(got, "rvm_jetson_gpu_frequency_hertz", gpc="1") == 1300e6
    assert value(got, "rvm_jetson_engine_online", engine="NVDLA1") == 0
    assert value(got, "rvm_jetson_power_watts", rail="VDD_IN") == pytest.approx(4.431)


def test_jetpack4_line_rails_without_unit():
    rc, got, _ = once((FIXTURES / "nano-jp4.txt").read_text())
    assert rc == 0
    assert value(got, "rvm_tegrastats_unknown_fields_total", field="IRAM") == 1
    assert value(got, "rvm_jetson_gpu_frequency_hertz", gpc="0") == 76e6
    assert value(got, "rvm_jetson_cpu_frequency_hertz", core="3") == 102e6
    assert value(got, "rvm_jetson_power_watts", rail="POM_5V_IN") == pytest.approx(1.109)
    assert value(got, "rvm_jetson_temperature_celsius", sensor="pmic") == 100


def test_last_line_wins_and_garbage_is_counted_once_logged():
    garbage = "tegrastats: cannot open /sys/kernel/debug/clk: permission denied\n"
    second = ORIN_NANO.replace("RAM 2514/", "RAM 3000/").replace("tj@50.5C", "tj@61C")
    rc, got, err = once(ORIN_NANO + garbage + second + garbage + garbage)
    assert rc == 0
    assert value(got, "rvm_jetson_ram_used_bytes") == 3000 * MIB
    assert value(got, "rvm_jetson_temperature_celsius", sensor="tj") == 61
    assert value(got, "rvm_tegrastats_lines_total") == 5
    assert value(got, "rvm_tegrastats_parse_errors_total") == 3
    assert err.count("unparsable tegrastats line") == 1  # at most once a minute


def test_once_without_a_parsable_line_fails():
    rc, got, err = once("hello\n\n")
    assert rc == 1
    assert "no parsable tegrastats line" in err
    assert value(got, "rvm_tegrastats_up") == 0
    assert value(got, "rvm_tegrastats_parse_errors_total") == 1


# --- the parser directly ----------------------------------------------------------------------


def test_unknown_fields_are_skipped_not_fatal():
    s = parse_line(ORIN_NANO.replace("APE 200", "APE 200 FOO_BAR 1%@2 weird stuff NEWENG 5"))
    assert s.unknown == ["FOO_BAR", "NEWENG"]
    assert s.temperatures["cpu"] == 50.5  # the field after the unknown ones still parsed
    assert s.engines["APE"] == 200e6


def test_unknown_field_labels_are_bounded():
    from rvm_detector.tegrastats import Exporter

    exporter = Exporter()
    for i in range(Exporter.MAX_UNKNOWN + 20):
        assert exporter.feed(ORIN_NANO.replace("APE 200", f"APE 200 NEW{i} 1"))
    got = samples(exporter.exposition().decode())
    labels = {dict(k)["field"] for n, k in got if n == "rvm_tegrastats_unknown_fields_total"}
    assert len(labels) == Exporter.MAX_UNKNOWN + 1
    assert value(got, "rvm_tegrastats_unknown_fields_total", field="_other") == 20


def test_emc_and_cpu_without_clocks():
    s = parse_line("RAM 100/200MB SWAP 0/0MB CPU [off,5%] EMC_FREQ 3%")
    assert s.emc_load == pytest.approx(0.03) and s.emc_hertz is None
    assert [c.online for c in s.cpus] == [False, True]
    assert s.cpus[1].hertz is None and s.cpus[1].load == pytest.approx(0.05)


@pytest.mark.parametrize(
    "line",
    [
        "",
        "hello world",
        "RAM lots",
        "12-01-2026 10:00:00",
        "thermal zone cpu@50.5C is not readable",  # a known field alone is no tegrastats line
        "CPU [4%@1510,3%@1510] GR3D_FREQ 0%@[612]",  # a cut line
    ],
)
def test_lines_with_no_known_field_are_parse_errors(line):
    with pytest.raises(ParseError):
        parse_line(line)


def test_nvpmodel_query_output():
    assert parse_nvpmodel("NV Power Mode: 15W\n0\n") == ("0", "15W")
    warn = "NVPM WARN: fan mode is not set!\nNV Power Mode: MAXN_SUPER\n2\n"
    assert parse_nvpmodel(warn) == ("2", "MAXN_SUPER")
    assert parse_nvpmodel("NVPM ERROR: failed to read PARAM\n") is None


# --- long-running, against a fake tegrastats -----------------------------------------------

FAKE_TEGRASTATS = """\
#!{python}
# Fake tegrastats for the exporter's tests: prints Orin Nano JetPack 6 lines whose RAM
# and tj grow line by line; exits after `lines_per_run` lines (to be started again); prints
# nothing and exits at once while a file `dead` exists next to it.
import argparse, os, sys, time
from pathlib import Path
here = Path(__file__).parent
p = argparse.ArgumentParser()
p.add_argument("--interval", type=int, required=True)
args = p.parse_args()
with open(here / "starts", "a") as f:
    f.write(f"{{os.getpid()}}\\n")
if (here / "dead").exists():
    sys.exit(3)
template = {line!r}
for n in range({lines_per_run}):
    ram, tj = 2000 + n, 40 + n
    print(template.replace("RAM 2514/", f"RAM {{ram}}/").replace("tj@50.5C", f"tj@{{tj}}C"),
          flush=True)
    time.sleep(args.interval / 1000)
sys.exit(1)
"""

FAKE_NVPMODEL = """\
#!/bin/sh
[ "$1" = "-q" ] || exit 2
echo "NV Power Mode: 15W"
echo 0
"""


class Exporter:
    def __init__(self, tmp_path: Path, lines_per_run: int, *extra: str) -> None:
        self.dir = tmp_path
        fake = tmp_path / "tegrastats"
        fake.write_text(
            FAKE_TEGRASTATS.format(
                python=sys.executable, line=ORIN_NANO.strip(), lines_per_run=lines_per_run
            )
        )
        nvpmodel = tmp_path / "nvpmodel"
        nvpmodel.write_text(FAKE_NVPMODEL)
        for script in (fake, nvpmodel):
            script.chmod(0o755)
        self.proc = subprocess.Popen(
            [
                *_cmd("--listen", "127.0.0.1:0", "--tegrastats", str(fake), "--interval", "100"),
                "--nvpmodel",
                str(nvpmodel),
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=_env(),
        )
        self.logs: list[dict] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url = f"http://{self._wait_log('serving /metrics')['listen']}/metrics"

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self.logs.append(json.loads(line))
            except ValueError:
                self.logs.append({"msg": line})

    def _wait_log(self, msg: str, timeout: float = 20) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for entry in list(self.logs):
                if entry.get("msg") == msg:
                    return entry
            assert self.proc.poll() is None, f"exporter exited: {self.logs}"
            time.sleep(0.05)
        raise AssertionError(f"no log {msg!r} within {timeout}s: {self.logs}")

    def scrape(self) -> dict:
        with urllib.request.urlopen(self.url, timeout=5) as answer:
            assert answer.status == 200
            return samples(answer.read().decode())

    def wait_for(self, check, timeout: float = 20) -> dict:
        end = time.monotonic() + timeout
        while True:
            got = self.scrape()
            try:
                if check(got):
                    return got
            except KeyError:
                pass
            if time.monotonic() > end:
                raise AssertionError(f"condition not met within {timeout}s: {got}")
            time.sleep(0.1)

    def child_pids(self) -> list[int]:
        starts = self.dir / "starts"
        return [int(p) for p in starts.read_text().split()] if starts.exists() else []

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture
def exporter(tmp_path, request):
    started = Exporter(tmp_path, *request.param)
    yield started
    started.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@pytest.mark.parametrize("exporter", [(10_000,)], indirect=True)
def test_serves_the_latest_line_and_the_power_mode(exporter):
    first = exporter.wait_for(lambda g: value(g, "rvm_jetson_ram_used_bytes") > 2002 * MIB)
    assert value(first, "rvm_tegrastats_up") == 1
    assert value(first, "rvm_jetson_cpu_online", core="5") == 1
    assert value(first, "rvm_jetson_power_watts", rail="VDD_IN") == pytest.approx(4.809)
    later = exporter.wait_for(
        lambda g: (
            value(g, "rvm_jetson_ram_used_bytes")
            >= value(first, "rvm_jetson_ram_used_bytes") + 3 * MIB
        )
    )
    ram = value(later, "rvm_jetson_ram_used_bytes") // MIB
    assert value(later, "rvm_jetson_temperature_celsius", sensor="tj") == ram - 2000 + 40
    assert value(later, "rvm_tegrastats_lines_total") >= 5
    got = exporter.wait_for(lambda g: value(g, "rvm_jetson_nvpmodel_info", id="0", name="15W") == 1)
    assert value(got, "rvm_tegrastats_restarts_total") == 0
    [child] = exporter.child_pids()
    assert _alive(child)
    assert exporter.stop() == 0
    assert not _alive(child)  # SIGTERM to the exporter ends its tegrastats too
    assert exporter.logs[-1]["msg"] == "stopped"


@pytest.mark.parametrize("exporter", [(5, "--stale-after", "1.5")], indirect=True)
def test_restarts_a_dead_tegrastats_and_withdraws_stale_values(exporter):
    exporter.wait_for(lambda g: value(g, "rvm_tegrastats_restarts_total") >= 1)
    got = exporter.wait_for(
        lambda g: value(g, "rvm_tegrastats_up") == 1 and len(exporter.child_pids()) >= 2
    )
    assert "rvm_jetson_ram_used_bytes" in names(got)
    assert any(e.get("msg") == "tegrastats ended" and e.get("rc") == 1 for e in exporter.logs)

    (exporter.dir / "dead").touch()  # from now on every start fails at once
    got = exporter.wait_for(lambda g: value(g, "rvm_tegrastats_up") == 0, timeout=30)
    assert not {n for n in names(got) if n.startswith("rvm_jetson_") and "nvpmodel" not in n}
    assert value(got, "rvm_tegrastats_last_line_timestamp_seconds") < time.time() - 1.5
    # backoff: the dead tool is not started in a tight loop (1 s, 2 s, 4 s, ...)
    starts = len(exporter.child_pids())
    time.sleep(2.5)
    assert len(exporter.child_pids()) - starts <= 2

    (exporter.dir / "dead").unlink()
    exporter.wait_for(lambda g: value(g, "rvm_tegrastats_up") == 1, timeout=30)
    assert exporter.stop() == 0


def test_bad_listen_address_is_refused():
    done = subprocess.run(
        _cmd("--listen", "nonsense"), capture_output=True, text=True, env=_env(), timeout=60
    )
    assert done.returncode == 2
    assert "is not HOST:PORT" in done.stderr


def test_missing_tegrastats_is_retried_not_fatal(tmp_path):
    missing = tmp_path / "no-such-tegrastats"
    proc = subprocess.Popen(
        _cmd("--listen", "127.0.0.1:0", "--tegrastats", str(missing), "--nvpmodel", ""),
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        deadline = time.monotonic() + 20
        seen = []
        while time.monotonic() < deadline and len(seen) < 2:
            line = proc.stdout.readline()
            if "cannot start tegrastats" in line:
                seen.append(json.loads(line))
        assert len(seen) == 2, "the exporter should keep trying"
        assert proc.poll() is None
        assert seen[0]["argv"][0] == str(missing)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_console_script_is_declared():
    pyproject = (APP_SRC.parent / "pyproject.toml").read_text()
    assert 'rvm-tegrastats-exporter = "rvm_detector.tegrastats:main"' in pyproject


def test_imports_only_the_standard_library_and_prometheus_client():
    # no jtop, no psutil: the device runs it beside the detector and it must stay small
    source = (APP_SRC / "rvm_detector" / "tegrastats.py").read_text()
    imports = {
        line.split()[1].split(".")[0]
        for line in source.splitlines()
        if line.startswith(("import ", "from ")) and not line.startswith("from __future__")
    }
    assert imports <= set(sys.stdlib_module_names) | {"prometheus_client", "rvm_detector"}
