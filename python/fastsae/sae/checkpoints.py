"""Training checkpoints: one folder per saved step, written atomically, and the choice of
which folder a resumed run continues from (see :attr:`fastsae.TrainConfig.resume`).

``checkpoint_dir/step-000123/{config.json, sae.safetensors, trainer.pt}`` is written to a
temporary folder ``.tmp-step-000123-<pid>`` and renamed, then ``checkpoint_dir/latest`` (one
line) is replaced atomically. The trainer owns what goes into ``trainer.pt``; this module owns
the files.
"""

from __future__ import annotations

import os
import re
import shutil
import warnings

import torch

from ..io import atomic_write_text
from .model import TopKSAE

_STEP_DIR = re.compile(r"step-(\d{9})")
_TMP_DIR = re.compile(r"\.tmp-step-\d{9}-(\d+)")
_STATE_KEYS = ("step", "optimizer", "mse_scale", "since_fired", "torch_rng", "history")


def save_checkpoint(ckpt_dir: str, sae: TopKSAE, opt: torch.optim.Optimizer, state: dict, *,
                     drop_later: bool = False) -> None:
    """Write the checkpoint of ``state["step"]``, point ``latest`` at it, and keep it and the
    newest earlier one. Folders of later steps are kept (a run resumed from an earlier
    checkpoint rewrites them) unless ``drop_later``: a run that did not resume owns the
    directory, and later folders are an earlier run's, which must not be resumed into it."""
    step = int(state["step"])
    name = f"step-{step:09d}"
    final = os.path.join(ckpt_dir, name)
    tmp = os.path.join(ckpt_dir, f".tmp-{name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        sae.save(tmp)
        torch.save({"optimizer": opt.state_dict(), **state}, os.path.join(tmp, "trainer.pt"))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # an error here; a kill is cleaned up at the next start
        raise
    atomic_write_text(os.path.join(ckpt_dir, "latest"), name + "\n")
    others = sorted(d for d in os.listdir(ckpt_dir) if _STEP_DIR.fullmatch(d) and d != name)
    older = [d for d in others if int(d[5:]) < step]
    for old in older[:-1] + ([d for d in others if int(d[5:]) > step] if drop_later else []):
        shutil.rmtree(os.path.join(ckpt_dir, old), ignore_errors=True)


def remove_stale_temporaries(ckpt_dir: str) -> None:
    """Remove the ``.tmp-step-*-<pid>`` folders a killed checkpoint writer left behind.

    A folder whose pid is this process or another live process on this machine is left alone
    (that process may be writing it; two runs sharing one checkpoint_dir are not supported, but
    this one must not break the other's write). A dead writer's pid reused by an unrelated
    process only delays the removal to a later start."""
    for d in os.listdir(ckpt_dir):
        m = _TMP_DIR.fullmatch(d)
        if m and not pid_alive(int(m.group(1))):
            shutil.rmtree(os.path.join(ckpt_dir, d), ignore_errors=True)


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except (OverflowError, OSError):
        return False
    return True


def read_checkpoint(path: str) -> tuple[TopKSAE, dict]:
    """The model and trainer state of a step folder (on the CPU), or a ValueError naming the
    file that makes it incomplete or damaged."""
    for f in ("config.json", "sae.safetensors", "trainer.pt"):
        if not os.path.isfile(os.path.join(path, f)):
            raise ValueError(f"{path}: incomplete checkpoint ({f} is missing)")
    sae = TopKSAE.load(path)
    tp = os.path.join(path, "trainer.pt")
    try:
        # On the CPU: torch.set_rng_state takes a CPU tensor, the optimiser moves its own state.
        state = torch.load(tp, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable state is a corrupt checkpoint
        raise ValueError(f"{tp}: corrupt trainer state ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or any(k not in state for k in _STATE_KEYS):
        have = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{tp}: corrupt trainer state (expected keys {list(_STATE_KEYS)}, got {have})")
    m = _STEP_DIR.fullmatch(os.path.basename(os.path.normpath(path)))
    if m and int(m.group(1)) != state["step"]:
        raise ValueError(f"{tp}: corrupt trainer state (step {state['step']!r} in a folder of step {int(m.group(1))})")
    return sae, state


def load_checkpoint(ckpt_dir: str) -> tuple[TopKSAE, dict, str] | None:
    """``(sae, state, folder)`` to resume from, or None when checkpoint_dir holds no checkpoint
    (see :attr:`TrainConfig.resume` for the choice)."""
    steps = sorted((d for d in os.listdir(ckpt_dir) if _STEP_DIR.fullmatch(d)), reverse=True)
    latest = os.path.join(ckpt_dir, "latest")
    problems: list[str] = []
    named = None
    if os.path.exists(latest):
        try:
            with open(latest, encoding="utf-8") as f:
                name = f.read().strip()
        except (OSError, UnicodeDecodeError) as e:
            problems.append(f"{latest} is unreadable ({type(e).__name__}: {e})")
        else:
            if not _STEP_DIR.fullmatch(name):
                problems.append(f"{latest} names {name[:100]!r}, not a step folder")
            else:
                named = name
                path = os.path.join(ckpt_dir, name)
                try:
                    return (*read_checkpoint(path), path)
                except ValueError as e:
                    problems.append(str(e))
    elif not steps:
        return None
    else:
        problems.append(f"{latest} is missing")
    for name in steps:
        if name == named:
            continue
        path = os.path.join(ckpt_dir, name)
        try:
            sae, state = read_checkpoint(path)
        except ValueError as e:
            problems.append(str(e))
            continue
        warnings.warn(f"resuming from {path}, the newest complete checkpoint: {'; '.join(problems)}", stacklevel=3)
        return sae, state, path
    raise ValueError(f"{ckpt_dir}: no complete checkpoint to resume from ({'; '.join(problems)}); "
                     "remove the step folders, or set resume=False (fastsae train --restart) to start over")
