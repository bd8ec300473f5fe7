"""The quickstart: from nothing to a trained shopping agent on one CPU in minutes (`job = "quickstart"`).

    python -m alejax.main --config=configs/quickstart.py

ShopSimulator world -> scripted-expert episodes -> BPE tokenizer -> SFT of a tiny policy -> RL with IPA
(chunk loss + chunk-initialized resampling) -> greedy evaluation on held-out tasks of the untrained, SFT and
SFT+RL policies. `rl` is a configs/rl.py config whose `sft` section is configs/sft.py's ShopSimulator stage;
`seed` and the world keys at the top feed every stage (ml_collections references), so `--config.seed=1`
changes them all. Rerunning the same command resumes: finished stages load, RL continues from its last
checkpoint.

All four ShopSimulator scenarios (single, single+persona, multi, multi+persona; `shop/mix`, the scenario a
function of the episode seed) in SFT data, RL groups and evaluation, with a per-scenario table and the paper's
failure tags:

    python -m alejax.main --config=configs/quickstart.py:four_scenarios

Expected (seed 0, 200 held-out tasks, greedy; 2-core CPU at a ~180 GFLOP/s matmul peak, 13.2 min, measured
2026-12-02): untrained 0.0%, SFT 42.5%, SFT + RL 46.0% full success (README: the 5-seed table on the earlier
graph, RL +2.4 ± 0.8 points).
"""

import os

from ml_collections import ConfigDict

from alejax.config import load_config_file, section_of
from alejax.rollout.scheduler import RolloutConfig

HERE = os.path.dirname(os.path.abspath(__file__))
PRESETS = ("default", "test", "four_scenarios", "four_scenarios_test")
# The four-scenario policy's one-line prompt: the shop's actions plus asking the shopper (multi-turn only).
MIX_SYSTEM_PROMPT = "购物助手：每步输出一个动作 search[关键词]、click[值]，有用户对话时可 ask[话]。"


def get_config(preset: str | None = None) -> ConfigDict:
    preset = preset or "default"
    c = ConfigDict()
    c.job = "quickstart"
    c.seed = 0
    c.workdir = "runs/quickstart"
    c.env = ConfigDict()
    c.env.name = (
        "shop/single"  # a ShopSimulator scenario: shop/single | single_persona | multi | multi_persona
    )
    c.env.kwargs = ConfigDict()
    c.env.kwargs.world_seed = c.get_ref("seed")
    c.env.kwargs.n_products = 3000  # ~2000 SFT products: fewer than ~1000 and the tiny policy memorizes
    c.env.kwargs.page_size = 5  # results per page (ShopSimulator's own is 20): shorter episodes
    c.env.kwargs.view = "compact"  # ShopSimulator's page text in about half the tokens (same information)
    c.wandb_project = ""

    def world(**kwargs) -> ConfigDict:
        """The quickstart's world (its keys referenced, so overrides at the top reach it) plus `kwargs`."""
        section = ConfigDict({k: c.env.kwargs.get_ref(k) for k in c.env.kwargs.keys()})
        section.update(kwargs)
        return section

    rl = load_config_file(os.path.join(HERE, "rl.py:tiny"))
    rl.seed = c.get_ref("seed")
    rl.workdir = c.get_ref("workdir") + "/rl"
    rl.wandb_project = c.get_ref("wandb_project")
    # SFT and RL see disjoint products (ShopEnv splits "sft" / "rl" divide "train"): RL on tasks SFT already
    # memorized carries no signal about unseen products, which is what the held-out evaluation measures.
    # RL rewards full success (binary, as IPA's chunk returns assume); evaluation reports every score.
    rl.env.name = c.env.get_ref("name")
    rl.env.kwargs = world(split="rl", reward="success")

    sft = load_config_file(os.path.join(HERE, "sft.py"))  # the ShopSimulator SFT stage
    sft.seed = c.get_ref("seed")
    sft.workdir = c.get_ref("workdir") + "/sft"
    sft.wandb_project = c.get_ref("wandb_project")
    sft.env.name = c.env.get_ref("name")
    sft.env.kwargs = world(split="sft")
    # One episode (~280 tokens) a row: attention over long packed rows costs more than the padding.
    sft.data.seq_len, sft.data.batch_size, sft.steps = 384, 12, 800
    sft.data.n_episodes = 3000  # one per task, mostly distinct products
    # RL trains SFT's model, with its tokenizer, expert and system prompt.
    rl.model, rl.expert, rl.tokenizer = sft.model, sft.expert, sft.tokenizer
    rl.env.system_prompt = sft.env.get_ref("system_prompt")
    rl.sft = sft

    rl.rl.groups_per_step, rl.rl.group_size, rl.rl.minibatch_size = 4, 8, 16
    # IPA: the chunk loss (Eq. 7-9) on chunk-discounted returns (γ = chunk_gamma, H = ipa_mismatch_cap);
    # groups start from the expert's prefixes with the imitation fallback at forks.
    rl.rl.advantage = "chunk_discounted"
    rl.rl.loss.policy_loss = "ipa_chunk"
    rl.rl.loss.kl_coef = 0.0
    rl.rl.resample.enabled = True
    rl.rl.filter_zero_variance_groups = False  # all-failed groups still carry the imitation term
    rl.rollout = section_of(RolloutConfig, max_turns=8, max_new_tokens_per_turn=24)
    rl.max_length = 512
    rl.optim.learning_rate = 1e-4  # 3e-4 drifts: more truncated (never-bought) episodes, -3 points held out
    rl.steps = 20
    rl.checkpoint_every = 5
    c.rl = rl

    c.eval = ConfigDict()
    c.eval.n_tasks = 200  # held-out tasks (the world's eval split), one greedy episode each
    c.eval.batch_size = 50
    c.eval.policies = "untrained,sft,sft_rl"

    if preset not in PRESETS:
        raise ValueError(
            f"unknown preset {preset!r} for configs/quickstart.py; expected one of {', '.join(PRESETS)}"
        )
    if preset.startswith("four_scenarios"):
        # Every scenario equally often (scenario = episode seed mod 4: the 200 held-out tasks are 50 each).
        c.env.name = "shop/mix"
        c.env.kwargs.scenarios = "single,single_persona,multi,multi_persona"
        for section in (sft.env.kwargs, rl.env.kwargs):
            section.scenarios = c.env.kwargs.get_ref("scenarios")
        sft.env.system_prompt = MIX_SYSTEM_PROMPT
        # The expert checks the features before buying, so "bought without checking details" measures what
        # the policy learned (it costs two turns an episode).
        sft.expert.check_details = rl.expert.check_details = True
        # Expert episodes with this tokenizer (3000 products, compact view, page size 5; measured on 200):
        # single ~390 tokens / 6.4 turns, single+persona ~520 / 6.5, multi ~660 / 16.3 (at most 18 turns),
        # multi+persona ~800 / 16.1 (p95 880, max 891): the model's 1024 positions hold every one with room
        # for some detours. 800 steps of 6 rows: ~2.2 epochs of the 3000 episodes (rows of 1024 hold ~1.4).
        sft.data.seq_len, sft.data.batch_size, sft.steps = 1024, 6, 800
        rl.max_length = 1024
        rl.rollout.max_turns, rl.rollout.max_new_tokens_per_turn = 22, 24
    # test presets: seconds, for tests: everything tiny, nothing expected to learn
    if preset in ("test", "four_scenarios_test"):
        c.env.kwargs.n_products = 200
        sft.data.n_episodes, sft.steps, sft.data.seq_len, sft.data.batch_size = 40, 4, 512, 2
        sft.eval_every = sft.checkpoint_every = 2
        sft.log_every = 2
        sft.model.d_model, sft.model.n_layers, sft.model.mlp_dim, sft.model.head_dim = 32, 1, 64, 8
        rl.rl.groups_per_step, rl.rl.group_size, rl.rl.minibatch_size = 2, 2, 4
        rl.rollout.max_turns, rl.rollout.max_new_tokens_per_turn = 3, 6
        rl.steps, rl.checkpoint_every = 4, 2
        c.eval.n_tasks, c.eval.batch_size = 4, 4  # four_scenarios_test: one held-out task per scenario
    if preset == "four_scenarios_test":  # rows and turns long enough to reach a multi-turn episode's shop
        sft.data.seq_len, rl.rollout.max_turns = 1024, 6
    return c
