"""What an operator checks after the Jetson roles: testinfra over Ansible's SSH.

jsim-01 is a simulated Jetson (lab/roles/jetson_simulation); plain-01 is a lab host
that is not a Jetson. The last tests run ansible-playbook against these hosts with bad
input and check that the host stops with a message naming what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "lab"))
from labtools import Run  # noqa: E402
from labtools import playbook as run_playbook  # noqa: E402

MODEL = REPO / "models/deposit-yolo11n"
MODEL_SHA = json.loads((MODEL / "manifest.json").read_text())["sha256"]
MODELS_DIR = "/opt/rvm-detector/models/deposit-yolo11n"
# The pins as the jetpack role has them (its defaults are the one place they are written).
PACKAGES = {
    p["name"]: p["version"]
    for p in yaml.safe_load((REPO / "roles/jetpack/defaults/main.yml").read_text())[
        "jetpack_packages"
    ]
}


def is_sim(host) -> bool:
    return host.backend.get_hostname() == "jsim-01"


def local_fact(host, name: str) -> dict:
    return json.loads(host.file(f"/etc/ansible/facts.d/{name}.fact").content_string)


# --- the simulated Jetson ------------------------------------------------------------


def test_apt_source_is_nvidias_layout_signed_by_its_own_key(host):
    if not is_sim(host):
        pytest.skip("a plain host gets no NVIDIA source")
    source = host.file("/etc/apt/sources.list.d/nvidia-jetson.sources")
    assert source.exists
    text = source.content_string
    assert "Signed-By: /etc/apt/keyrings/nvidia-jetson.asc" in text
    assert "Suites: r36.4" in text
    assert "/jetson/common" in text and "/jetson/t234" in text
    # The key is trusted for this source only, not globally.
    assert not host.file("/etc/apt/trusted.gpg.d/nvidia-jetson.asc").exists
    key = host.file("/etc/apt/keyrings/nvidia-jetson.asc")
    assert key.mode == 0o644
    assert "BEGIN PGP PUBLIC KEY BLOCK" in key.content_string
    # apt verified the signed Release with that key (no warning, no unauthenticated source).
    policy = host.check_output("apt-cache policy libnvinfer10")
    assert "file:/srv/jetson-simulation/apt/jetson/common r36.4/main" in policy


def test_pinned_packages_are_installed_from_the_simulated_repo_and_held(host):
    if not is_sim(host):
        pytest.skip("a plain host gets no NVIDIA packages")
    held = host.check_output("apt-mark showhold").split()
    for name, version in PACKAGES.items():
        pkg = host.package(name)
        assert pkg.is_installed, name
        assert pkg.version == version, name
        assert name in held
        assert host.file(f"/usr/share/doc/{name}/JETSON-SIMULATION").exists


def test_tensorrt_stand_in_does_not_pass_for_tensorrt(host):
    if not is_sim(host):
        pytest.skip("simulated Jetson only")
    run = host.run("python3 -c 'import tensorrt'")
    assert run.rc == 1
    assert "JETSON SIMULATION" in run.stderr
    facts = local_fact(host, "jetpack")
    assert facts["tensorrt_version"] == "10.3.0.30"
    assert facts["tensorrt_python"] is False
    assert facts["l4t_release"] == "36.4.3"


def test_power_mode_is_set_and_jetson_clocks_runs(host):
    if not is_sim(host):
        pytest.skip("simulated Jetson only")
    query = host.check_output("nvpmodel -q").splitlines()
    assert query == ["NV Power Mode: MAXN_SUPER", "2"]
    assert not host.file("/var/lib/rvm-jetpack/nvpmodel-pending").exists
    clocks = host.service("jetson-clocks")
    assert clocks.is_enabled
    assert clocks.is_running  # oneshot, RemainAfterExit
    assert "clocks: max" in host.check_output("jetson_clocks --show")
    line = host.check_output("tegrastats --interval 100 --count 1")
    assert " RAM " in line and " CPU [" in line and "VDD_IN" in line


def test_zram_is_configured(host):
    if not is_sim(host):
        pytest.skip("the plain host uses a swap file")
    conf = host.file("/etc/systemd/zram-generator.conf").content_string
    assert "[zram0]" in conf and "zram-size = ram / 2" in conf
    assert host.package("systemd-zram-generator").is_installed


# --- both hosts ----------------------------------------------------------------------


def test_boots_headless(host):
    assert host.check_output("systemctl get-default") == "multi-user.target"


def test_model_is_placed_verified_and_current(host):
    version = host.file(f"{MODELS_DIR}/{MODEL_SHA}")
    assert version.is_directory
    onnx = host.file(f"{MODELS_DIR}/{MODEL_SHA}/model.onnx")
    assert onnx.sha256sum == MODEL_SHA
    assert onnx.user == "root" and onnx.mode == 0o644
    manifest = json.loads(host.file(f"{MODELS_DIR}/{MODEL_SHA}/manifest.json").content_string)
    assert manifest["sha256"] == MODEL_SHA
    current = host.file(f"{MODELS_DIR}/current")
    assert current.is_symlink
    assert current.linked_to == f"{MODELS_DIR}/{MODEL_SHA}"
    facts = local_fact(host, "tensorrt_engine")
    assert facts["backend"] == "onnxruntime"  # the simulated TensorRT must not be chosen
    assert facts["models"]["deposit-yolo11n"]["path"] == f"{MODELS_DIR}/{MODEL_SHA}/model.onnx"
    # The gate's input, unpacked beside the model.
    frames = host.file(f"{MODELS_DIR}/{MODEL_SHA}/check_frames/val_00000.jpg")
    assert frames.is_file and frames.size > 0


def test_plain_host_skipped_the_hardware_steps(host):
    if is_sim(host):
        pytest.skip("plain host only")
    assert not host.file("/etc/nv_tegra_release").exists
    assert not host.file("/etc/apt/sources.list.d/nvidia-jetson.sources").exists
    assert not host.package("libnvinfer10").is_installed
    facts = local_fact(host, "jetpack")
    assert facts["is_jetson"] is False and facts["tensorrt_version"] == ""
    swapfile = host.file("/swapfile")
    assert swapfile.mode == 0o600 and swapfile.size == 64 * 1024 * 1024
    assert "/swapfile none swap sw 0 0" in host.file("/etc/fstab").content_string


# --- bad input: ansible-playbook against the scenario's hosts ---------------------------


def playbook(*args: str) -> Run:
    """bad_input.yml (one role with the test's variables) on this scenario's hosts."""
    inventory = Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent
    return run_playbook(Path(__file__).parents[1] / "bad_input.yml", inventory, *args, timeout=300)


def test_model_with_wrong_sha256_stops_the_host_before_switching(tmp_path, host):
    if not is_sim(host):
        pytest.skip("one host is enough")
    bad = tmp_path / "deposit-yolo11n"
    bad.mkdir()
    shutil.copy(MODEL / "model.onnx", bad / "model.onnx")
    with (bad / "model.onnx").open("ab") as f:
        f.write(b"corrupted in transit")
    actual = hashlib.sha256((bad / "model.onnx").read_bytes()).hexdigest()
    manifest = json.loads((MODEL / "manifest.json").read_text())
    expected = hashlib.sha256(b"what the build recorded").hexdigest()
    (bad / "manifest.json").write_text(json.dumps({**manifest, "sha256": expected}))
    # The bad copy among the good others: nothing of any model may switch.
    models = [{"name": "deposit-yolo11n", "src": str(bad)}]
    models += [{"name": name} for name in ("sam2-tiny-encoder", "sam2-tiny-decoder")]
    proc = playbook(
        "-l", "jsim-01", "-e", "role_under_test=tensorrt_engine",
        "-e", json.dumps({"tensorrt_engine_models": models}),
    )  # fmt: skip
    assert proc.returncode != 0
    out = proc.text
    assert "jsim-01: model deposit-yolo11n does not match its sha256" in out
    assert f"expected {expected}" in out and f"got {actual}" in out
    assert "Nothing was switched on this host" in out
    # Nothing switched: current still names the good model, the bad one is not published.
    assert host.file(f"{MODELS_DIR}/current").linked_to == f"{MODELS_DIR}/{MODEL_SHA}"
    assert not host.file(f"{MODELS_DIR}/{expected}").exists
    host.run(f"rm -rf {MODELS_DIR}/.incoming-{expected}")


def test_plain_host_fails_where_the_inventory_requires_a_jetson(host):
    if is_sim(host):
        pytest.skip("plain host only")
    proc = playbook(
        "-l", "plain-01", "-e", "role_under_test=jetpack", "-e", '{"jetpack_require_jetson": true}'
    )
    assert proc.returncode != 0
    out = proc.text
    assert "plain-01 has no /etc/nv_tegra_release, so it is not a Jetson" in out
    assert "set jetpack_require_jetson: false" in out
    proc = playbook(
        "-l", "plain-01", "-e", "role_under_test=jetpack", "--tags", "jetpack_preflight"
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout
    assert "plain-01 is not a Jetson (no /etc/nv_tegra_release): skipping" in proc.text


def test_power_mode_needing_a_reboot_is_reported_and_idempotent(host):
    if not is_sim(host):
        pytest.skip("simulated Jetson only")
    args = ["-l", "jsim-01", "-e", "role_under_test=jetpack", "--tags", "jetpack_power"]
    try:
        first = playbook(*args, "-e", '{"jetpack_nvpmodel_mode": 1}')
        assert first.returncode == 0, first.stdout
        assert "mode 1 is set but applies only after a reboot" in first.text
        assert host.check_output("nvpmodel -q").splitlines()[-1] == "2"  # still running 2
        again = playbook(*args, "-e", '{"jetpack_nvpmodel_mode": 1}')
        assert again.returncode == 0 and "changed=0" in again.stdout, again.stdout
        assert local_fact(host, "jetpack")["reboot_required"] is True
    finally:
        back = playbook(*args)  # the inventory's mode 2 cancels the pending change
        assert back.returncode == 0, back.stdout
    assert not host.file("/var/lib/nvpmodel/pending").exists
    assert local_fact(host, "jetpack")["reboot_required"] is False


def test_unknown_power_mode_and_release_are_refused(host):
    if not is_sim(host):
        pytest.skip("simulated Jetson only")
    proc = playbook(
        "-l", "jsim-01", "-e", "role_under_test=jetpack", "--tags", "jetpack_power",
        "-e", '{"jetpack_nvpmodel_mode": 7}',
    )  # fmt: skip
    assert proc.returncode != 0
    out = proc.text
    assert "jetpack_nvpmodel_mode=7 is not a mode of this board" in out
    assert "0=15W, 1=7W, 2=MAXN_SUPER" in out
    proc = playbook(
        "-l", "jsim-01", "-e", "role_under_test=jetpack", "--tags", "jetpack_preflight",
        "-e", '{"jetpack_supported_l4t_majors": [35]}',
    )  # fmt: skip
    assert proc.returncode != 0
    assert "which is L4T R36 (36.4.3); supported are R35" in proc.text


# --- TensorRT engines: built on the device by the simulated trtexec -----------------------

ENGINES = f"{MODELS_DIR}/{MODEL_SHA}/engines"
TRT_CALLS = "/var/lib/jetson-simulation/trtexec-calls.jsonl"
TRT_MODE = "/etc/jetson-simulation/trtexec-mode"


def trt_calls(host) -> list[dict]:
    text = host.file(TRT_CALLS).content_string if host.file(TRT_CALLS).exists else ""
    return [json.loads(line) for line in text.splitlines() if line]


def engine_fact(host) -> dict:
    return local_fact(host, "tensorrt_engine")["models"]["deposit-yolo11n"]


def engine_keys(host) -> list[str]:
    return sorted(host.check_output(f"ls -A {ENGINES}").split())


def build(*extra: str) -> Run:
    """The models role's build step alone (preflight and facts always run)."""
    return playbook(
        "-l", "jsim-01", "-e", "role_under_test=tensorrt_engine", "--tags", "tensorrt_engine_build",
        *extra,
    )  # fmt: skip


def test_engine_built_on_the_device_under_its_key(host):
    if not is_sim(host):
        fact = engine_fact(host)
        assert (
            fact["backend"] == "onnxruntime"
            and fact["engine"]["reason"] == "no engine: not a Jetson"
        )
        assert not host.file(ENGINES).exists
        return
    keys = [k for k in engine_keys(host) if not k.startswith(".")]
    assert len(keys) == 1 and keys[0].startswith("trt10.3.0.30-t234-sm87-fp16-"), keys
    key = json.loads(host.file(f"{ENGINES}/{keys[0]}/key.json").content_string)
    assert key["onnx_sha256"] == MODEL_SHA and key["tensorrt"] == "10.3.0.30"
    assert key["soc"] == "t234" and key["compute_capability"] == "8.7"
    assert key["precision"] == "fp16" and key["inputs"] == {"images": [1, 3, 256, 256]}
    assert "--fp16" in key["builder_options"]
    assert host.file(f"{ENGINES}/{keys[0]}/model.engine").size > 0
    # Built once: Molecule's idempotence run reused it, and check mode built nothing.
    calls = trt_calls(host)
    assert len(calls) == 1, calls
    # trtexec wrote into a temporary directory that was renamed into place.
    call = calls[0]
    assert any(a.startswith(f"--saveEngine={ENGINES}/.build-{keys[0]}-") for a in call["argv"])
    cache = "/opt/rvm-detector/models/.timing-cache/trt10.3.0.30-t234-sm87.cache"
    assert f"--timingCacheFile={cache}" in call["argv"] and host.file(cache).exists
    assert "tensorrt-engine-build" in host.check_output(
        "journalctl -t tensorrt-engine-build -n 5 --no-pager"
    )
    # No detector here to gate it: the engine waits, the model stays on ONNX Runtime.
    fact = engine_fact(host)
    assert fact["backend"] == "onnxruntime"
    assert fact["path"] == f"{MODELS_DIR}/{MODEL_SHA}/model.onnx"
    assert fact["engine"]["reason"].startswith("gate pending: no detector installed to run it")


def test_failed_build_leaves_onnx_and_is_not_retried_every_run(host):
    if not is_sim(host):
        pytest.skip("simulated Jetson only")
    # Another builder option is another key: the existing engine must stay untouched.
    other = ["-e", '{"tensorrt_engine_builder_options": ["--builderOptimizationLevel=2"]}']
    old = engine_keys(host)
    try:
        host.run(f"echo fail > {TRT_MODE}")
        proc = build(*other)
        assert proc.returncode == 0, proc.stdout  # the host goes on, on ONNX Runtime
        fact = engine_fact(host)
        assert fact["backend"] == "onnxruntime" and fact["engine"]["status"] == "failed"
        assert "trtexec exited 1" in fact["engine"]["reason"]
        assert "JETSON SIMULATION: told to fail" in fact["engine"]["reason"]
        assert "deposit-yolo11n: onnxruntime: trtexec exited 1" in proc.text
        calls = len(trt_calls(host))
        again = build(*other)
        assert again.returncode == 0 and "changed=0" in again.stdout, again.stdout
        assert len(trt_calls(host)) == calls
        reason = engine_fact(host)["engine"]["reason"]
        assert "not retry it: set tensorrt_engine_retry_failed" in reason

        host.run(f"echo hang > {TRT_MODE}")
        proc = build(
            *other,
            "-e",
            '{"tensorrt_engine_retry_failed": true, "tensorrt_engine_build_timeout_s": 3}',
        )
        assert proc.returncode == 0, proc.stdout
        assert "did not finish within 3s and was killed" in engine_fact(host)["engine"]["reason"]
        assert host.run("pgrep -f /usr/src/tensorrt/bin/trtexec").rc == 1  # nothing left running
    finally:
        host.run(f"rm -f {TRT_MODE}")
    failed = [k for k in engine_keys(host) if k not in old]
    # Only the failure record: no engine, no half-written directory under any key.
    assert len(failed) == 1 and failed[0].startswith(".failed-trt10.3.0.30-t234-sm87-fp16-"), failed
    host.run(f"rm -f {ENGINES}/{failed[0]}")


def test_int8_builds_the_qdq_model_and_bad_int8_or_tensorrt_stop_in_preflight(host, tmp_path):
    if not is_sim(host):
        pytest.skip("simulated Jetson only")
    # INT8 builds the Q/DQ model the training side shipped (training/quantize.py), with
    # trtexec's --int8 beside --fp16; the FP16 engine a release uses is kept.
    qdq = json.loads((MODEL / "manifest.json").read_text())["int8_qdq"]
    fp16 = [k for k in engine_keys(host) if not k.startswith(".")]
    int8 = {"tensorrt_engine_models": [{"name": "deposit-yolo11n", "precision": "int8"}],
            "tensorrt_engine_protect_engines": [f"{ENGINES}/{fp16[0]}/model.engine"]}  # fmt: skip
    proc = build("-e", json.dumps(int8))
    assert proc.returncode == 0, proc.stdout
    argv = trt_calls(host)[-1]["argv"]
    assert f"--onnx={MODELS_DIR}/{MODEL_SHA}/{qdq['file']}" in argv
    assert "--int8" in argv and "--fp16" in argv
    built = [k for k in engine_keys(host) if k.startswith("trt10.3.0.30-t234-sm87-int8-")]
    assert len(built) == 1 and fp16[0] in engine_keys(host)
    key = json.loads(host.file(f"{ENGINES}/{built[0]}/key.json").content_string)
    assert key["onnx_sha256"] == qdq["sha256"] and key["precision"] == "int8"
    host.run(f"rm -rf {ENGINES}/{built[0]}")

    # A model without a Q/DQ file cannot be INT8: stopped before anything is built.
    bare = tmp_path / "deposit-yolo11n"
    bare.mkdir()
    manifest = json.loads((MODEL / "manifest.json").read_text())
    for name in ("model.onnx", manifest["check_frames"]["archive"]):
        (bare / name).symlink_to(MODEL / name)
    del manifest["int8_qdq"]
    (bare / "manifest.json").write_text(json.dumps(manifest))
    models = json.dumps(
        {
            "tensorrt_engine_models": [
                {"name": "deposit-yolo11n", "src": str(bare), "precision": "int8"}
            ]
        }
    )
    proc = build("-e", models)
    assert proc.returncode != 0
    assert "jsim-01: model deposit-yolo11n asks for precision int8" in proc.text
    assert "no int8_qdq" in proc.text
    fact = tmp_path / "jetpack.fact"
    fact.write_text(json.dumps({"is_jetson": True, "soc": "t234", "tensorrt_version": ""}))
    host.run(f"""printf '%s' '{fact.read_text()}' > /tmp/jetpack.fact.bad""")
    proc = build("-e", '{"tensorrt_engine_jetpack_fact": "/tmp/jetpack.fact.bad"}')
    host.run("rm -f /tmp/jetpack.fact.bad")
    assert proc.returncode != 0
    assert "jsim-01: engines are asked for (deposit-yolo11n) but the device" in proc.text
    assert "reports no TensorRT version" in proc.text


def test_tensorrt_upgrade_builds_anew_and_keeps_the_engine_a_release_uses(host):
    if not is_sim(host):
        pytest.skip("simulated Jetson only")
    old = [k for k in engine_keys(host) if not k.startswith(".")]
    assert len(old) == 1
    protect = {"tensorrt_engine_protect_engines": [f"{ENGINES}/{old[0]}/model.engine"]}
    upgraded = [
        {**p, "version": p["version"].replace("10.3.0.30", "10.7.0.23")}
        for p in yaml.safe_load((REPO / "roles/jetpack/defaults/main.yml").read_text())[
            "jetpack_packages"
        ]
    ]
    converge = Path(__file__).parents[1] / "converge.yml"
    inventory = Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent
    tags = "jetson_simulation,jetpack_packages,tensorrt_engine_build"

    def upgrade_to(packages: list[dict] | None) -> Run:
        extra = {**protect, **({"jetpack_packages": packages} if packages else {})}
        return run_playbook(
            converge,
            inventory,
            "-l",
            "jsim-01",
            "--tags",
            tags,
            "-e",
            json.dumps(extra),
            timeout=300,
        )

    try:
        proc = upgrade_to(upgraded)
        assert proc.returncode == 0, proc.stdout
        assert local_fact(host, "jetpack")["tensorrt_version"] == "10.7.0.23"
        assert trt_calls(host)[-1]["tensorrt"] == "10.7.0.23"  # the upgraded trtexec built it
        keys = [k for k in engine_keys(host) if not k.startswith(".")]
        new = [k for k in keys if k.startswith("trt10.7.0.23-t234-sm87-fp16-")]
        assert len(new) == 1 and old[0] in keys  # the old engine stays for its release
        assert host.file(
            "/opt/rvm-detector/models/.timing-cache/trt10.7.0.23-t234-sm87.cache"
        ).exists
        assert engine_fact(host)["engine"]["key"] == new[0]
    finally:
        back = upgrade_to(None)  # JetPack back to the pinned 10.3: its engine is reused
    assert back.returncode == 0, back.stdout
    assert engine_fact(host)["engine"]["key"] == old[0]
    assert engine_fact(host)["engine"]["status"] == "present"
    assert "Build (or reuse) the engine of deposit-yolo11n" in back.stdout
    # The 10.7 engine: no kept release names it, so it is gone.
    assert [k for k in engine_keys(host) if not k.startswith(".")] == old
