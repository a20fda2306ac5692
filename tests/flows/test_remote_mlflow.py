"""A remote tracking server by config: `mlflow server` on 127.0.0.1, `register.tracking_uri` pointing at it."""
import json
import sys
from pathlib import Path

from mlflow import MlflowClient

from tests.conftest import TINY_CONFIG, stmem_cli
from tests.servers import free_port, start, stop, wait_http


def test_pipeline_registers_on_a_remote_mlflow_server_with_its_artifact_store(tmp_path):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start([str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
                    "--port", str(port), "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                    "--artifacts-destination", str(tmp_path / "server-artifacts"), "--workers", "1"],
                   tmp_path / "server.log", {"MLFLOW_DISABLE_TELEMETRY": "true"})
    try:
        wait_http(server, f"{uri}/health", tmp_path / "server.log", timeout=180)
        root = tmp_path / "runs"
        res = stmem_cli("run", "--config", str(TINY_CONFIG), "--set", f"run.root={root}",
                        "--set", f"register.tracking_uri={uri}")
        assert res.returncode == 0, res.stderr[-3000:]
        reg = json.loads((root / "tiny" / "register" / "registration.json").read_text())
        client = MlflowClient(uri, registry_uri=uri)
        assert client.get_model_version_by_alias("stmem-tiny", "champion").version == str(reg["version"])
        run = client.get_run(reg["run_id"])
        assert run.info.status == "FINISHED" and run.info.artifact_uri.startswith("mlflow-artifacts:")
        # the model's files went to the server's store, not the client's run directory
        assert list((tmp_path / "server-artifacts").rglob("model.safetensors"))
        assert not (root / "tiny" / "mlartifacts").exists() and not (root / "tiny" / "mlflow.db").exists()
    finally:
        stop(server)
