"""Detection: parity with Ultralytics, the detect CLI, and bad models/images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from detector_fixtures import committed_model, heldout_images, independent_images, is_smoke_model
from onnx import TensorProto, helper
from rvm_detector.backends import ModelError, split_engine_file
from rvm_detector.detector import load_detector
from rvm_detector.letterbox import PAD_VALUE, LetterboxBuffer, letterbox
from rvm_detector.yolo_decode import SMALL, decode, decode_candidates, nms


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rvm_detector.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def heldout(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return heldout_images(tmp_path_factory.mktemp("heldout"), 12)


@pytest.fixture(scope="module")
def independent(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return independent_images(tmp_path_factory.mktemp("independent"), 12)


@pytest.fixture(scope="module")
def heldout_and_camera_sized(
    heldout: list[Path], independent: list[Path], tmp_path_factory
) -> list[Path]:
    """Held-out frames of both renderers, plus some at 640x480 and 1280x720 (box scaling)."""
    out = tmp_path_factory.mktemp("camera")
    big = []
    for p, size in [(p, (640, 480)) for p in heldout[:3] + independent[:3]] + [
        (p, (1280, 720)) for p in heldout[3:5] + independent[3:5]
    ]:
        big.append(out / f"{p.stem}_{size[0]}x{size[1]}.jpg")
        cv2.imwrite(str(big[-1]), cv2.resize(cv2.imread(str(p)), size))
    return heldout + independent + big


def iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 1.0


# At 0.25 (the default) the trained model reports the items; at 0.01 it also reports
# weak overlapping candidates, which exercises NMS and ordering hard. The frames come
# from both renderers: the training generator's held-out split and the independent one.
@pytest.mark.parametrize("conf", [0.25, 0.01])
def test_matches_ultralytics_predict_on_heldout_images(
    heldout_and_camera_sized: list[Path], conf: float
) -> None:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

    model = committed_model()
    ours = load_detector(model, conf=conf, iou=0.7)
    theirs = YOLO(str(model), task="detect")
    total = 0
    for path in heldout_and_camera_sized:
        image = cv2.imread(str(path))
        mine = ours.detect(image)
        ref = theirs.predict(
            image, conf=conf, iou=0.7, imgsz=list(ours.info.input_hw), verbose=False
        )[0].boxes
        assert len(mine) == len(ref), f"{path.name}: {len(mine)} vs Ultralytics {len(ref)}"
        ref_names = [theirs.names[int(c)] for c in ref.cls.tolist()]
        ref_boxes = ref.xyxy.numpy()
        # Same order is not promised for equal scores: match each of ours to its best box.
        for d in mine:
            same = [i for i, n in enumerate(ref_names) if n == d.class_name]
            assert same, f"{path.name}: {d.class_name} not in Ultralytics' result"
            best = max(iou(np.array(d.box), ref_boxes[i]) for i in same)
            assert best >= 0.99, f"{path.name}: {d} best IoU {best:.4f}"
        total += len(mine)
    if not is_smoke_model():
        assert total > 0, "the trained model must find items in held-out frames"


def test_detect_cli_json_in_original_pixels(heldout: list[Path], tmp_path: Path) -> None:
    big = tmp_path / "big.jpg"
    image = cv2.imread(str(heldout[0]))
    cv2.imwrite(str(big), cv2.resize(image, None, fx=2, fy=2))  # 640x480: not the input size
    result = cli("detect", "--model", str(committed_model()), "--conf", "0.001", "--json", str(big))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["image"] == str(big)
    assert out["detections"], "low threshold should give candidates"
    for d in out["detections"]:
        x1, y1, x2, y2 = d["box"]
        assert 0 <= x1 <= x2 <= 640 and 0 <= y1 <= y2 <= 480
        assert d["class_name"] in {"pet_bottle", "can", "other"}
        assert 0.001 < d["confidence"] <= 1


def test_corrupt_image_is_reported_and_others_still_processed(
    heldout: list[Path], tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(heldout[0].read_bytes()[:200])  # a truncated JPEG header
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    result = cli(
        "detect",
        "--model",
        str(committed_model()),
        "--json",
        str(corrupt),
        str(empty),
        str(heldout[1]),
    )
    assert result.returncode == 1
    assert f"{corrupt}: not a readable image" in result.stderr
    assert f"{empty}: not a readable image" in result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["image"] == str(heldout[1])


def test_missing_and_garbage_model_files(tmp_path: Path, heldout: list[Path]) -> None:
    result = cli("detect", "--model", str(tmp_path / "none.onnx"), str(heldout[0]))
    assert result.returncode == 2
    assert f"model file {tmp_path / 'none.onnx'} does not exist" in result.stderr
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model at all" * 10)
    result = cli("detect", "--model", str(garbage), str(heldout[0]))
    assert result.returncode == 2
    assert "ONNX Runtime cannot load" in result.stderr and "re-export" in result.stderr


NAMES = "{0: 'a', 1: 'b', 2: 'c'}"  # as Ultralytics writes them into ONNX metadata


def tiny_onnx(path: Path, in_shape: list[int], out_shape: list[int], names: str) -> Path:
    """A one-node model that outputs zeros of `out_shape`: shapes and metadata are what count."""
    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, in_shape)
    out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, out_shape)
    const = helper.make_node(
        "ConstantOfShape",
        ["shape"],
        ["output0"],
        value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0]),
    )
    shape = helper.make_tensor("shape", TensorProto.INT64, [len(out_shape)], out_shape)
    graph = helper.make_graph([const], "tiny", [inp], [out], initializer=[shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"names": names, "imgsz": str(in_shape[2:])})
    onnx.save(model, path)
    return path


def test_wrong_input_shape_is_refused_with_reason(tmp_path: Path) -> None:
    model = tiny_onnx(
        tmp_path / "gray.onnx", [1, 1, 64, 64], [1, 7, 84], "{0: 'a', 1: 'b', 2: 'c'}"
    )
    with pytest.raises(ModelError, match=r"takes input \[1, 1, 64, 64\].*\[1, 3, height, width\]"):
        load_detector(model)


def test_wrong_output_shape_is_refused_with_reason(tmp_path: Path) -> None:
    # A head for 80 classes with only 3 names: not the model the class names describe.
    model = tiny_onnx(tmp_path / "x.onnx", [1, 3, 64, 64], [1, 84, 84], NAMES)
    with pytest.raises(ModelError, match=r"output is \[1, 84, 84\].*for 3 classes gives \[1, 7"):
        load_detector(model)


def test_blank_model_runs_and_finds_nothing(tmp_path: Path) -> None:
    model = tiny_onnx(
        tmp_path / "blank.onnx", [1, 3, 64, 64], [1, 7, 84], "{0: 'a', 1: 'b', 2: 'c'}"
    )
    det = load_detector(model)
    assert det.info.class_names == ("a", "b", "c") and det.info.input_hw == (64, 64)
    assert det.detect(np.zeros((30, 50, 3), np.uint8)) == []


def test_engine_file_with_ultralytics_header() -> None:
    meta = {"names": {"0": "pet_bottle", "1": "can"}, "imgsz": [256, 256]}
    blob = json.dumps(meta).encode()
    plan = b"\x00\x01ftrt" + bytes(range(256)) * 4
    got_meta, got_plan = split_engine_file(len(blob).to_bytes(4, "little") + blob + plan)
    assert got_meta == meta and got_plan == plan


def test_plain_engine_plan_has_no_header() -> None:
    # A plan whose first 4 bytes read as a small length, followed by non-JSON bytes.
    plan = (16).to_bytes(4, "little") + b"ftrt\xff\xfe" + bytes(range(200))
    assert split_engine_file(plan) == ({}, plan)
    huge = (10**9).to_bytes(4, "little") + b"{}"  # a "length" past the end of the file
    assert split_engine_file(huge) == ({}, huge)


@pytest.mark.parametrize(("h", "w"), [(240, 320), (480, 640), (100, 37), (256, 256)])
def test_letterbox_round_trip(h: int, w: int) -> None:
    tensor, geo = letterbox(np.full((h, w, 3), 200, np.uint8), (256, 256))
    assert tensor.shape == (1, 3, 256, 256) and tensor.dtype == np.float32
    # The image's corners in input pixels map back onto the original corners.
    corners = np.array(
        [[geo.left, geo.top, geo.left + w * geo.gain_x, geo.top + h * geo.gain_y]], np.float32
    )
    np.testing.assert_allclose(geo.to_original(corners), [[0, 0, w, h]], atol=1e-3)
    # Outside the image is padding grey 114.
    if geo.left:
        assert tensor[0, 0, 128, 0] == pytest.approx(114 / 255)


def reference_letterbox(image: np.ndarray, size: int) -> np.ndarray:
    """Ultralytics' recipe step by step: resize, pad with 114, BGR->RGB, CHW, / 255."""
    h, w = image.shape[:2]
    r = min(size / h, size / w)
    nw, nh = round(w * r), round(h * r)
    dw, dh = (size - nw) / 2, (size - nh) / 2
    if (nw, nh) != (w, h):
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    padded = cv2.copyMakeBorder(
        image,
        round(dh - 0.1),
        round(dh + 0.1),
        round(dw - 0.1),
        round(dw + 0.1),
        cv2.BORDER_CONSTANT,
        value=(PAD_VALUE,) * 3,
    )
    return padded[..., ::-1].transpose(2, 0, 1)[None].astype(np.float32) / np.float32(255)


def test_reused_input_buffer_matches_reference_across_frame_sizes() -> None:
    rng = np.random.default_rng(3)
    buffer = LetterboxBuffer((256, 256))
    # Sizes change back and forth: the padding must follow the image region each time.
    for h, w in [(240, 320), (720, 1280), (240, 320), (480, 640), (256, 256), (99, 37)]:
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        tensor, geo = buffer(image)
        np.testing.assert_array_equal(tensor, reference_letterbox(image, 256))
        assert (geo.new_w, geo.new_h) == (round(w * geo.gain_x), round(h * geo.gain_y))


def test_prepare_returns_its_own_tensor(heldout: list[Path]) -> None:
    detector = load_detector(committed_model())
    first, _ = detector.prepare(cv2.imread(str(heldout[0])))
    kept = first.copy()
    detector.prepare(cv2.imread(str(heldout[1])))
    detector.detect(cv2.imread(str(heldout[2])))
    np.testing.assert_array_equal(first, kept)


def test_nms_keeps_best_of_overlapping_and_separate_boxes() -> None:
    boxes = np.array(
        [[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 9.5]], np.float32
    )
    scores = np.array([0.5, 0.9, 0.7, 0.6], np.float32)
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert nms(boxes, scores, 0.99).tolist() == [1, 2, 3, 0]


@pytest.mark.parametrize("seed", range(20))
def test_python_nms_for_few_candidates_matches_numpy_path(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 400
    out = np.zeros((1, 7, n), np.float32)
    # Clusters of overlapping boxes of mixed classes, like a head's output around items.
    centres = rng.uniform(20, 230, (4, 2))
    pick = rng.integers(0, 4, n)
    out[0, :2] = (centres[pick] + rng.normal(0, 4, (n, 2))).T
    out[0, 2:4] = rng.uniform(20, 80, (2, n))
    out[0, 4:] = rng.uniform(0, 1, (3, n)) ** 6
    conf = float(np.sort(out[0, 4:].max(0))[-rng.integers(2, SMALL)])  # a few candidates
    boxes, scores, classes = decode(out, conf, 0.5, 300)
    kept = decode_candidates(out, conf, 0.5, 300)
    assert [(round(k[0], 6), k[1]) for k in kept] == [
        (round(float(s), 6), int(c)) for s, c in zip(scores, classes, strict=True)
    ]
    np.testing.assert_allclose([k[2:] for k in kept], boxes, atol=1e-3)
    assert decode_candidates(out, conf, 0.5, 1) == kept[:1]


def test_runtime_never_imports_torch_ultralytics_or_sam2(heldout: list[Path]) -> None:
    code = (
        "import json, sys\n"
        "from rvm_detector.cli import main\n"
        f"rc = main(['detect', '--model', {str(committed_model())!r}, {str(heldout[0])!r},"
        f" '--sam2', {str(committed_model().parents[1])!r}])\n"
        "import rvm_detector.service, rvm_detector.bench, rvm_detector.delivery\n"
        "import rvm_detector.segment\n"
        "heavy = sorted(m for m in sys.modules\n"
        "               if m.split('.')[0] in ('torch', 'ultralytics', 'sam2'))\n"
        "print(json.dumps({'rc': rc, 'heavy': heavy}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out == {"rc": 0, "heavy": []}
