"""`rvm-detector`: check-config, run, detect, gate, bench, spool.

Exit codes: 0 ok, 1 the work failed (e.g. an unreadable image), 2 bad input
(configuration, model file, arguments).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from rvm_detector import __version__
from rvm_detector.backends import ModelError
from rvm_detector.configfile import ConfigError, load_config


def _check_config(args: argparse.Namespace) -> int:
    try:
        load_config(args.config)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    print(f"{args.config}: OK")
    return 0


def _run(args: argparse.Namespace) -> int:
    from rvm_detector import metrics
    from rvm_detector.logs import setup_logging
    from rvm_detector.service import Service, build_sink

    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    setup_logging(config.logging.level)
    metrics.BUILD_INFO.labels(metrics.release_of(args.config), __version__).set(1)
    service = Service(config, build_sink(config))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: service.request_stop())
    return service.run()


def _detect(args: argparse.Namespace) -> int:
    import cv2

    from rvm_detector.detector import load_detector

    try:
        detector = load_detector(args.model, args.backend, args.conf, args.iou, args.max_det)
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    segmenter = None
    if args.sam2 is not None:
        from rvm_detector.segment import Sam2Segmenter, SegmentationError, describe, find_pair

        try:
            segmenter = Sam2Segmenter(*find_pair(args.sam2))
        except SegmentationError as e:
            print(f"error: SAM2: {e}", file=sys.stderr)
            return 2
    failed = False
    for path in args.images:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            print(
                f"error: {path}: not a readable image (missing, empty or corrupt); skipped",
                file=sys.stderr,
            )
            failed = True
            continue
        detections = detector.detect(image)
        if segmenter is not None:
            masks = segmenter.segment(image, detections)
            detections = [
                type(d)(d.class_name, d.confidence, d.box, describe(m, d.box))
                for d, m in zip(detections, masks, strict=True)
            ]
        if args.json:
            out = {"image": str(path), "detections": [d.to_dict() for d in detections]}
            print(json.dumps(out))
        else:
            print(f"{path}: {len(detections)} detection(s)")
            for d in detections:
                box = ", ".join(f"{v:.1f}" for v in d.box)
                area = f"  mask {d.mask.area} px ({d.mask.fill:.0%} of box)" if d.mask else ""
                print(f"  {d.class_name:<12} {d.confidence:.3f}  [{box}]{area}")
    return 1 if failed else 0


def _gate(args: argparse.Namespace) -> int:
    from rvm_detector.gate import run_gate

    try:
        result = run_gate(
            args.onnx, args.engine, args.frames, args.min_iou, args.min_recall, args.conf
        )
    except (ModelError, FileNotFoundError, ValueError) as e:
        # The role records this as the gate's reason: the engine is not used.
        reason = f"the gate could not compare the models: {e}"
        if args.json:
            print(json.dumps({"passed": False, "reason": reason}))
        else:
            print(f"error: {reason}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        verdict = "PASSED" if result.passed else "FAILED"
        print(f"gate {verdict}: {result.reason}")
        print(
            f"  {result.frames} frames, {result.reference_detections} ONNX / "
            f"{result.candidate_detections} engine detections, {result.matched} matched; "
            f"mean IoU {result.mean_iou}, confidence drift mean {result.mean_confidence_delta} "
            f"max {result.max_confidence_delta}"
        )
    return 0 if result.passed else 1


def _bench(args: argparse.Namespace) -> int:
    from rvm_detector.bench import run_bench

    try:
        return run_bench(args)
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="model file (.onnx, .engine)")
    p.add_argument("--backend", choices=["auto", "onnxruntime", "tensorrt"], default="auto")
    p.add_argument("--conf", type=float, default=0.25, help="confidence threshold")
    p.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold")
    p.add_argument("--max-det", type=int, default=300)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rvm-detector", description=__doc__)
    parser.add_argument("--version", action="version", version=f"rvm-detector {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check-config", help="validate a configuration file")
    p.add_argument("--config", type=Path, required=True)
    p.set_defaults(func=_check_config)

    p = sub.add_parser("run", help="run the detector service")
    p.add_argument("--config", type=Path, required=True)
    p.set_defaults(func=_run)

    p = sub.add_parser("detect", help="detect objects in image files")
    _model_args(p)
    p.add_argument("images", type=Path, nargs="+")
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    p.add_argument(
        "--sam2",
        type=Path,
        metavar="SAM2_DIR",
        help="also segment each detection: a directory holding the SAM2 encoder and decoder "
        "model directories (e.g. models/)",
    )
    p.set_defaults(func=_detect)

    p = sub.add_parser(
        "gate",
        help="check a TensorRT engine against its ONNX model on check frames "
        "(exit 0 passed, 1 failed, 2 could not compare)",
    )
    p.add_argument("--onnx", type=Path, required=True, help="the ONNX model (the reference)")
    p.add_argument("--engine", type=Path, required=True, help="the TensorRT engine built from it")
    p.add_argument("--frames", type=Path, required=True, help="directory of check frames")
    p.add_argument("--min-iou", type=float, default=0.9, help="IoU a matched box needs")
    p.add_argument(
        "--min-recall", type=float, default=0.98, help="share of detections that must match"
    )
    p.add_argument("--conf", type=float, default=0.25, help="confidence threshold of both")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=_gate)

    p = sub.add_parser("bench", help="latency of raw inference vs end-to-end detect")
    _model_args(p)
    p.add_argument("images", type=Path, nargs="*", help="images (default: synthetic frames)")
    p.add_argument("--runs", type=int, default=200, help="timed frames per contender")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument(
        "--compare-ultralytics",
        action="store_true",
        help="also time Ultralytics' predict on the same model (imports torch)",
    )
    p.add_argument(
        "--rss", action="store_true", help="also measure the memory of `rvm-detector run`"
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=_bench)

    from rvm_detector import spool_cli

    spool_cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
