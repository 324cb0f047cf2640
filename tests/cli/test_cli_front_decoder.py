"""The front table's speed-up column: a decoder run quotes its decode-per-token speed-up."""

from __future__ import annotations

from paretoforge.cli import _print_front
from paretoforge.orchestrator.results import FrontMember, speedup_basis


def _member(objectives: list[str]) -> FrontMember:
    return FrontMember(
        trial=3, config={"layers_kept": 1, "heads_kept": 1, "ffn_kept": 0.5,
                         "precision": "fp32"},
        objectives={o: 1.0 for o in objectives}, metrics={"onnx_bytes": 2048},
        artifacts={}, relative={"speedup_decode_ms_per_token@cpu-1t": 2.5,
                                "speedup_latency_p50_ms@cpu-1t": 1.75},
        speedup_metric=speedup_basis(objectives))


def test_a_decoder_front_shows_decode_and_prefill_speed_ups(capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "240")  # headers unwrapped
    objectives = ["perplexity", "decode_ms_per_token@cpu-1t"]
    member = _member(objectives)
    _print_front([member], objectives)
    out = capsys.readouterr().out
    assert "cpu-1t decode/token" in out and "cpu-1t prefill p50" in out
    assert out.index("2.50x") < out.index("1.75x")  # decode first: the run's objective
    assert member.to_json()["speedup"] == {"metric": "decode_ms_per_token@cpu-1t",
                                           "value": 2.5}


def test_a_latency_front_keeps_its_p50_speed_up(capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "240")
    objectives = ["accuracy", "latency_p50_ms@cpu-1t"]
    member = _member(objectives)
    _print_front([member], objectives)
    out = capsys.readouterr().out
    assert "speed-up (cpu-1t p50)" in out and "1.75x" in out and "2.50x" not in out
    assert member.to_json()["speedup"]["metric"] == "latency_p50_ms@cpu-1t"
