"""The TensorRT path around the calls that need a GPU: the gate's matching, the binding
choice, and the backend's use of the TensorRT 10 API (against fakes of `tensorrt` and
cuda-python: the real calls cannot run here, so these check what is called, in order).
"""

from __future__ import annotations

import hashlib
import json
import sys
import tarfile
import types
from pathlib import Path

import numpy as np
import pytest
from rvm_detector import cli
from rvm_detector.backends import ModelError, TensorInfo, open_backend, select_bindings
from rvm_detector.gate import compare, iou, list_frames, match_frame
from rvm_detector.records import Detection

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "deposit-yolo11n"


def det(cls: str, box: tuple[float, float, float, float], conf: float = 0.9) -> Detection:
    return Detection(cls, conf, box)


# --- the gate's matching -----------------------------------------------------------


def test_iou_of_known_boxes() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0


def test_identical_detections_pass_with_no_drift() -> None:
    frame = [det("can", (10, 10, 50, 90)), det("pet_bottle", (60, 5, 100, 120), 0.7)]
    result = compare([("a.jpg", frame, list(frame))] * 3)
    assert result.passed
    assert result.recall == 1.0 and result.precision == 1.0 and result.mean_iou == 1.0
    assert result.max_confidence_delta == 0.0 and result.frames_with_misses == []


def test_a_box_moved_below_the_iou_threshold_is_a_miss() -> None:
    ref = [det("can", (0, 0, 100, 100))]
    assert match_frame(ref, [det("can", (2, 0, 102, 100))], 0.9).matched == 1  # IoU 0.96
    assert match_frame(ref, [det("can", (10, 0, 110, 100))], 0.9).matched == 0  # IoU 0.82


def test_same_box_other_class_does_not_match() -> None:
    result = compare([("a.jpg", [det("can", (0, 0, 10, 10))], [det("other", (0, 0, 10, 10))])])
    assert not result.passed
    assert "recall 0.000 < 0.98" in result.reason
    assert result.frames_with_misses == ["a.jpg"]


def test_recall_threshold_counts_over_all_frames() -> None:
    good = [det("can", (i * 10, 0, i * 10 + 8, 8)) for i in range(10)]
    frames = [(f"{i}.jpg", good, list(good)) for i in range(9)]
    frames.append(("9.jpg", good, good[:9]))  # one of 100 lost
    assert compare(frames, min_recall=0.98).passed  # recall 0.99
    assert not compare(frames, min_recall=0.995).passed


def test_extra_engine_detections_fail_on_precision() -> None:
    ref = [det("can", (0, 0, 10, 10))]
    cand = [*ref, det("other", (50, 50, 60, 60))]
    result = compare([("a.jpg", ref, cand)])
    assert not result.passed and result.recall == 1.0
    assert "precision 0.500" in result.reason and "no ONNX counterpart" in result.reason


def test_each_engine_box_matches_one_onnx_box_only() -> None:
    ref = [det("can", (0, 0, 10, 10), 0.9), det("can", (0, 0, 10, 10), 0.8)]
    assert match_frame(ref, [det("can", (0, 0, 10, 10))], 0.9).matched == 1


def test_confidence_drift_is_reported() -> None:
    result = compare(
        [("a.jpg", [det("can", (0, 0, 10, 10), 0.9)], [det("can", (0, 0, 10, 10), 0.8)])]
    )
    assert result.passed
    assert result.mean_confidence_delta == pytest.approx(
        0.1
    ) and result.max_confidence_delta == pytest.approx(0.1)


def test_frames_without_detections_prove_nothing() -> None:
    result = compare([("a.jpg", [], [])])
    assert not result.passed and "finds nothing on the 1 check frames" in result.reason
    assert not compare([]).passed


@pytest.fixture(scope="module")
def check_frames(tmp_path_factory) -> Path:
    """The model's check frames, unpacked as the role does on the device."""
    manifest = json.loads((MODEL / "manifest.json").read_text())
    archive = MODEL / manifest["check_frames"]["archive"]
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == manifest["check_frames"]["sha256"]
    out = tmp_path_factory.mktemp("check_frames")
    with tarfile.open(archive) as tar:
        tar.extractall(out, filter="data")
    return out


def test_check_frames_ship_with_the_model_and_hold_objects(check_frames: Path) -> None:
    manifest = json.loads((MODEL / "manifest.json").read_text())
    frames = list_frames(check_frames)
    assert len(frames) == manifest["check_frames"]["count"] >= 20
    import cv2
    from rvm_detector.detector import load_detector

    detector = load_detector(MODEL / "model.onnx", "onnxruntime")
    rows = [(p.name, d := detector.detect(cv2.imread(str(p))), list(d)) for p in frames]
    result = compare(rows)
    assert result.passed and result.reference_detections >= 20


def test_the_shipped_int8_model_passes_the_int8_gate(check_frames: Path) -> None:
    """The Q/DQ model the training side ships for INT8 engines (training/quantize.py), run by
    the detector on ONNX Runtime, against the FP32 model on the check frames: the gate a
    device applies to an INT8 engine (tensorrt_engine_gate_int8_min_recall 0.95), so what
    quantisation costs is measured before any Jetson builds from it."""
    import cv2
    from rvm_detector.detector import load_detector

    manifest = json.loads((MODEL / "manifest.json").read_text())
    qdq = MODEL / manifest["int8_qdq"]["file"]
    assert hashlib.sha256(qdq.read_bytes()).hexdigest() == manifest["int8_qdq"]["sha256"]
    assert manifest["int8_qdq"]["calibration"]["frames"] >= 500
    fp32 = load_detector(MODEL / "model.onnx", "onnxruntime")
    int8 = load_detector(qdq, "onnxruntime")
    assert int8.info.class_names == fp32.info.class_names
    rows = []
    for p in list_frames(check_frames):
        image = cv2.imread(str(p))
        rows.append((p.name, fp32.detect(image), int8.detect(image)))
    result = compare(rows, min_iou=0.9, min_recall=0.95)
    assert result.passed, result.reason
    assert result.reference_detections >= 20


def test_gate_cli_says_why_when_the_engine_cannot_load(
    tmp_path: Path, capsys, check_frames: Path
) -> None:
    # What the lab's devices see: a plan file, and no TensorRT to load it with.
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"JETSON SIMULATION plan")
    argv = ["gate", "--onnx", str(MODEL / "model.onnx"), "--engine", str(engine)]
    rc = cli.main([*argv, "--frames", str(check_frames), "--json"])
    assert rc == 2
    out = json.loads(capsys.readouterr().out)
    assert out["passed"] is False
    assert "TensorRT is not usable here" in out["reason"]


# --- binding selection ----------------------------------------------------------------


def t(name: str, is_input: bool, shape: tuple[int, ...]) -> TensorInfo:
    return TensorInfo(name, is_input, shape, np.dtype(np.float32))


def test_bindings_pick_the_one_input_and_output0() -> None:
    tensors = [
        t("extra", False, (1, 4)),
        t("images", True, (1, 3, 256, 256)),
        t("output0", False, (1, 7, 1344)),
    ]
    inp, out = select_bindings(tensors, Path("m.engine"))
    assert inp.name == "images" and out.name == "output0"
    inp, out = select_bindings([t("x", True, (1, 3, 64, 64)), t("y", False, (1, 7, 84))], Path("m"))
    assert out.name == "y"


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        (
            [t("a", True, (1, 3, 64, 64)), t("b", True, (1, 3, 64, 64)), t("o", False, (1, 7, 84))],
            "2 inputs",
        ),
        ([t("a", True, (1, 3, 64, 64))], "0 outputs"),
        ([t("a", True, (-1, 3, 64, 64)), t("o", False, (1, 7, 84))], "dynamic shape"),
    ],
)
def test_bindings_refuse_what_a_detector_cannot_run(tensors, message) -> None:
    with pytest.raises(ModelError, match=message):
        select_bindings(tensors, Path("m.engine"))


# --- the TensorRT 10 calls, against fakes -----------------------------------------------


class _Err(int):
    pass


def fake_tensorrt_and_cuda(monkeypatch, calls: list) -> None:
    trt = types.ModuleType("tensorrt")

    class IOMode:
        INPUT, OUTPUT = "in", "out"

    shapes = {"images": (1, 3, 64, 64), "output0": (1, 7, 84)}

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i):
            return list(shapes)[i]

        def get_tensor_mode(self, n):
            return IOMode.INPUT if n == "images" else IOMode.OUTPUT

        def get_tensor_shape(self, n):
            return shapes[n]

        def get_tensor_dtype(self, n):
            return "float32"

        def create_execution_context(self):
            class Context:
                def set_tensor_address(self, name, ptr):
                    calls.append(("set_tensor_address", name, ptr))

                def execute_async_v3(self, stream):
                    calls.append(("execute_async_v3", stream))
                    return True

            return Context()

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, plan):
            calls.append(("deserialize", bytes(plan)))
            return Engine()

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    trt.Runtime, trt.Logger, trt.TensorIOMode = Runtime, Logger, IOMode
    trt.nptype = lambda dtype: np.float32
    cudart = types.ModuleType("cuda.bindings.runtime")
    ptrs = iter(range(1000, 2000, 100))
    cudart.cudaStreamCreate = lambda: (_Err(0), "stream-1")
    cudart.cudaMalloc = lambda n: (calls.append(("malloc", n)), (_Err(0), next(ptrs)))[1]
    cudart.cudaMemcpyKind = types.SimpleNamespace(
        cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2
    )
    cudart.cudaMemcpyAsync = lambda dst, src, n, kind, s: (
        calls.append(("memcpy", kind, n, s)),
        (_Err(0),),
    )[1]
    cudart.cudaStreamSynchronize = lambda s: (calls.append(("sync", s)), (_Err(0),))[1]
    cuda = types.ModuleType("cuda")
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = cudart
    cuda.bindings = bindings
    for name, mod in {
        "tensorrt": trt,
        "cuda": cuda,
        "cuda.bindings": bindings,
        "cuda.bindings.runtime": cudart,
    }.items():
        monkeypatch.setitem(sys.modules, name, mod)


def test_backend_reads_the_ultralytics_header_and_uses_the_tensor_api(
    tmp_path, monkeypatch
) -> None:
    calls: list = []
    fake_tensorrt_and_cuda(monkeypatch, calls)
    meta = json.dumps(
        {"names": {"0": "pet_bottle", "1": "can", "2": "other"}, "imgsz": [64, 64]}
    ).encode()
    path = tmp_path / "model.engine"
    path.write_bytes(len(meta).to_bytes(4, "little") + meta + b"PLAN")
    backend = open_backend(path)
    assert backend.name == "tensorrt"
    assert backend.metadata["names"] == {0: "pet_bottle", 1: "can", 2: "other"}
    assert ("deserialize", b"PLAN") in calls  # the plan without its header
    assert backend.input_shape == (1, 3, 64, 64) and backend.output_shape == (1, 7, 84)
    assert ("malloc", 3 * 64 * 64 * 4) in calls and ("malloc", 7 * 84 * 4) in calls
    assert [c[1] for c in calls if c[0] == "set_tensor_address"] == ["images", "output0"]
    calls.clear()
    out = backend.infer(np.zeros((1, 3, 64, 64), np.float32))
    assert out.shape == (1, 7, 84)
    assert [c[0] for c in calls] == ["memcpy", "execute_async_v3", "memcpy", "sync"]
    assert calls[1] == ("execute_async_v3", "stream-1") and calls[0][1] == 1 and calls[2][1] == 2


def test_backend_reads_a_plain_trtexec_plan(tmp_path, monkeypatch) -> None:
    calls: list = []
    fake_tensorrt_and_cuda(monkeypatch, calls)
    path = tmp_path / "model.engine"
    path.write_bytes(b"\x00\x01\x02PLAN-BYTES")
    backend = open_backend(path)
    assert backend.metadata == {}
    assert ("deserialize", b"\x00\x01\x02PLAN-BYTES") in calls


def test_an_engine_on_the_device_finds_its_models_manifest(tmp_path, monkeypatch) -> None:
    # <sha256>/engines/<key>/model.engine: a trtexec plan has no class names of its own.
    calls: list = []
    fake_tensorrt_and_cuda(monkeypatch, calls)
    version = tmp_path / "abc"
    (version / "engines" / "k1").mkdir(parents=True)
    (version / "manifest.json").write_text(
        json.dumps({"name": "m", "class_names": ["a", "b", "c"]})
    )
    engine = version / "engines" / "k1" / "model.engine"
    engine.write_bytes(b"PLAN")
    from rvm_detector.detector import load_detector

    detector = load_detector(engine)
    assert detector.info.class_names == ("a", "b", "c") and detector.info.backend == "tensorrt"
    assert detector.info.id.name == "m"
