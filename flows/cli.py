"""The ``stmem`` command: run the pipeline, one stage, or ask a model."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import flows  # noqa: F401  (offline and no-telemetry defaults before anything else loads)
from stmem.artifacts import MissingArtifactError
from stmem.config import ConfigError, load_config
from corpora import CorpusError
from stmem.layout import STAGES, RunLayout

EXPECTED_ERRORS = (ConfigError, CorpusError, MissingArtifactError, FileNotFoundError, ValueError)


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config (default: built-in defaults, the demo)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. --set train.epochs=5 (repeatable)")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="stmem", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    _config_args(sub.add_parser("run", help="run the whole pipeline (a Prefect flow)"))
    st = sub.add_parser("stage", help="run one stage from the artifacts already in the run directory")
    st.add_argument("name", choices=STAGES)
    _config_args(st)
    pr = sub.add_parser("predict", help="answer a question with a registered model")
    pr.add_argument("--model", required=True, help="MLflow model URI, e.g. models:/stmem-demo@champion")
    pr.add_argument("--context", required=True, type=Path, help="text file, one sentence per line")
    pr.add_argument("--question", required=True)
    pr.add_argument("--tracking-uri", help="MLflow tracking URI (default: the config's run directory store)")
    _config_args(pr)
    return ap


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _print_summary(run_dir: Path) -> None:
    layout = RunLayout(run_dir)
    print("\nstage summaries:")
    for stage in STAGES:
        manifest = layout.stage_dir(stage) / "manifest.json"
        if manifest.exists():
            m = json.loads(manifest.read_text())
            figures = ", ".join(f"{k}={_fmt(v)}" for k, v in m["summary"].items() if not isinstance(v, (dict, list)))
            print(f"  {stage:<8} {m['seconds']:7.1f}s  {figures}")
    ev = layout.stage_dir("train") / "eval.json"
    if ev.exists():
        test = json.loads(ev.read_text())["test"]
        tasks = "  ".join(f"{t}={a:.3f}" for t, a in test["per_task"].items())
        print(f"\ntest exact-match accuracy: {test['accuracy']:.3f}  ({tasks}; n={test['n']})")
    reg = layout.stage_dir("register") / "registration.json"
    if reg.exists():
        r = json.loads(reg.read_text())
        print(f"registered {r['model_uri']} with alias '{r['alias']}' (champion: version {r['champion_version']})")
    print(f"artifacts: {run_dir}/")


def _predict(args: argparse.Namespace) -> int:
    import mlflow
    import pandas as pd

    from serving.registry import default_tracking_uri

    cfg = load_config(args.config, args.overrides)
    if not args.context.is_file():
        raise FileNotFoundError(f"{args.context}: context file not found")
    mlflow.set_tracking_uri(args.tracking_uri or cfg.register.tracking_uri or default_tracking_uri(cfg.run_dir))
    model = mlflow.pyfunc.load_model(args.model)
    out = model.predict(pd.DataFrame({"context": [args.context.read_text()], "question": [args.question]}))
    print(out["answer"].iloc[0])
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "predict":
            return _predict(args)
        cfg = load_config(args.config, args.overrides)  # fail fast, before Prefect starts
        from flows.pipeline import STAGE_FLOWS, pipeline

        if args.command == "run":
            pipeline(config_path=args.config, overrides=args.overrides)
        else:
            STAGE_FLOWS[args.name](config_path=args.config, overrides=args.overrides)
        _print_summary(cfg.run_dir)
        return 0
    except EXPECTED_ERRORS as exc:
        print(f"stmem: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
