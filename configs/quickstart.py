"""The quickstart: from nothing to a trained shopping agent on one CPU in minutes (`job = "quickstart"`).

    python -m alejax.main --config=configs/quickstart.py

ShopSimulator world -> scripted-expert episodes -> BPE tokenizer -> SFT of a tiny policy -> RL with IPA
(chunk loss + chunk-initialized resampling) -> greedy evaluation on held-out tasks of the untrained, SFT and
SFT+RL policies. `sft` is a configs/sft.py config and `rl` a configs/rl.py config; `seed` and the world keys
at the top feed both (ml_collections references), so `--config.seed=1` changes every stage.
Rerunning the same command resumes: finished stages load, RL continues from its last checkpoint.
"""

import importlib.util
import os

from ml_collections import ConfigDict


def _sibling_config(name: str, preset: str | None = None) -> ConfigDict:
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), name)
    spec = importlib.util.spec_from_file_location(f"_alejax_{name[:-3]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(preset)


def get_config(preset: str | None = None) -> ConfigDict:
    preset = preset or "default"
    c = ConfigDict()
    c.job = "quickstart"
    c.seed = 0
    c.workdir = "runs/quickstart"
    c.env = "shop/single"  # a ShopSimulator scenario: shop/single | single_persona | multi | multi_persona
    c.n_products = 3000  # ~2000 SFT products: fewer than ~1000 and the tiny policy memorizes its tasks
    c.page_size = 5  # results per page (ShopSimulator's own is 20): shorter episodes for a tiny model
    c.view = "compact"  # ShopSimulator's page text in about half the tokens (same information)
    c.wandb_project = ""

    sft = _sibling_config("sft.py")
    sft.seed = c.get_ref("seed")
    sft.env = c.get_ref("env")
    sft.workdir = c.get_ref("workdir") + "/sft"
    sft.env_kwargs.world_seed = c.get_ref("seed")
    sft.env_kwargs.n_products = c.get_ref("n_products")
    sft.env_kwargs.page_size = c.get_ref("page_size")
    sft.env_kwargs.view = c.get_ref("view")
    # SFT and RL see disjoint products (ShopEnv splits "sft" / "rl" divide "train"): RL on tasks SFT already
    # memorized carries no signal about unseen products, which is what the held-out evaluation measures.
    sft.env_kwargs.split = "sft"
    # One episode (~280 tokens) a row: attention over long packed rows costs more than the padding.
    sft.data.seq_len, sft.data.batch_size, sft.steps = 384, 12, 800
    sft.data.n_episodes = 3000  # one per task, mostly distinct products
    sft.wandb_project = c.get_ref("wandb_project")
    c.sft = sft

    rl = _sibling_config("rl.py")
    rl.seed = c.get_ref("seed")
    rl.workdir = c.get_ref("workdir") + "/rl"
    rl.env.name = c.get_ref("env")
    rl.env.render_tools = False
    # RL rewards full success (binary, as IPA's chunk returns assume); evaluation reports every score.
    rl.env.kwargs = ConfigDict(
        {
            "world_seed": 0,
            "n_products": 500,
            "split": "rl",
            "page_size": 5,
            "reward": "success",
            "view": "",
        }
    )
    rl.env.kwargs.world_seed = c.get_ref("seed")
    rl.env.kwargs.n_products = c.get_ref("n_products")
    rl.env.kwargs.page_size = c.get_ref("page_size")
    rl.env.kwargs.view = c.get_ref("view")
    rl.wandb_project = c.get_ref("wandb_project")
    del rl["model"], rl["tokenizer"], rl["sft"]  # the SFT stage's model, tokenizer and weights are used
    rl.rl.groups_per_step, rl.rl.group_size, rl.rl.minibatch_size = 4, 8, 16
    rl.rl.advantage = "grpo"
    rl.loss.policy_loss = "ipa_chunk"  # IPA's chunk loss (Eq. 7-9); γ = ipa_gamma, H = ipa_mismatch_cap
    rl.loss.kl_coef = 0.0
    rl.resample.enabled = True  # IPA: groups start from the expert's prefixes, imitation fallback at forks
    rl.resample.teacher_policy = ConfigDict({"check_details": False})
    rl.rl.filter_zero_variance_groups = False  # all-failed groups still carry the imitation term
    rl.rollout = ConfigDict({"max_turns": 8, "max_new_tokens_per_turn": 24})
    rl.max_length = 512
    rl.optim.learning_rate = 1e-4  # 3e-4 drifts: more truncated (never-bought) episodes, -3 points held out
    rl.steps = 20
    rl.checkpoint_every = 5
    c.rl = rl

    c.eval = ConfigDict()
    c.eval.n_tasks = 200  # held-out tasks (the world's eval split), one greedy episode each
    c.eval.batch_size = 50
    c.eval.policies = "untrained,sft,sft_rl"

    if preset == "test":  # seconds, for tests: everything tiny, nothing expected to learn
        c.n_products = 200
        sft.data.n_episodes, sft.steps, sft.data.seq_len, sft.data.batch_size = 40, 4, 512, 2
        sft.eval_every = sft.checkpoint_every = 2
        sft.log_every = 2
        sft.model.d_model, sft.model.n_layers, sft.model.mlp_dim, sft.model.head_dim = 32, 1, 64, 8
        rl.rl.groups_per_step, rl.rl.group_size, rl.rl.minibatch_size = 2, 2, 4
        rl.rollout.max_turns, rl.rollout.max_new_tokens_per_turn = 3, 6
        rl.steps, rl.checkpoint_every = 4, 2
        c.eval.n_tasks, c.eval.batch_size = 4, 4
    elif preset != "default":
        raise ValueError(f"unknown preset {preset!r} for configs/quickstart.py; expected default or test")
    return c
