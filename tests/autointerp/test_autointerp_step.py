"""The interpret step once (fastsae.autointerp.step.interpret_run), called by the ``interpret``
CLI and by ``pipeline.step_interpret``: the same outputs either way, the exit codes of a budget
stop (3) and of a failing endpoint (4) through the CLI against a loopback server, the CLI's
defaults read from the dataclasses, and AutointerpConfig built on ClientConfig."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json

import pytest

from autointerp_fixtures import TopicOracle, make_run
from fastsae.autointerp import AutointerpConfig, ClientConfig, interpret_features
from fastsae.autointerp.cli import add_parser
from fastsae.autointerp.step import interpret_run
from llm_server import LLMServer, error


def _parser():
    ap = argparse.ArgumentParser(prog="fastsae")
    add_parser(ap.add_subparsers(dest="command", required=True))
    return ap


def _cli(argv):
    args = _parser().parse_args(argv)
    return args.func(args)


def _lines(path):
    return path.read_text().splitlines()


def test_step_interpret_writes_what_the_cli_writes(tmp_path, capsys):
    from fastsae.pipeline import StepFailed, step_interpret

    a, b = make_run(tmp_path / "a"), make_run(tmp_path / "b")
    assert _cli(["interpret", "--run", str(a.root), "--backend", "keywords", "--quiet", "--features", "1-2",
                 "--seed", "3"]) == 0
    step_interpret(b, backend="keywords", seed=3, quiet=True, features=[1, 2])
    assert [json.loads(x)["feature"] for x in _lines(b.labels_path)] == [1, 2]
    assert _lines(a.labels_path) == _lines(b.labels_path)
    assert _lines(a.root / "family_labels.jsonl") == _lines(b.root / "family_labels.jsonl")
    assert a.config()["interpret"] == b.config()["interpret"]
    # bad input is exit code 2 for the command, StepFailed for the pipeline
    with pytest.raises(StepFailed, match="exit code 2"):
        step_interpret(b, backend="keywords", quiet=True, features=[9])
    assert "outside" in capsys.readouterr().err


def test_cli_exit_codes_budget_then_resume_then_endpoint_failure(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    run = make_run(tmp_path / "a")
    common = ["--interpreter-model", "test-interp", "--predictor-model", "test-pred", "--concurrency", "1",
              "--quiet"]
    with LLMServer(chat=TopicOracle()) as srv:
        # 7 requests of 120 tokens per feature: the second one would pass 1000 tokens
        rc = _cli(["interpret", "--run", str(run.root), "--base-url", srv.url, "--max-tokens", "1000", *common])
        assert rc == 3
        assert "stopped by the budget" in capsys.readouterr().out
        assert [json.loads(x)["feature"] for x in _lines(run.labels_path)] == [0]
        assert not (run.root / "family_labels.jsonl").exists() and srv.count() == 7
        assert run.metrics()[-1]["exit_code"] == 3 and run.metrics()[-1]["tokens"] == 840
        # rerun without a budget: the rest, nothing asked twice, then the family
        assert _cli(["interpret", "--run", str(run.root), "--base-url", srv.url, *common]) == 0
        assert sorted(json.loads(x)["feature"] for x in _lines(run.labels_path)) == [0, 1, 2, 3]
        assert len(_lines(run.root / "family_labels.jsonl")) == 1 and srv.count() == 4 * 7 + 7
    fresh = make_run(tmp_path / "b")
    with LLMServer(chat=lambda req: error(401, "Incorrect API key provided")) as srv:
        assert _cli(["interpret", "--run", str(fresh.root), "--base-url", srv.url, *common]) == 4
        assert "401" in capsys.readouterr().err and srv.count() == 1
    assert fresh.metrics()[-1]["exit_code"] == 4 and "interpret" not in fresh.config()


def test_cli_and_step_defaults_are_the_dataclass_defaults():
    args = _parser().parse_args(["interpret", "--run", "x"])
    cfg = AutointerpConfig()
    step = inspect.signature(interpret_run).parameters
    api = inspect.signature(interpret_features).parameters
    for name in ("concurrency", "timeout", "max_cost", "max_tokens", "seed", "negatives", "domain", "corpus"):
        assert getattr(args, name) == getattr(cfg, name), name
        assert step[name].default == getattr(cfg, name), name
        if name in api:
            assert api[name].default == getattr(cfg, name), name
    for name in ("interpreter_model", "predictor_model", "backend"):
        assert getattr(args, name) == step[name].default == api[name].default, name


def test_autointerp_config_builds_on_client_config():
    client_fields = {f.name: f.default for f in dataclasses.fields(ClientConfig)}
    own = {f.name: f.default for f in dataclasses.fields(AutointerpConfig)}
    assert issubclass(AutointerpConfig, ClientConfig)
    assert {k: own[k] for k in client_fields} == client_fields  # same fields, same defaults
    cfg = AutointerpConfig(concurrency=3, timeout=7, max_retries=1, temperature=None, prices={"m": (1.0, 2.0)})
    cc = cfg.client_config()
    assert type(cc) is ClientConfig and cc.timeout == 7.0 and isinstance(cc.timeout, float)
    assert dataclasses.asdict(cc) == {**dataclasses.asdict(ClientConfig()), "concurrency": 3, "timeout": 7.0,
                                      "max_retries": 1, "temperature": None, "prices": {"m": (1.0, 2.0)}}
    # ClientConfig's validation runs for the inherited fields; the one check policy for the rest
    with pytest.raises(ValueError, match="concurrency"):
        AutointerpConfig(concurrency=0)
    with pytest.raises(ValueError, match="token_param"):
        AutointerpConfig(token_param="x")
    for bad in (dict(n_top="5"), dict(seed=1.5), dict(max_tokens=True), dict(corpus=3)):
        with pytest.raises(TypeError, match=next(iter(bad))):
            AutointerpConfig(**bad)
    with pytest.raises(ValueError, match="max_cost"):
        AutointerpConfig(max_cost=float("nan"))
