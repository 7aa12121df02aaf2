"""Two browser sessions at once, as gradio_client sees the app: each runs its own method at the
same time, each session lists only its own run, and the cached dense model is unchanged."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest
import torch
from gradio_client import Client

import app
from pruning import lab

SMALL = {
    "model": "bundled",
    "data": "bundled",
    "text": "",
    "nsamples": 4,
    "seqlen": 64,
    "seed": 0,
    "eval_tokens": 512,
}


def _checksum(model) -> float:
    return float(sum(p.double().abs().sum() for p in model.parameters()))


@pytest.fixture(scope="module")
def url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = app.build_demo()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def test_two_clients_at_once_get_their_own_runs_and_leave_the_model_alone(url):
    model, _ = lab.dense_model(lab.Setup(nsamples=4, seqlen=64, eval_tokens=512))
    before = _checksum(model)
    status, tables, errors = {}, {}, []

    def session(method: str, sparsity: float) -> None:
        try:
            client = Client(url, verbose=False)
            status[method] = client.predict(
                method=method,
                pattern="unstructured",
                ratio=sparsity,
                nm="2:4",
                options="",
                mode="dense",
                api_name="/run_single",
                **SMALL,
            )
            tables[method] = client.predict(api_name="/selectors")[-1]
        except Exception as e:  # noqa: BLE001 (reported by the main thread)
            errors.append(e)

    threads = [
        threading.Thread(target=session, args=a) for a in (("magnitude", 0.5), ("wanda", 0.6))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not errors, errors
    assert "magnitude 50% · dense" in status["magnitude"] and "wanda" not in status["magnitude"]
    assert "wanda 60% · dense" in status["wanda"] and "magnitude" not in status["wanda"]
    for method, table in tables.items():  # the session's run table: its own run, only
        runs = [row[0] for row in table["data"]]
        assert len(runs) == 1 and runs[0].startswith(method), (method, table)
    assert _checksum(model) == before
    assert torch.isfinite(torch.tensor(before))


def test_a_client_downloads_the_exports_of_its_run(url, tmp_path):
    client = Client(url, verbose=False, download_files=str(tmp_path))
    client.predict(
        method="wanda",
        pattern="N:M",
        ratio=0.5,
        nm="2:4",
        options="",
        mode="dense",
        api_name="/run_single",
        **SMALL,
    )
    files, note = client.predict(view=None, api_name="/export_files")  # the last run
    names = sorted(Path(f).name for f in files)
    assert names == [
        "model.zip",
        "pruning_masks.safetensors",
        "pruning_report.csv",
        "pruning_report.json",
    ]
    report = json.loads(next(Path(f) for f in files if f.endswith(".json")).read_text())
    assert report["method"] == "wanda" and report["sparsity"] == "2:4" and "MB in all" in note
