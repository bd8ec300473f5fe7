"""Orbax checkpointing of a whole train state, written against plain pytrees.

A checkpoint step holds two orbax items:

* ``state``: the train state, any pytree of arrays (``{"params": ...,
  "opt_state": ..., "step": ..., "rng": ...}``; a ``TrainState``'s
  ``frozen`` weights, LoRA's base, are left out and come back from the
  template), saved with
  ``StandardSave`` / restored with ``StandardRestore``. Arrays may be sharded
  over a :class:`jax.sharding.Mesh`; restore reshards onto whatever shardings
  the template asks for, so a run can resume on a different mesh or layout.
* ``extra``: a JSON-serializable value (normally a dict) for everything that is
  not an array: the data-iterator state (e.g. a grain ``DataLoader``
  iterator's ``get_state()``, which is ``bytes`` in current grain versions),
  config metadata, etc. ``bytes`` values anywhere inside it are stored as
  base64 and come back as ``bytes``.

Usage::

    ckpt = Checkpointer("/ckpts/run1", keep=3)
    restored = ckpt.restore(abstract_like(state))   # None on a fresh run
    if restored is not None:
        state, extra, step = restored
        data_iter.set_state(extra["data"])
    for step in range(step + 1, num_steps):
        state = train_step(state, next(data_iter))
        ckpt.save(step, state, {"data": data_iter.get_state()})
    ckpt.close()

Step directories follow orbax's layout (``<directory>/<step>/{state,extra}``);
a save in progress lives in ``<step>.orbax-checkpoint-tmp-<ts>`` and is renamed
into place only once fully written, so a crash mid-save never produces a
visible step. See :class:`Checkpointer` for what happens when a finalized step
is nevertheless damaged.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from alejax.train.state import TrainState

__all__ = [
    "CheckpointError",
    "Checkpointer",
    "abstract_like",
    "abstract_with_shardings",
    "decode_extra",
    "encode_extra",
    "resume",
]

logger = logging.getLogger(__name__)

# orbax writes this file into a step directory as the last act of a successful
# save (before the atomic rename on local filesystems; as the only commit
# signal on GCS). A step directory without it was not written by a completed
# orbax save (e.g. a partial copy), so we never restore from one.
try:  # the constant lives in a private module; don't break if it moves.
    from orbax.checkpoint._src.path.atomicity_types import (  # type: ignore
        COMMIT_SUCCESS_FILE as _COMMIT_MARKER,
    )
except Exception:  # pragma: no cover
    _COMMIT_MARKER = "commit_success.txt"

_STATE = "state"
_EXTRA = "extra"
# Marker key used to carry ``bytes`` through JSON.
_BYTES_KEY = "__bytes_b64__"
# Envelope around ``extra`` so that ``None`` round-trips and the format can
# evolve.
_EXTRA_FORMAT = "alejax.checkpoint.extra/v1"
# Longest error text quoted per step in warnings / CheckpointError messages
# (tensorstore errors embed whole JSON specs); the full error is chained.
_MAX_ERR_CHARS = 400


class CheckpointError(RuntimeError):
    """A checkpoint could not be restored.

    Attributes:
      directory: the checkpoint root directory.
      failures: ``{step: exception}`` for every step that was tried, in the
        order tried.
    """

    def __init__(self, message: str, directory: str, failures: Mapping[int, BaseException]):
        super().__init__(message)
        self.directory = directory
        self.failures = dict(failures)


# --------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------


def _leaf_to_abstract(x: Any) -> Any:
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    if isinstance(x, jax.Array):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    if isinstance(x, (np.ndarray, np.generic)):
        return jax.ShapeDtypeStruct(np.shape(x), x.dtype)
    return x


def abstract_like(state: Any) -> Any:
    """Returns a restore template for ``state``: same tree, abstract leaves.

    ``jax.Array`` leaves become ``jax.ShapeDtypeStruct(shape, dtype,
    sharding=leaf.sharding)``; numpy arrays/scalars become
    ``ShapeDtypeStruct``s without a sharding (orbax then falls back to the
    sharding recorded at save time, which only works on the same topology);
    existing ``ShapeDtypeStruct``s and other leaves are kept as they are.
    Works on a state produced by ``jax.eval_shape`` too.
    """
    return jax.tree.map(_leaf_to_abstract, state)


def abstract_with_shardings(shapes_tree: Any, shardings_tree: Any) -> Any:
    """Combines shapes/dtypes with shardings into a restore template.

    Args:
      shapes_tree: pytree whose leaves have ``.shape`` and ``.dtype`` (arrays,
        or ``ShapeDtypeStruct``s, e.g. from ``jax.eval_shape(init_fn, ...)``).
      shardings_tree: pytree of ``jax.sharding.Sharding`` with the structure of
        ``shapes_tree`` or a prefix of it (a single sharding applies to a whole
        subtree, e.g. one replicated ``NamedSharding`` for everything). A
        ``None`` leaf leaves that subtree without a sharding.

    Returns:
      A pytree like ``shapes_tree`` of ``jax.ShapeDtypeStruct(shape, dtype,
      sharding=...)``.
    """

    def apply(sharding, subtree):
        return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), subtree)

    return jax.tree.map(
        apply,
        shardings_tree,
        shapes_tree,
        is_leaf=lambda x: x is None or isinstance(x, jax.sharding.Sharding),
    )


def _is_train_state(x: Any) -> bool:
    return isinstance(x, TrainState)


def _without_frozen(tree: Any) -> Any:
    """Train states without their frozen weights (LoRA's base model): a run loads those from where they came
    from (the pretrained model), so a checkpoint holds only what trains and its optimizer state."""
    return jax.tree.map(
        lambda x: x.replace(frozen=nnx.State({})) if _is_train_state(x) else x, tree, is_leaf=_is_train_state
    )


def _with_frozen(restored: Any, template: Any) -> Any:
    """Each restored train state gets back the frozen weights of the template's."""
    return jax.tree.map(
        lambda r, t: r.replace(frozen=t.frozen) if _is_train_state(t) else r,
        restored,
        template,
        is_leaf=_is_train_state,
    )


def _restore_template(template: Any) -> Any:
    """Concrete jax arrays -> ShapeDtypeStructs carrying their shardings.

    Other leaves are passed to orbax as given (a numpy template restores as
    numpy, a ShapeDtypeStruct as a jax.Array with its sharding).
    """

    def conv(x):
        if isinstance(x, jax.Array):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
        return x

    return jax.tree.map(conv, template)


# --------------------------------------------------------------------------
# `extra` <-> JSON
# --------------------------------------------------------------------------


def encode_extra(value: Any, _path: str = "extra") -> Any:
    """Makes ``value`` JSON-ready: ``bytes`` -> ``{"__bytes_b64__": "..."}``.

    numpy scalars become Python scalars; tuples become lists (as JSON does
    anyway). Raises ``TypeError`` naming the offending path for anything JSON
    cannot hold, so a bad ``extra`` fails at the ``save`` call rather than in
    orbax's background writer.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {_BYTES_KEY: base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(
                    f"checkpoint extra: dict keys must be str, got {type(k).__name__} key {k!r} at {_path}"
                )
            out[k] = encode_extra(v, f"{_path}[{k!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [encode_extra(v, f"{_path}[{i}]") for i, v in enumerate(value)]
    raise TypeError(
        f"checkpoint extra: value of type {type(value).__name__} at {_path} is not "
        "JSON-serializable (allowed: None, bool, int, float, str, bytes, list, "
        "tuple, dict with str keys)"
    )


def decode_extra(value: Any) -> Any:
    """Inverse of :func:`encode_extra` (lists stay lists)."""
    if isinstance(value, dict):
        if len(value) == 1 and _BYTES_KEY in value:
            return base64.b64decode(value[_BYTES_KEY])
        return {k: decode_extra(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_extra(v) for v in value]
    return value


def _short(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".replace("\n", " ")
    if len(text) > _MAX_ERR_CHARS:
        text = text[:_MAX_ERR_CHARS] + "..."
    return text


# --------------------------------------------------------------------------
# Checkpointer
# --------------------------------------------------------------------------


class Checkpointer:
    """Saves/restores ``(state, extra)`` per step under ``directory``.

    Wraps ``orbax.checkpoint.CheckpointManager`` with two composite items
    (``state`` via ``StandardSave/StandardRestore``, ``extra`` via
    ``JsonSave/JsonRestore``).

    Semantics worth knowing:

    * ``save`` is asynchronous when ``async_save``: it returns once the arrays
      have been copied off the devices (so the caller may donate/overwrite
      ``state`` right away); files are written and the step finalized in the
      background. The next ``save``, ``restore``, ``wait`` or ``close``
      finishes it (and raises if the background write failed).
    * Only the last ``keep`` finalized steps are kept; older ones are deleted
      after each save finalizes.
    * ``save(step)`` for a step ``<=`` the latest saved step, or one not
      matching ``save_interval_steps``, is skipped and returns ``False``
      (orbax's policy; the very first save of an empty directory always
      happens). ``force=True`` bypasses the interval, but re-saving an
      existing step still raises orbax's ``StepAlreadyExistsError``.
    * ``restore(template)`` (``step=None``) resumes from the latest step; a
      step that fails to restore (truncated/garbage/missing files, missing
      commit marker) is logged as a warning and the previous step is tried,
      and so on. Steps newer than the one finally restored are known broken;
      the next ``save`` renames them aside to ``<step>.corrupt-<ns>`` (never
      deletes them) so that their step numbers can be saved again — otherwise
      orbax would silently skip saving any step ``<=`` the broken one.
      Nothing is renamed when every step fails (that is more likely a wrong
      template than universal corruption) or by a process that only reads.
    * Directories of saves that never finished
      (``<step>.orbax-checkpoint-tmp-*``) are not steps: they are ignored
      (and left on disk).

    Not thread-safe; on multi-host jobs every process must make the same calls
    (as with orbax).
    """

    def __init__(
        self,
        directory: str | epath.PathLike,
        *,
        keep: int = 3,
        async_save: bool = True,
        save_interval_steps: int = 1,
    ):
        """Opens (creating if needed) the checkpoint root ``directory``.

        Args:
          directory: root directory; one sub-directory per step. Anything
            ``etils.epath`` understands (local path, ``gs://...``).
          keep: how many most recent steps to keep (>= 1).
          async_save: write checkpoints in a background thread.
          save_interval_steps: ``save`` only writes steps divisible by this
            (unless ``force=True``).
        """
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        if save_interval_steps < 1:
            raise ValueError(f"save_interval_steps must be >= 1, got {save_interval_steps}")
        directory = os.fspath(directory)
        if "://" not in directory:  # orbax/tensorstore need absolute local paths (gs:// stays as is)
            directory = os.path.abspath(directory)
        self._directory = epath.Path(directory)
        self._keep = keep
        self._async = async_save
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=save_interval_steps,
            # `max_to_keep` is deprecated in orbax 0.12 in favour of this.
            preservation_policy=ocp.checkpoint_managers.LatestN(n=keep),
            enable_async_checkpointing=async_save,
            create=True,
            # Cleaning tmp dirs on open could delete a save that another live
            # process (e.g. a previous trainer still shutting down) is writing.
            cleanup_tmp_directories=False,
        )
        # No item_names/handler_registry: orbax resolves the handlers from the
        # arg types (StandardSave/JsonSave...), which is the non-deprecated
        # way; multi-item ("Composite") mode is fixed by our first call.
        self._mngr = ocp.CheckpointManager(self._directory, options=options)
        # Steps found broken by a fallback restore, to rename aside on the
        # next save: {step: short error}.
        self._broken: dict[int, str] = {}
        self._closed = False

    # -- properties / queries ------------------------------------------------

    @property
    def directory(self) -> epath.Path:
        """The checkpoint root directory."""
        return self._directory

    def all_steps(self) -> list[int]:
        """Steps known to the manager, ascending.

        Includes a step whose asynchronous save is still in flight (call
        :meth:`wait` first for only finalized steps).
        """
        return sorted(int(s) for s in self._mngr.all_steps())

    def latest_step(self) -> int | None:
        """The newest step (see :meth:`all_steps`), or ``None`` if there is none."""
        return self._mngr.latest_step()

    # -- save -----------------------------------------------------------------

    def save(self, step: int, state: Any, extra: Any = None, *, force: bool = False) -> bool:
        """Saves ``state`` (pytree of arrays) and ``extra`` (JSON-able) as ``step``.

        Returns ``True`` if a save was started, ``False`` if skipped by the
        save policy (see the class docstring). With ``async_save`` this returns
        before the checkpoint is finalized; :meth:`wait` blocks until it is.

        Raises:
          TypeError: ``extra`` is not JSON-serializable (checked up front).
        """
        self._check_open()
        step = int(step)
        payload = {"format": _EXTRA_FORMAT, "extra": encode_extra(extra)}
        # Fail here, in the caller's thread, not in orbax's background writer.
        json.dumps(payload)
        if self._broken:
            self._quarantine_broken()
        return bool(
            self._mngr.save(
                step,
                args=ocp.args.Composite(
                    **{
                        _STATE: ocp.args.StandardSave(_without_frozen(state)),
                        _EXTRA: ocp.args.JsonSave(payload),
                    }
                ),
                force=force,
            )
        )

    def _quarantine_broken(self) -> None:
        """Renames steps found broken by restore to ``<step>.corrupt-<ns>``."""
        self._mngr.wait_until_finished()
        present = set(self._mngr.all_steps())
        if jax.process_index() == 0:
            for step, why in sorted(self._broken.items()):
                src = self._directory / str(step)
                if step not in present or not src.exists():
                    continue
                dst = self._directory / f"{step}.corrupt-{time.time_ns()}"
                logger.warning(
                    "Checkpoint step %d in %s failed to restore earlier (%s); moving it "
                    "aside to %s so that step %d can be saved again.",
                    step,
                    self._directory,
                    why,
                    dst.name,
                    step,
                )
                src.rename(dst)
        if jax.process_count() > 1:
            ocp.multihost.sync_global_processes("alejax_checkpoint_quarantine")
        self._broken.clear()
        self._mngr.reload()

    # -- restore --------------------------------------------------------------

    def restore(self, template: Any, step: int | None = None):
        """Restores a checkpoint onto the shardings of ``template``.

        Args:
          template: pytree matching the saved state, of
            ``jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(...))``
            (see :func:`abstract_like`, :func:`abstract_with_shardings`) or of
            concrete ``jax.Array``s whose shardings are used. The mesh/layout
            may differ from the one saved with: orbax reshards on read, and
            the restored arrays carry exactly the template's shardings.
          step: the step to restore, or ``None`` for the latest restorable one.

        Returns:
          ``(state, extra, step)``; or ``None`` when ``step`` is ``None`` and
          the directory has no checkpoint at all (a fresh run: nothing to
          resume). ``extra`` is what was passed to ``save`` (``bytes`` restored,
          tuples as lists).

        Raises:
          CheckpointError: the explicit ``step`` is missing or broken; or, with
            ``step=None``, steps exist but none restores (each step tried and
            its error are in the message and in ``.failures``).
        """
        self._check_open()
        # A step whose async save is in flight is already listed; it must be
        # finalized before we try (and possibly judge it broken).
        self._mngr.wait_until_finished()
        # Pick up steps written by other Checkpointer instances / processes.
        self._mngr.reload()
        abstract = _restore_template(_without_frozen(template))
        steps = self.all_steps()

        if step is not None:
            step = int(step)
            if step not in steps:
                raise CheckpointError(
                    f"Checkpoint step {step} not found in {self._directory} (available steps: {steps})",
                    str(self._directory),
                    {},
                )
            try:
                return self._restore_step(abstract, step, template)
            except Exception as e:
                raise CheckpointError(
                    f"Checkpoint step {step} in {self._directory} could not be restored: {_short(e)}",
                    str(self._directory),
                    {step: e},
                ) from e

        if not steps:
            return None
        failures: dict[int, BaseException] = {}
        for s in reversed(steps):
            try:
                result = self._restore_step(abstract, s, template)
            except Exception as e:
                failures[s] = e
                logger.warning(
                    "Checkpoint step %d in %s is unreadable (%s); falling back to the previous step.",
                    s,
                    self._directory,
                    _short(e),
                )
                continue
            for bad, err in failures.items():
                self._broken[bad] = _short(err)
            if failures:
                logger.warning(
                    "Restored checkpoint step %d from %s after skipping broken step(s) %s.",
                    s,
                    self._directory,
                    sorted(failures),
                )
            return result
        tried = "; ".join(f"step {s}: {_short(e)}" for s, e in failures.items())
        raise CheckpointError(
            f"No checkpoint in {self._directory} could be restored. Tried {tried}",
            str(self._directory),
            failures,
        ) from failures[steps[0]]

    def _restore_step(self, abstract: Any, step: int, template: Any):
        step_dir = self._directory / str(step)
        if not (step_dir / _COMMIT_MARKER).exists():
            raise FileNotFoundError(f"{step_dir} has no {_COMMIT_MARKER}: not a finalized orbax checkpoint")
        restored = self._mngr.restore(
            step,
            args=ocp.args.Composite(
                **{
                    _STATE: ocp.args.StandardRestore(abstract),
                    _EXTRA: ocp.args.JsonRestore(),
                }
            ),
        )
        payload = restored[_EXTRA]
        if not isinstance(payload, dict) or payload.get("format") != _EXTRA_FORMAT:
            raise ValueError(
                f"extra item of step {step} is not in {_EXTRA_FORMAT!r} format: {str(payload)[:200]}"
            )
        return _with_frozen(restored[_STATE], template), decode_extra(payload.get("extra")), step

    # -- lifecycle ------------------------------------------------------------

    def wait(self) -> None:
        """Blocks until in-flight asynchronous saves are finalized on disk.

        Re-raises an error from the background write, if any.
        """
        self._mngr.wait_until_finished()

    def close(self) -> None:
        """Finishes pending saves/deletions and releases orbax resources. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._mngr.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"Checkpointer for {self._directory} is closed")

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Checkpointer({str(self._directory)!r}, keep={self._keep}, async_save={self._async})"


def resume(checkpointer: Checkpointer, state: Any, data_iter: Any = None) -> tuple[Any, Any, int]:
    """(state, extra, step): `state` restored from the latest good checkpoint (in `state`'s own layout, any
    pytree) with the data iterator put back where it was, the `extra` saved with it and its step;
    (state, None, 0) on a fresh run. The resume path of every training job (the LM / SFT loop, the rm job,
    the RL job's pipeline)."""
    restored = checkpointer.restore(state)
    if restored is None:
        return state, None, 0
    state, extra, step = restored
    if data_iter is not None and isinstance(extra, dict) and "data_iter" in extra:
        data_iter.set_state(extra["data_iter"])
    print(f"resumed from checkpoint step {step}", flush=True)
    return state, extra, int(step)
