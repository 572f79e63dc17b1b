"""make bench's CPU table (bench/request_cpu.py): samples reach the stage the table names, and the stages divide
exactly the CPU that was measured."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import request_cpu

SERVE = 'process 10:"python shipml serve --workers 2";'
WORKER = f'{SERVE}process 11:"python shipml serve --workers 2"'  # forked: the master's command line
SPAWNED = f'{SERVE}process 11:"python -c from x import spawn_main; spawn_main(7)"'  # older shipml, --cpu-against
LOOP = "<module> (<string>:1);Server.run (uvicorn/server.py:86);asyncio_run (uvicorn/_compat.py:30)"
LANE = f"{LOOP};RequestResponseCycle.run_asgi (uvicorn/protocols/http/httptools_impl.py:420)"
LANE += ";PredictLane.__call__ (shipml/server/fast_lane.py:60)"
WRITER = "Thread.run (threading.py:982);StoreWriter._run (shipml/adapters/store/writer.py:134)"


def test_the_innermost_frame_the_table_names_gives_the_stage() -> None:
    frames = lambda tail: f"{LANE};{tail}".split(";")  # noqa: E731
    assert request_cpu.stage_of(frames("authorize_key (shipml/server/http.py:120)")) == "auth"
    assert request_cpu.stage_of(frames("parse_json (shipml/server/http.py:83)")) == "body and JSON"
    inc = "Counter.inc (prometheus_client/metrics.py:300);MmapedValue.inc (prometheus_client/values.py:119)"
    assert (
        request_cpu.stage_of(frames(f"PredictionService.count (shipml/server/predictions.py:290);{inc}")) == "metrics"
    )
    assert request_cpu.stage_of(frames("_headers (shipml/server/fast_lane.py:86)")) == "HTTP parsing"
    assert request_cpu.stage_of(LANE.split(";")) == "the answer"  # the lane's own lines
    assert request_cpu.stage_of(LOOP.split(";")) == "event loop and sockets"
    assert request_cpu.stage_of(["mystery (somewhere.py:1)"]) == "other"


@pytest.mark.parametrize("worker", [WORKER, SPAWNED], ids=["forked", "spawned"])
def test_the_stages_divide_what_was_measured_part_by_part(worker: str) -> None:
    text = "\n".join(
        [
            f"{worker};{LANE};parse_json (shipml/server/http.py:83) 30",
            f"{worker};{LANE};summed (shipml/adapters/native.py:85) 10",
            f"{worker};{WRITER};Histograms.observe (shipml/adapters/store/histogram_table.py:70) 1",
            f"{worker};{WRITER};DefaultDialect.do_commit (sqlalchemy/engine/default.py:954) 3",
            f"{SERVE}Multiprocess.run (uvicorn/supervisors/multiprocess.py:1) 5",
        ]
    )
    profile = request_cpu.read_profile(text)
    assert profile.unparsed == 0
    parts = {request_cpu.EVENT_LOOP: 80.0, request_cpu.OTHER_THREADS: 40.0, request_cpu.OTHER_PROCESSES: 2.0}
    cpu = request_cpu.CpuPerRequest(122.0, parts, kernel_us=20.0, requests=1000)
    stages = profile.stages_us(cpu)
    assert stages["body and JSON"] == pytest.approx(60.0)
    assert stages["prediction"] == pytest.approx(20.0)
    assert stages["histograms"] == pytest.approx(10.0)
    assert stages["log write and commit wait"] == pytest.approx(30.0)
    assert sum(stages.values()) == pytest.approx(122.0)
    assert len(request_cpu.table(cpu, profile)) == 5 + len(request_cpu.ORDER)
