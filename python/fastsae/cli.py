"""The ``fastsae`` command line: ``demo``, ``train``, ``sweep``.

``fastsae demo`` runs the main job on built-in generated data: top-k codes with planted
feature families -> co-occurrence C and activation similarity D (native) -> the paper's
frequency normalisation and threshold -> maximum spanning forest -> edges directed from the
denser to the sparser feature, and reports how much of the planted hierarchy the forest holds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def _demo(args: argparse.Namespace) -> int:
    from . import _native, cooccurrence, maximum_spanning_forest, threshold
    from .cooc import normalize_frequency
    from .synthetic import planted_hierarchy_codes

    t0 = time.perf_counter()
    data = planted_hierarchy_codes(
        args.rows,
        args.latents,
        args.k,
        n_families=args.families,
        children_per_family=args.children,
        seed=args.seed,
    )
    t_gen = time.perf_counter() - t0

    t0 = time.perf_counter()
    cooc = cooccurrence(data.indices, data.values, args.latents)
    t_cooc = time.perf_counter() - t0
    active = np.count_nonzero(data.values > 0, axis=1).astype(np.int64)
    n_pairs = int((active * (active - 1) // 2).sum())

    t0 = time.perf_counter()
    weights = threshold(normalize_frequency(cooc), args.tau)
    forest = maximum_spanning_forest(weights)
    t_msf = time.perf_counter() - t0

    # Direct each forest edge from the denser feature to the sparser one (paper, section 4.2).
    u, v = forest.edges[:, 0], forest.edges[:, 1]
    denser_u = cooc.freq[u] >= cooc.freq[v]
    parent = np.where(denser_u, u, v)
    child = np.where(denser_u, v, u)
    directed = set(zip(parent.tolist(), child.tolist()))
    planted = {(int(p), int(c)) for p, cs in zip(data.parents, data.children) for c in cs}
    found = len(planted & directed)
    fam_recovered = sum(
        1 for p, cs in zip(data.parents, data.children) if sum((int(p), int(c)) in directed for c in cs) * 2 >= len(cs)
    )

    summary = {
        "rows": args.rows,
        "n_latents": args.latents,
        "k": args.k,
        "threads": _native.max_threads(),
        "seconds": {"generate": round(t_gen, 3), "cooccurrence": round(t_cooc, 3), "spanning_forest": round(t_msf, 3)},
        "pair_updates": n_pairs,
        "ns_per_pair_update_per_core": round(t_cooc * _native.max_threads() / max(n_pairs, 1) * 1e9, 3),
        "forest_edges": int(len(forest.edges)),
        "planted_parent_child_edges": len(planted),
        "planted_edges_in_forest": found,
        "planted_families_recovered": f"{fam_recovered}/{len(data.parents)}",
    }
    print("fastsae demo: planted feature families -> co-occurrence -> maximum spanning forest")
    print(f"  codes            {args.rows:,} rows, k={args.k}, n={args.latents:,} latents, {args.families} planted families")
    print(f"  C and D          {t_cooc:.2f} s ({n_pairs:,} pair-updates, "
          f"{summary['ns_per_pair_update_per_core']} ns per pair-update per core, {summary['threads']} threads)")
    print(f"  spanning forest  {t_msf:.2f} s, {len(forest.edges):,} edges after tau={args.tau}")
    print(f"  planted parent->child edges in the forest: {found}/{len(planted)}; "
          f"families with >= half their children attached to the parent: {fam_recovered}/{len(data.parents)}")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        cooc.save(os.path.join(args.out, "cooc.npz"))
        with open(os.path.join(args.out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        print(f"  written to {args.out}/ (cooc.npz, summary.json)")
    return 0


def _train_kwargs(args: argparse.Namespace) -> dict:
    kw = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
              aux_alpha=args.aux_alpha, grad_clip=args.grad_clip, standardize=not args.no_standardize,
              log_every=args.log_every, checkpoint_every=args.checkpoint_every, progress=not args.quiet)
    if args.max_steps:
        kw["max_steps"] = args.max_steps
    if args.device:
        kw["device"] = args.device
    return kw


def _train(args: argparse.Namespace) -> int:
    from .trainer import TrainConfig, train

    out = args.out
    cfg = TrainConfig(n_latents=args.n_latents, k=args.k, checkpoint_dir=os.path.join(out, "checkpoints"),
                      resume=not args.restart, **_train_kwargs(args))
    res = train(args.data, cfg)
    res.sae.save(os.path.join(out, "model"))
    last = res.history[-1]
    print(f"trained k={args.k} n={args.n_latents}: {res.steps} steps, nMSE (held out) "
          f"{last.get('nmse_eval', last['nmse']):.4f}, dead {last['dead_fraction']:.3f}")
    print(f"model: {out}/model  metrics: {out}/checkpoints/metrics.jsonl")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from .sweeps import sweep

    res = sweep(args.data, args.k, args.n, args.out, **_train_kwargs(args))
    with open(res.files["table2.md"]) as f:
        print(f.read())
    for k, fit in sorted(res.fits_n.items()):
        lo, hi = fit.exponent_ci
        print(f"k={k}: {fit.formula('n')}  R2={fit.r2:.3f}  exponent 95% CI [{lo:.3f}, {hi:.3f}]")
    for k, fit in sorted(res.fits_flops.items()):
        print(f"k={k}: {fit.formula('C')}  R2={fit.r2:.3f}")
    print("written: " + ", ".join(sorted(res.files.values())))
    return 0


def _add_train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=float, default=1.0, help="passes over the data (default 1)")
    p.add_argument("--batch-size", type=int, default=1024, help="examples per step (default 1024)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4)")
    p.add_argument("--aux-alpha", type=float, default=1 / 32, help="AuxK weight (default 1/32)")
    p.add_argument("--grad-clip", type=float, default=1.0, help="gradient-norm clip (default 1; 0 = off)")
    p.add_argument("--no-standardize", action="store_true", help="do not standardise inputs")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    p.add_argument("--log-every", type=int, default=50, help="steps between metric records")
    p.add_argument("--checkpoint-every", type=int, default=1000, help="steps between checkpoints")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="fastsae", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="run the pipeline on built-in generated data and print a summary")
    d.add_argument("--rows", type=int, default=200_000, help="number of generated documents (default 200000)")
    d.add_argument("--latents", type=int, default=4096, help="SAE latents n (default 4096)")
    d.add_argument("--k", type=int, default=32, help="active latents per row (default 32)")
    d.add_argument("--families", type=int, default=20, help="planted families (default 20)")
    d.add_argument("--children", type=int, default=6, help="children per planted family (default 6)")
    d.add_argument("--tau", type=float, default=0.1, help="threshold on the normalised co-occurrence (paper: 0.1)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", default="runs/demo", help="run directory (default runs/demo; '' to skip writing)")
    d.set_defaults(func=_demo)

    t = sub.add_parser("train", help="train one top-k SAE on a .npy file of embeddings (resumable)")
    t.add_argument("data", help="[N, d] float .npy file (memory-mapped, never loaded whole)")
    t.add_argument("--n-latents", type=int, required=True, help="number of latents n")
    t.add_argument("--k", type=int, required=True, help="active latents per example")
    t.add_argument("--out", required=True, help="run directory (model/, checkpoints/, metrics.jsonl)")
    t.add_argument("--restart", action="store_true", help="ignore existing checkpoints in --out")
    _add_train_options(t)
    t.set_defaults(func=_train)

    s = sub.add_parser("sweep", help="train a (k, n) grid; write Table 2, scaling-law fits and figures")
    s.add_argument("data", help="[N, d] float .npy file")
    s.add_argument("--k", type=int, nargs="+", required=True, help="values of k")
    s.add_argument("--n", type=int, nargs="+", required=True, help="values of n (latents)")
    s.add_argument("--out", required=True, help="sweep directory (one folder per run; reruns resume)")
    _add_train_options(s)
    s.set_defaults(func=_sweep)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
