"""The champion answers in a Python environment built only from its own ``requirements.txt``.

Downloads the registered model's artifacts (``mlflow artifacts download``),
creates a fresh virtual environment, installs the CPU torch wheel first (as
the README does) and then the model's ``requirements.txt`` alone, and asks the
model a question there, from a directory outside this checkout. This project
is not installed in that environment: the model must bring its own code. The
answers must equal those of the same model loaded here.

    python benchmarks/fresh_env.py --config conf/demo.yaml
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import load, parser, write_report

QUESTIONS = [("Mary moved to the kitchen.\nJohn went to the garden.\nSandra journeyed to the office.", "Where is Mary?"),
             ("Mary moved to the kitchen.\nJohn went to the garden.\nMary travelled to the hallway.", "Where is Mary?")]
TORCH = "torch==2.13.0"  # the CPU wheel; an unpinned torch pulls a CUDA build

# Run by the fresh environment's interpreter: load, answer, and report what loading imported.
ASK = """
import importlib.util, json, sys, mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
pairs = json.loads(sys.argv[2])
out = model.predict(pd.DataFrame({"context": [c for c, _ in pairs], "question": [q for _, q in pairs]}))
loaded = sorted({m.split(".")[0] for m in sys.modules})
print(json.dumps({"answers": out["answer"].tolist(), "scores": out["score"].tolist(),
                  "stmem_from": sys.modules["stmem"].__file__,
                  "project_installed": importlib.util.find_spec("prefect") is not None,
                  "loaded": [m for m in ("pykeen", "prefect", "corpora", "kg_pipeline", "spacy") if m in loaded]}))
"""


def run(cmd: list[str], **kw) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd[:4])} ... failed:\n{done.stderr[-3000:]}")
    return done.stdout


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--model", help="model URI (default: models:/<register.model_name>@champion)")
    ap.add_argument("--keep", type=Path, help="build in this directory and keep it (default: a temporary one)")
    args = ap.parse_args()
    cfg, _ = load(args)
    from serving.registry import mlflow_store

    uri = mlflow_store(cfg.register.tracking_uri, cfg.run_dir)[0]
    model_uri = args.model or f"models:/{cfg.register.model_name}@champion"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    with tempfile.TemporaryDirectory(prefix="stmem-fresh-env-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        bin_dir = Path(sys.executable).parent
        run([str(bin_dir / "mlflow"), "artifacts", "download", "--artifact-uri", model_uri,
             "--dst-path", str(work / "model")], env=env)
        requirements = (work / "model" / "requirements.txt").read_text().split()
        started = time.perf_counter()
        # the base interpreter, not this venv's: nothing of this environment may leak into the new one
        base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
        run([str(base), "-m", "venv", str(work / "venv")])
        pip = [str(work / "venv" / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        run(pip + [TORCH])
        run(pip + ["-r", str(work / "model" / "requirements.txt")])
        build_seconds = time.perf_counter() - started
        clean_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "MLFLOW_TRACKING_URI")}
        started = time.perf_counter()
        there = json.loads(run([str(work / "venv" / "bin" / "python"), "-c", ASK, str(work / "model"),
                                json.dumps(QUESTIONS)], cwd=work, env=clean_env).splitlines()[-1])
        answer_seconds = time.perf_counter() - started

        import mlflow
        import pandas as pd

        here = mlflow.pyfunc.load_model(str(work / "model")).predict(
            pd.DataFrame({"context": [c for c, _ in QUESTIONS], "question": [q for _, q in QUESTIONS]}))
    same = there["answers"] == here["answer"].tolist()
    print(f"{model_uri}: requirements.txt has {len(requirements)} lines; environment built in {build_seconds:.0f} s")
    print(f"answers there: {there['answers']} (scores {[round(s, 3) for s in there['scores']]}); "
          f"here: {here['answer'].tolist()} -> {'same' if same else 'DIFFERENT'}")
    print(f"stmem loaded from {there['stmem_from']}; project installed there: {there['project_installed']}; "
          f"load + answer {answer_seconds:.1f} s; loaded of pykeen/prefect/corpora/kg_pipeline/spacy: {there['loaded']}")
    write_report(args, cfg.run.name, {"model": model_uri, "requirements": requirements,
                                      "build_seconds": round(build_seconds, 1), "answer_seconds": round(answer_seconds, 1),
                                      "answers_fresh_env": there["answers"], "answers_here": here["answer"].tolist(),
                                      "same_answers": same, "stmem_from": there["stmem_from"],
                                      "project_installed": there["project_installed"], "loaded": there["loaded"]})
    if not same or there["project_installed"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
