"""Test setup: 8 fake CPU devices, set before jax is imported anywhere; one XLA compilation cache per run."""

import os
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

# Many tests build the same small programs (a tiny model's train step, sampler, loss) through fresh jit
# closures, which jit's own caches cannot share; XLA's persistent cache keys on the compiled program, so
# each is compiled once per run. A fresh directory per run: no state survives between runs. The pytest-xdist
# workers inherit the controller's directory through the environment, so they share one cache.
if os.environ.get("ALEJAX_TEST_COMPILE_CACHE", "1") != "0":
    if "PYTEST_XDIST_WORKER" not in os.environ or "ALEJAX_TEST_COMPILE_CACHE_DIR" not in os.environ:
        os.environ["ALEJAX_TEST_COMPILE_CACHE_DIR"] = tempfile.mkdtemp(prefix="alejax_xla_cache_")
    jax.config.update("jax_compilation_cache_dir", os.environ["ALEJAX_TEST_COMPILE_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
