"""The DEPTH job (`job = "depth"`, configs/depth.py): relation extraction by direct extraction, by grounding
only and by grounding + refinement, side by side on held-out sentences, readable top to bottom.

  1. held-out sentences (the generator's `eval.split`: unseen entity names and templates) and their gold
  2. per policy (direct, grounding, refinement): SFT on the env's scripted expert (the sft job's stage)
     -> workdir/<role>/sft, then RL on the env's rule reward from the SFT weights -> workdir/<role>, and RL
     on the causal RM from the SFT weights -> workdir/<role>/rm (refinement trains on the grounding SFT
     policy's own labels of training sentences)
  3. greedy labels of every candidate pair by the direct and grounding policies, at each stage (untrained,
     SFT, SFT+RL, SFT+RL on the RM); the refinement policy of the same stage revises the grounding labels
     of each sentence
  4. the table: micro-F1, precision, recall and hallucination rate per variant and stage, hallucination per
     hard-negative type, the recall lost by simplification (direct vs grounding on the gold positives),
     hallucination paired over the negatives, each pipeline variant at F1 equal to direct's (abstaining
     below a confidence threshold chosen on validation sentences) -> workdir/results.{md,json},
     workdir/depth.png, every prediction with its confidence -> workdir/predictions.jsonl

Each stage checkpoints; rerunning the same command loads finished SFT, resumes RL and re-evaluates.
"""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np
from ml_collections import ConfigDict

from alejax.config import from_section, model_config_from, system_prompt_of
from alejax.envs.base import make
from alejax.envs.relation.envs import parse_triples
from alejax.envs.relation.generator import HARD_NEGATIVE_TYPES, generate_corpus
from alejax.envs.relation.metrics import gold_of, relation_scores, selective, threshold_for_f1
from alejax.envs.relation.schema import Sentence
from alejax.jobs.rl import train_loop
from alejax.models.lora import without_adapters
from alejax.parallel.mesh import make_mesh
from alejax.parallel.placement import reshard
from alejax.parallel.rules import state_shardings
from alejax.rl.build import build_pipeline
from alejax.rollout.evaluate import evaluate
from alejax.rollout.scheduler import RolloutConfig
from alejax.stats import paired_difference
from alejax.train.metrics import read_metrics
from alejax.train.sft import train_sft
from alejax.train.state import init_train_state, make_optimizer

ROLES = ("direct", "grounding", "refinement")
# The RM each role's RL on the causal RM uses: (reward name, observation view the pair RM reads).
RM_REWARDS = {
    "direct": ("relation_rm", "sentence"),
    "grounding": ("relation_rm", "sdp"),
    "refinement": ("relation_rm_set", "sdp"),  # a set: the sdp pair RM over every candidate pair
}
STAGES = ("untrained", "sft", "sft_rl", "sft_rm")  # sft_rm: RL from the SFT weights on the causal RM
VARIANTS = ("direct", "grounding", "pipeline")  # pipeline = grounding + refinement
PIPELINE_VARIANTS = ("grounding", "pipeline")
REFINEMENT_INPUTS = ("grounding", "noisy")  # what refinement trains on (configs/depth.py)
SPLIT_NOTES = {
    "dev": ": unseen sentences, training names and templates",
    "test": ": unseen names and templates",
    "test_entities": ": unseen names",
    "test_templates": ": unseen templates",
}


def run(config: ConfigDict) -> dict:
    t_start = time.time()
    workdir = config.workdir
    os.makedirs(workdir, exist_ok=True)
    stages = [s.strip() for s in config.eval.stages.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown or not stages:
        raise ValueError(f"config.eval.stages names {unknown or 'nothing'}; known: {', '.join(STAGES)}")
    stages = [s for s in STAGES if s in stages]
    if config.refinement_inputs not in REFINEMENT_INPUTS:
        raise ValueError(
            f"config.refinement_inputs={config.refinement_inputs!r}; known: {', '.join(REFINEMENT_INPUTS)}"
        )
    if config.xla_cache_dir and not jax.config.jax_compilation_cache_dir:
        # Nine evaluations and three RL runs build samplers of one shape: compile each program once (and
        # once for every seed of bench/depth.py, which shares the directory).
        jax.config.update("jax_compilation_cache_dir", os.path.abspath(config.xla_cache_dir))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)

    # 1. Held-out sentences: every candidate pair of each is scored.
    ev = config.eval
    held_out = generate_corpus(ev.n_sentences, ev.split, config.data.difficulty, ev.first_seed)
    gold, tags = gold_of(held_out)
    n_pairs, n_negative = len(gold), sum(label == "no_relation" for label in gold.values())
    print(
        f"held out: {len(held_out)} {ev.split} sentences ({config.data.difficulty}), {n_pairs} candidate pairs, "
        f"{n_negative} NO-RELATION",
        flush=True,
    )

    # 2. Each policy: SFT on its env's expert, then RL on the rule reward (finished stages load).
    policies = {}
    for i, role in enumerate(ROLES, start=1):
        section = config[role]
        _stage(i, f"{role}: SFT ({section.sft.steps} steps) + RL ({section.steps} steps)", section.workdir)
        if role == "refinement" and config.refinement_inputs == "grounding":
            section.env.kwargs.predictions_path = record_grounding_labels(config, policies["grounding"])
        graphdef, sft_params, tokenizer, _ = train_sft(section.sft)
        params = {"sft": sft_params}
        if "sft_rl" in stages:
            pipeline = build_pipeline(section, tokenizer, params=sft_params)
            train_loop(pipeline, section, section.workdir)  # closes the pipeline
            params["sft_rl"] = pipeline.state.model_params()  # (LoRA: the base and the adapters)
        if "sft_rm" in stages:
            rm_section = rm_rl_section(config, role, train_reward_model(config, RM_REWARDS[role][1]))
            pipeline = build_pipeline(rm_section, tokenizer, params=sft_params)
            train_loop(pipeline, rm_section, rm_section.workdir)
            params["sft_rm"] = pipeline.state.model_params()
        if "untrained" in stages and section.sft.pretrained:  # a real model's start: zero-shot, as shipped
            params["untrained"] = without_adapters(sft_params)
        elif "untrained" in stages:  # the same architecture at its initialization
            model_config = model_config_from(section.model, tokenizer)
            params["untrained"] = init_train_state(
                model_config, make_optimizer(1e-3), make_mesh(section.sft.mesh.to_dict()), seed=config.seed
            )[1].params
        policies[role] = (graphdef, params, tokenizer)

    # 3. Held-out predictions of every variant at every stage; on validation sentences too, where each
    #    pipeline variant's abstention threshold for F1 equal to direct's is chosen (the equal-F1 comparison).
    _stage(4, f"held-out evaluation ({', '.join(stages)})", workdir)
    validation = generate_corpus(ev.n_validation, ev.split, config.data.difficulty, ev.validation_first_seed)
    validation_gold, _ = gold_of(validation)
    results, labels, predicted, prediction_rows = {}, {}, {}, []
    for stage in stages:
        t0 = time.time()
        variants, malformed, labels[stage] = predict_variants(config, policies, stage, held_out)
        val_variants = predict_variants(config, policies, stage, validation)[0] if validation else None
        for split, per_variant in (("held_out", variants), ("validation", val_variants or {})):
            for variant, (pairs, confidence) in per_variant.items():
                prediction_rows += [
                    {
                        "stage": stage,
                        "split": split,
                        "variant": variant,
                        "pair": list(k),
                        "label": label,
                        "p": c,
                    }
                    for (k, label), c in zip(pairs, confidence)
                ]
        for variant in VARIANTS:
            predicted[(variant, stage)] = variants[variant][0]
            scores = relation_scores(gold, variants[variant][0], tags)
            scores["per_tag"] = {t: scores["per_tag"].get(t, {"n": 0, "error": 0.0}) for t in _tags(scores)}
            if variant == "pipeline":
                scores["refinement_malformed"] = malformed / len(held_out)
            results[f"{variant}/{stage}"] = scores
        if val_variants is not None:
            target = relation_scores(validation_gold, val_variants["direct"][0])["f1"]
            for variant in PIPELINE_VARIANTS:
                threshold = threshold_for_f1(validation_gold, *val_variants[variant], target)
                kept = selective(*variants[variant], threshold)
                matched = relation_scores(gold, kept, tags)
                matched["threshold"], matched["validation_target_f1"] = threshold, target
                matched["per_tag"] = {
                    t: matched["per_tag"].get(t, {"n": 0, "error": 0.0}) for t in _tags(matched)
                }
                results[f"{variant}/{stage}/equal_f1"] = matched
        print(
            f"  {stage}: "
            + ", ".join(
                f"{v} F1 {results[f'{v}/{stage}']['f1']:.3f} hall {results[f'{v}/{stage}']['hallucination_rate']:.3f}"
                for v in VARIANTS
            )
            + f" ({time.time() - t0:.0f}s)",
            flush=True,
        )

    # 4. Comparisons on the same pairs, the table and the plot.
    final = "sft_rl" if "sft_rl" in stages else stages[-1]  # the headline: RL on the rule reward
    simplification = {
        stage: recall_lost_by_simplification(gold, labels[stage]["direct"], labels[stage]["grounding"])
        for stage in stages
    }
    negatives = [k for k, label in gold.items() if label == "no_relation"]
    hallucination_vs_direct = {  # variant - direct, paired over the same NO-RELATION pairs
        variant: paired_difference(
            _hallucinated(negatives, predicted[("direct", final)]),
            _hallucinated(negatives, predicted[(variant, final)]),
        )
        for variant in PIPELINE_VARIANTS
    }
    best = max(PIPELINE_VARIANTS, key=lambda v: results[f"{v}/{final}"]["f1"])
    headline = {
        "stage": final,
        "best_pipeline_variant": best,
        "f1_direct": results[f"direct/{final}"]["f1"],
        "f1_pipeline": results[f"{best}/{final}"]["f1"],
        "hallucination_direct": results[f"direct/{final}"]["hallucination_rate"],
        "hallucination_pipeline": results[f"{best}/{final}"]["hallucination_rate"],
    }
    if f"pipeline/{final}/equal_f1" in results:  # the full pipeline abstaining to direct's F1 (validation)
        matched = results[f"pipeline/{final}/equal_f1"]
        headline["f1_pipeline_equal_f1"] = matched["f1"]
        headline["hallucination_pipeline_equal_f1"] = matched["hallucination_rate"]
    table = results_table(config, results, stages, simplification, hallucination_vs_direct, headline, n_pairs)
    with open(os.path.join(workdir, "results.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    wall = time.time() - t_start
    out = {
        "results": results,
        "headline": headline,
        "recall_lost_by_simplification": simplification,
        "hallucination_vs_direct": hallucination_vs_direct,
        "held_out": {
            "split": ev.split,
            "sentences": len(held_out),
            "pairs": n_pairs,
            "negatives": n_negative,
        },
        "seed": config.seed,
        "wall_s": wall,
    }
    _write_json(os.path.join(workdir, "results.json"), out)
    with open(os.path.join(workdir, "predictions.jsonl"), "w", encoding="utf-8") as f:  # for re-analysis
        f.writelines(json.dumps(row) + "\n" for row in prediction_rows)
    png = plot_depth(config, results, stages, os.path.join(workdir, "depth.png"))
    print("\n" + table, flush=True)
    print(f"\ndone in {wall / 60:.1f} min; results {workdir}/results.md, plot {png}", flush=True)
    return out


def _stage(i: int, what: str, where: str) -> None:
    print(f"\n== [{i}/4] {what}  ({where})", flush=True)


def train_reward_model(config: ConfigDict, view: str) -> str:
    """The causal RM (hacking.train_relation_rm: preference pairs where confident wording and rationale
    length go with the preferred answer in training) on `view`'s observations -> workdir/rm_<view>.npz,
    trained once (a rerun reads the file)."""
    from alejax.envs.relation import hacking

    path = os.path.abspath(os.path.join(config.workdir, f"rm_{view}.npz"))
    if not os.path.exists(path):
        r = config.rm
        t0 = time.time()
        study = hacking.StudyConfig(
            n_train=r.n_train,
            n_eval=r.n_eval,
            rm_steps=r.steps,
            vocabulary=r.vocabulary,
            p_train=r.p_train,
            difficulty=config.data.difficulty,
        )
        graphdef, params, vocabulary = hacking.train_relation_rm(config.seed, view, r.method, study)
        hacking.save_relation_rm(path, graphdef, params, vocabulary, view=view)
        print(
            f"trained the {r.method} RM on {view} observations ({time.time() - t0:.0f}s): {path}", flush=True
        )
    return path


def rm_rl_section(config: ConfigDict, role: str, rm_path: str) -> ConfigDict:
    """`role`'s RL section with the causal RM as the env's reward, in workdir/<role>/rm."""
    section = ConfigDict(config[role].to_dict())  # a copy: references resolved, the rule-reward run untouched
    section.workdir = os.path.join(config[role].workdir, "rm")
    name, view = RM_REWARDS[role]
    section.env.kwargs.reward = name
    section.env.kwargs.reward_kwargs = ConfigDict({"path": rm_path, "view": view})
    return section


def record_grounding_labels(config: ConfigDict, policy) -> str:
    """The grounding SFT policy's own greedy labels of `config.n_recorded_sentences` training sentences
    (generator seeds 0..n-1), one JSONL record a sentence: the local predictions refinement trains on. Trained
    on the env's noisy predictor alone, refinement learnt errors that grounding does not make (its pipeline
    scored below grounding alone, docs/depth.md). Written once; a rerun reads the file."""
    path = os.path.join(config.refinement.workdir, "grounding_labels.jsonl")
    if os.path.exists(path):
        return os.path.abspath(path)
    sentences = generate_corpus(config.n_recorded_sentences, "train", config.data.difficulty, 0)
    labels, _ = label_every_pair(config, "grounding", policy, "sft", sentences)
    os.makedirs(config.refinement.workdir, exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        for i, s in enumerate(sentences):
            predictions = [[p.subj, p.obj, labels[(s.id, p.subj, p.obj)]] for p in s.pairs]
            f.write(json.dumps({"seed": i, "predictions": predictions}) + "\n")
    os.replace(path + ".tmp", path)  # a killed run leaves no half file behind
    gold, _ = gold_of(sentences)
    accuracy = np.mean([labels[k] == g for k, g in gold.items()])
    print(
        f"recorded the grounding policy's labels of {len(sentences)} training sentences ({accuracy:.1%} right): {path}",
        flush=True,
    )
    return os.path.abspath(path)


class EveryPair:
    """A grounding or direct env whose task `i` is pair i of a fixed list of (sentence, pair): the held-out
    evaluation covers every candidate pair once (the env's own reset draws one pair per sentence)."""

    def __init__(self, env, items: list[tuple[Sentence, object]]):
        self.env, self.items = env, items
        self.tools, self.system_prompt = env.tools, env.system_prompt

    def reset(self, seed: int):
        return self.env.reset_to(*self.items[seed])

    def step(self, action: str):
        return self.env.step(action)


def _eval_kwargs(config: ConfigDict, role: str) -> dict:
    return {**config[role].env.kwargs.to_dict(), "split": config.eval.split}


def _evaluate(config: ConfigDict, role: str, policy, stage: str, env_factory, task_seeds):
    """Greedy episodes of `role`'s policy at `stage` (the RL stage's rollout and context limits)."""
    graphdef, params, tokenizer = policy
    section = config[role]
    mesh = make_mesh(section.sft.mesh.to_dict())
    return evaluate(
        graphdef,
        reshard(params[stage], state_shardings(params[stage], mesh)),
        tokenizer,
        env_factory,
        task_seeds,
        system_prompt=system_prompt_of(section.env, env_factory()),
        rollout=from_section(RolloutConfig, section.rollout),
        max_length=section.max_length,
        batch_size=config.eval.batch_size,
        mesh=mesh,
        seed=config.seed,
        name=f"{role}/{stage}",
    )


def predict_variants(config: ConfigDict, policies: dict, stage: str, sentences: list[Sentence]):
    """({variant: (predictions [(pair key, label)], confidences)}, refinement malformed count,
    {role: {pair key: label}}) of the policies at `stage` on `sentences`: direct and grounding label every
    pair, refinement revises each sentence's grounding labels. A confidence is the probability of the greedy
    answer that made the prediction (for a refined triple that grounding also gave: grounding's)."""
    variants, labels = {}, {}
    for role in ("direct", "grounding"):
        labels[role], confidence = label_every_pair(config, role, policies[role], stage, sentences)
        variants[role] = (list(labels[role].items()), [confidence[k] for k in labels[role]])
    grounding_confidence = dict(zip(variants["grounding"][0], variants["grounding"][1]))
    refined, malformed, answer_confidence = refine_sentences(
        config, policies["refinement"], stage, sentences, labels["grounding"]
    )
    variants["pipeline"] = (
        refined,
        [grounding_confidence.get(p, answer_confidence[p[0][0]]) for p in refined],
    )
    return variants, malformed, labels


def answer_probability(trajectory) -> float:
    """The probability of the episode's last answer under the policy that wrote it greedily (the behaviour
    log-probs of its tokens: greedy records the untempered ones)."""
    last = max(trajectory.chunk_id, default=0)
    logp = sum(
        lp
        for lp, chunk, generated in zip(trajectory.behaviour_logp, trajectory.chunk_id, trajectory.loss_mask)
        if generated and chunk == last
    )
    return float(np.exp(logp))


def label_every_pair(config: ConfigDict, role: str, policy, stage: str, sentences: list[Sentence]):
    """({(sentence id, subj, obj): label}, {same key: answer probability}): the policy's greedy answer for
    every candidate pair; an answer that names no label (twice) counts as NO-RELATION, the extractor
    abstaining."""
    section = config[role]
    items = [(s, p) for s in sentences for p in s.pairs]
    kwargs = _eval_kwargs(config, role)

    def factory():
        return EveryPair(make(section.env.name, **kwargs), items)

    evaluation = _evaluate(config, role, policy, stage, factory, range(len(items)))
    labels, confidence = {}, {}
    for (sentence, pair), (trajectory,) in zip(items, evaluation.trajectories, strict=True):
        key = (sentence.id, pair.subj, pair.obj)
        labels[key] = trajectory.info.get("label") or "no_relation"
        confidence[key] = answer_probability(trajectory)
    return labels, confidence


def refine_sentences(config: ConfigDict, policy, stage: str, sentences: list[Sentence], local: dict):
    """(triples, malformed, {sentence id: answer probability}): the refinement policy's revised set for each
    sentence, given the grounding labels `local` as its local predictions. A set the policy could not write
    (twice) falls back to the local predictions, as a pipeline would; `malformed` counts those sentences."""
    section = config.refinement
    by_sentence: dict[str, list] = {}
    for (sentence_id, subj, obj), label in local.items():
        by_sentence.setdefault(sentence_id, []).append((subj, obj, label))
    kwargs = {**_eval_kwargs(config, "refinement"), "predictor": lambda s: by_sentence[s.id]}
    seeds = [int(s.id.rsplit("-", 1)[1]) for s in sentences]  # generator ids end in their seed
    evaluation = _evaluate(
        config, "refinement", policy, stage, lambda: make(section.env.name, **kwargs), seeds
    )
    schema = make(section.env.name, **_eval_kwargs(config, "refinement")).schema
    triples, malformed, confidence = [], 0, {}
    for sentence, (trajectory,) in zip(sentences, evaluation.trajectories, strict=True):
        confidence[sentence.id] = answer_probability(trajectory)
        answer = trajectory.actions()[-1] if trajectory.actions() and trajectory.terminated else None
        revised = revised_set(answer, sentence, by_sentence[sentence.id], schema)
        malformed += revised is None
        if revised is None:
            revised = {t for t in by_sentence[sentence.id] if t[2] != schema.no_relation}
        triples += [((sentence.id, s, o), label) for s, o, label in revised]
    return triples, malformed, confidence


def revised_set(answer: str | None, sentence: Sentence, local: list, schema) -> frozenset | None:
    """The relation set a refinement answer states, or None when there is no well-formed one (the episode
    ended on malformed answers: `answer` None)."""
    if answer is None:
        return None
    revised, error = parse_triples(
        answer, [e.id for e in sentence.entities], schema.labels, schema.no_relation, local
    )
    return None if error is not None else revised


def _tags(scores: dict) -> list[str]:
    return [t for t in HARD_NEGATIVE_TYPES if t in scores["per_tag"]] + sorted(
        set(scores["per_tag"]) - set(HARD_NEGATIVE_TYPES)
    )


def _hallucinated(negatives: list, predicted: list) -> np.ndarray:
    labelled = {k for k, label in predicted if label != "no_relation"}
    return np.array([k in labelled for k in negatives], np.float64)


def recall_lost_by_simplification(gold: dict, direct: dict, grounding: dict) -> dict:
    """Direct vs grounding on the gold positives, paired by pair: recall lost = recall(direct) -
    recall(grounding), with the positives only the direct policy finds (`lost`) and only grounding finds."""
    positives = [k for k, label in gold.items() if label != "no_relation"]
    d = np.array([direct[k] == gold[k] for k in positives], np.float64)
    g = np.array([grounding[k] == gold[k] for k in positives], np.float64)
    diff = paired_difference(g, d)  # direct - grounding, per positive pair
    return {
        "recall_direct": float(d.mean()),
        "recall_grounding": float(g.mean()),
        "recall_lost": diff["mean_difference"],
        "se": diff["se"],
        "ci_low": diff["ci_low"],
        "ci_high": diff["ci_high"],
        "lost": float(np.sum((d == 1) & (g == 0))),
        "gained": float(np.sum((d == 0) & (g == 1))),
        "positives": float(len(positives)),
    }


def results_table(config, results, stages, simplification, hallucination_vs_direct, headline, n_pairs) -> str:
    ev, final = config.eval, headline["stage"]
    any_scores = results[f"direct/{stages[0]}"]
    lines = [
        f"Held-out relation extraction ({ev.split} split{SPLIT_NOTES.get(ev.split, '')}; {config.data.difficulty}; "
        f"{ev.n_sentences} sentences, {n_pairs} candidate pairs, {any_scores['n_gold_positive']} positive, "
        f"{any_scores['n_negative']} NO-RELATION; seed {config.seed}; greedy):",
        "",
        "| variant | stage | micro-F1 | precision | recall | hallucination | refinement malformed |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant in VARIANTS:
        for stage in stages:
            s = results[f"{variant}/{stage}"]
            malformed = f"{100 * s['refinement_malformed']:.0f}%" if "refinement_malformed" in s else ""
            lines.append(
                f"| {variant} | {stage} | {100 * s['f1']:.1f} | {100 * s['precision']:.1f} | "
                f"{100 * s['recall']:.1f} | {100 * s['hallucination_rate']:.1f}% | {malformed} |"
            )
    tags = _tags(results[f"direct/{final}"])
    counts = results[f"direct/{final}"]["per_tag"]
    lines += [
        "",
        f"Hallucination per hard-negative type ({final}; share of the type's NO-RELATION pairs given a relation):",
        "",
        "| variant | " + " | ".join(f"{t} ({counts[t]['n']})" for t in tags) + " |",
        "|---|" + "---|" * len(tags),
    ]
    for variant in VARIANTS:
        per_tag = results[f"{variant}/{final}"]["per_tag"]
        lines.append(f"| {variant} | " + " | ".join(f"{100 * per_tag[t]['error']:.0f}%" for t in tags) + " |")
    lines += [
        "",
        "Recall lost by simplification: recall(direct) - recall(grounding only), paired over the gold positives "
        "(points; SE; 95% CI; positives only direct finds / only grounding finds):",
    ]
    for stage, r in simplification.items():
        lines.append(
            f"- {stage}: {100 * r['recall_lost']:+.1f} (SE {100 * r['se']:.1f}; "
            f"[{100 * r['ci_low']:+.1f}, {100 * r['ci_high']:+.1f}]; {int(r['lost'])} / {int(r['gained'])} "
            f"of {int(r['positives'])})"
        )
    lines += [
        "",
        f"Hallucination minus direct's, paired over the same NO-RELATION pairs ({final}; points; SE):",
    ]
    for variant, d in hallucination_vs_direct.items():
        lines.append(
            f"- {variant}: {100 * d['mean_difference']:+.1f} (SE {100 * d['se']:.1f}; "
            f"[{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}])"
        )
    equal_f1 = [st for st in stages if f"pipeline/{st}/equal_f1" in results]
    if equal_f1:
        lines += [
            "",
            f"At equal F1: each pipeline variant abstains (answers NO-RELATION) when its answer's probability is "
            f"below a threshold chosen on {ev.n_validation} validation sentences (seeds from "
            f"{ev.validation_first_seed}): the one whose validation F1 is closest to direct's from above:",
            "",
            "| stage | variant | threshold | micro-F1 | hallucination | direct F1 | direct hallucination |",
            "|---|---|---|---|---|---|---|",
        ]
        for st in equal_f1:
            d = results[f"direct/{st}"]
            for variant in PIPELINE_VARIANTS:
                m = results[f"{variant}/{st}/equal_f1"]
                lines.append(
                    f"| {st} | {variant} | {m['threshold']:.3f} | {100 * m['f1']:.1f} | "
                    f"{100 * m['hallucination_rate']:.2f}% | {100 * d['f1']:.1f} | {100 * d['hallucination_rate']:.2f}% |"
                )
    h = headline
    ratio = (
        h["hallucination_direct"] / h["hallucination_pipeline"] if h["hallucination_pipeline"] > 0 else None
    )
    lines += [
        "",
        f"Best pipeline variant ({final}, by F1): {h['best_pipeline_variant']}; F1 {100 * h['f1_pipeline']:.1f} vs "
        f"direct {100 * h['f1_direct']:.1f}; hallucination {100 * h['hallucination_pipeline']:.1f}% vs direct "
        f"{100 * h['hallucination_direct']:.1f}% (direct / pipeline: "
        + (f"{ratio:.2f}x" if ratio is not None else "n/a, the pipeline hallucinated nothing")
        + ")",
    ]
    return "\n".join(lines)


def plot_depth(config: ConfigDict, results: dict, stages: list[str], path: str) -> str:
    """SFT loss and RL reward per policy, F1 and hallucination per variant and stage, hallucination per
    hard-negative type: one PNG next to the metrics."""
    from matplotlib.figure import Figure  # no pyplot: leaves a notebook's backend alone

    fig = Figure(figsize=(20, 4))
    axes = fig.subplots(1, 4)
    for role in ROLES:
        rows = _rows(os.path.join(config[role].sft.workdir, "metrics.jsonl"))
        axes[0].plot(
            [r["step"] for r in rows if "loss" in r],
            [r["loss"] for r in rows if "loss" in r],
            ".-",
            label=role,
        )
        for reward, style in (("rule", ".-"), ("RM", "x--")):
            rows = _rows(
                os.path.join(config[role].workdir, *(["rm"] if reward == "RM" else []), "metrics.jsonl")
            )
            if rows:
                axes[1].plot(
                    [r["step"] for r in rows if "reward" in r],
                    [r["reward"] for r in rows if "reward" in r],
                    style,
                    label=f"{role} ({reward})",
                )
    axes[0].set(title="SFT loss", xlabel="step", yscale="log")
    axes[1].set(title="RL reward (training episodes; rule or causal RM)", xlabel="RL step")
    for ax in axes[:2]:
        ax.legend()
    names = [f"{v}/{s}" for v in VARIANTS for s in stages]
    x = np.arange(len(names))
    axes[2].bar(x - 0.2, [results[n]["f1"] for n in names], 0.4, label="micro-F1")
    axes[2].bar(x + 0.2, [results[n]["hallucination_rate"] for n in names], 0.4, label="hallucination")
    axes[2].set_xticks(x, names, rotation=45, ha="right", fontsize=7)
    axes[2].set(title="held-out", ylim=(0, 1))
    axes[2].legend()
    final = stages[-1]
    tags = _tags(results[f"direct/{final}"])
    width = 0.8 / len(VARIANTS)
    for j, variant in enumerate(VARIANTS):
        per_tag = results[f"{variant}/{final}"]["per_tag"]
        axes[3].bar(
            np.arange(len(tags)) + j * width, [per_tag[t]["error"] for t in tags], width, label=variant
        )
    axes[3].set_xticks(np.arange(len(tags)) + width, tags, rotation=45, ha="right", fontsize=7)
    axes[3].set(title=f"hallucination by hard-negative type ({final})", ylim=(0, 1))
    axes[3].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def _rows(path: str) -> list[dict]:
    return read_metrics(path) if os.path.exists(path) else []


def _write_json(path: str, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
