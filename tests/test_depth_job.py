"""The DEPTH job (configs/depth.py): its test preset end to end (data -> SFT -> RL -> table + PNG), the pieces
it scores with, its config errors, and bench/depth.py's summary over seeds."""

import importlib.util
import json
import os

import pytest

from alejax.config import load_config_file
from alejax.envs import make
from alejax.envs.relation.generator import generate_corpus, generate_sentence
from alejax.envs.relation.schema import SYNTHETIC_SCHEMA
from alejax.jobs import JOBS
from alejax.jobs.depth import (
    STAGES,
    VARIANTS,
    EveryPair,
    recall_lost_by_simplification,
    revised_set,
)
from alejax.main import run_job

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "depth.py")


def _config(workdir, preset="test"):
    c = load_config_file(f"{CONFIG}:{preset}")
    c.workdir = str(workdir)
    c.xla_cache_dir = ""  # the tests' own compile cache (conftest)
    return c


def test_depth_job_runs_every_stage_and_sft_beats_untrained(tmp_path):
    out = run_job(_config(tmp_path))
    results = out["results"]
    assert set(results) == {f"{v}/{s}" for v in VARIANTS for s in STAGES} | {
        f"{v}/{s}/equal_f1" for v in ("grounding", "pipeline") for s in STAGES
    }
    # At equal F1: the abstaining pipeline keeps only predictions at or above its validation threshold, so it
    # predicts no more than the greedy one.
    for s in STAGES:
        matched, greedy = results[f"pipeline/{s}/equal_f1"], results[f"pipeline/{s}"]
        assert matched["n_predicted"] <= greedy["n_predicted"] and 0.0 <= matched["threshold"] <= 1.0
        assert matched["validation_target_f1"] >= 0.0
    assert "At equal F1" in open(tmp_path / "results.md").read()
    held_out = out["held_out"]
    for name, scores in results.items():
        assert 0.0 <= scores["f1"] <= 1.0 and 0.0 <= scores["hallucination_rate"] <= 1.0, name
        assert scores["n_negative"] == held_out["negatives"]  # every candidate pair was scored
        assert sum(t["n"] for t in scores["per_tag"].values()) == held_out["negatives"]
    # SFT on the expert must extract relations the untrained policy (random tokens) does not.
    for variant in ("direct", "grounding"):
        assert results[f"{variant}/sft"]["f1"] > results[f"{variant}/untrained"]["f1"], variant
    assert {"f1_direct", "f1_pipeline", "hallucination_direct", "hallucination_pipeline"} <= set(
        out["headline"]
    )
    assert out["headline"]["f1_direct"] == results["direct/sft_rl"]["f1"]
    assert set(out["recall_lost_by_simplification"]) == set(STAGES)
    table = open(tmp_path / "results.md").read()
    for text in (
        "| pipeline | sft_rl |",
        "Hallucination per hard-negative type",
        "Recall lost by simplification",
    ):
        assert text in table
    assert os.path.getsize(tmp_path / "depth.png") > 10_000
    assert (tmp_path / "results.json").exists()
    for role in ("direct", "grounding", "refinement"):  # each policy's SFT and two RL stages wrote metrics
        for stage_dir in ("sft", ".", "rm"):
            assert (tmp_path / role / stage_dir / "metrics.jsonl").exists(), (role, stage_dir)
    # RL on the causal RM: one RM a view, the refinement's set reward reads the sdp one.
    assert {p.name for p in tmp_path.glob("rm_*.npz")} == {"rm_sdp.npz", "rm_sentence.npz"}
    # Refinement trained on the grounding SFT policy's own labels of the recorded training sentences.
    records = [json.loads(line) for line in open(tmp_path / "refinement" / "grounding_labels.jsonl")]
    assert [r["seed"] for r in records] == list(range(20))
    sentence = generate_sentence(3, "train", "easy")
    assert [tuple(t[:2]) for t in records[3]["predictions"]] == [(p.subj, p.obj) for p in sentence.pairs]
    assert {t[2] for r in records for t in r["predictions"]} - set(SYNTHETIC_SCHEMA.labels) == set()


def test_bad_config_keys_and_stage_names_are_clear_errors(tmp_path):
    assert "depth" in JOBS
    with pytest.raises(ValueError, match="unknown preset"):
        load_config_file(f"{CONFIG}:huge")
    c = _config(tmp_path)
    c.refinement_inputs = "gold"
    with pytest.raises(ValueError, match="refinement_inputs"):
        run_job(c)
    c = _config(tmp_path)
    c.eval.stages = "sft,best"
    with pytest.raises(ValueError, match="best"):  # before any training
        run_job(c)
    assert not os.path.exists(tmp_path / "direct")
    c = _config(tmp_path)
    with pytest.raises(AttributeError, match="bogus"):
        c.eval.bogus  # noqa: B018  (a config is locked to its keys, like --config.eval.bogus=1)
    # The data keys at the top reach every policy's env (ml_collections references).
    c.data.difficulty = "hard"
    assert {c[r].env.kwargs.difficulty for r in ("direct", "grounding", "refinement")} == {"hard"}
    assert c.grounding.sft.env.kwargs.difficulty == "hard"


def test_every_pair_env_covers_each_candidate_pair_once():
    sentences = generate_corpus(6, "dev", "medium")
    items = [(s, p) for s in sentences for p in s.pairs]
    env = EveryPair(make("relation/grounding", split="dev"), items)
    seen = []
    for i, (sentence, pair) in enumerate(items):
        observation, info = env.reset(i)
        assert info["sentence_id"] == sentence.id and info["gold"] == pair.label
        assert f"S = {sentence.mention(pair.subj)}" in observation
        _, reward, terminated, _, step_info = env.step(pair.label)  # the gold label scores 1
        assert terminated and reward == 1.0 and step_info["label"] == pair.label
        seen.append((sentence.id, pair.subj, pair.obj))
    assert len(set(seen)) == len(items) > len(sentences)


def test_recall_lost_by_simplification_by_hand():
    gold = {"a": "works_for", "b": "founded", "c": "born_in", "d": "no_relation", "e": "lives_in"}
    direct = {"a": "works_for", "b": "founded", "c": "no_relation", "d": "works_for", "e": "lives_in"}
    grounding = {"a": "works_for", "b": "no_relation", "c": "born_in", "d": "no_relation", "e": "no_relation"}
    r = recall_lost_by_simplification(gold, direct, grounding)
    assert r["positives"] == 4 and r["recall_direct"] == 0.75 and r["recall_grounding"] == 0.5
    assert r["recall_lost"] == pytest.approx(0.25)
    assert (r["lost"], r["gained"]) == (2, 1)  # b and e only direct finds; c only grounding


def test_revised_set_parses_or_reports_malformed():
    sentence = generate_corpus(1, "dev", "medium")[0]
    env = make("relation/refinement", split="dev")
    schema = env.schema
    ids = [e.id for e in sentence.entities]
    assert revised_set("none", sentence, [], schema) == frozenset()
    answer = f"{ids[0]} {ids[1]} works_for\n{ids[0]} {ids[1]} no_relation"
    assert revised_set(answer, sentence, [], schema) == {(ids[0], ids[1], "works_for")}
    assert revised_set("e99 e0 works_for", sentence, [], schema) is None  # unknown entity
    assert revised_set(None, sentence, [], schema) is None  # the episode ended on malformed answers


def _bench():
    spec = importlib.util.spec_from_file_location("bench_depth", os.path.join(ROOT, "bench", "depth.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _seed_result(f1_direct, f1_pipeline, hall_direct, hall_pipeline):
    results = {}
    for variant in VARIANTS:
        f1 = f1_direct if variant == "direct" else f1_pipeline
        hall = hall_direct if variant == "direct" else hall_pipeline
        results[f"{variant}/sft_rl"] = {"f1": f1, "precision": f1, "recall": f1, "hallucination_rate": hall}
    return {
        "results": results,
        "headline": {
            "stage": "sft_rl",
            "best_pipeline_variant": "pipeline",
            "f1_direct": f1_direct,
            "f1_pipeline": f1_pipeline,
            "hallucination_direct": hall_direct,
            "hallucination_pipeline": hall_pipeline,
        },
        "recall_lost_by_simplification": {"sft_rl": {"recall_lost": 0.1}},
        "held_out": {"split": "dev", "sentences": 10, "pairs": 30, "negatives": 20},
        "wall_s": 60.0,
    }


def test_bench_summary_means_ses_and_paired_differences():
    bench = _bench()
    per_seed = {0: _seed_result(0.5, 0.6, 0.2, 0.1), 1: _seed_result(0.7, 0.7, 0.3, 0.1)}
    s = bench.summarize(per_seed)
    assert s["f1_direct"][0] == pytest.approx(0.6) and s["f1_direct"][1] == pytest.approx(0.1)
    assert s["f1_gain"][0] == pytest.approx(0.05) and s["f1_gain"][1] == pytest.approx(0.05)
    assert s["hallucination_change"][0] == pytest.approx(-0.15)
    text = bench.table(s, per_seed)
    assert "2.50x" in text and "2 seeds (0, 1)" in text
    # The goal per stage: ratio 2.5 at a paired F1 gain of +0.05 ± 0.05 is met; 1.9x is not; nor is 3x at an
    # F1 loss larger than its SE.
    assert s["stages"] == ["sft_rl"] and s["goal/sft_rl"]["met"] and "| sft_rl |" in text
    assert not bench.goal_check([0.5, 0.7], [0.6, 0.7], [0.19, 0.19], [0.1, 0.1])["met"]
    assert not bench.goal_check([0.5, 0.7], [0.4, 0.59], [0.3, 0.3], [0.1, 0.1])["met"]
    mixed = bench.goal_check([0.5, 0.7], [0.45, 0.8], [0.3, 0.3], [0.1, 0.1])  # F1 -0.05 and +0.1 by seed
    assert mixed["met"] and mixed["f1_gain"] == pytest.approx(0.025)


def test_the_smollm2_preset_adapts_the_real_model_in_every_role():
    c = load_config_file(f"{CONFIG}:smollm2")
    for role in ("direct", "grounding", "refinement"):
        s = c[role]
        assert s.sft.pretrained == "smollm2" and s.lora.rank > 0 and s.sft.lora.rank == s.lora.rank
        assert s.env.system_prompt == "env"  # zero-shot needs the label list the env's prompt gives
        assert s.optim.learning_rate == 1e-4 and s.rl.max_refill_groups > 0
    tiny = load_config_file(f"{CONFIG}:tiny")
    assert not tiny.direct.sft.pretrained and tiny.direct.lora.rank == 0
