"""The ``fastsae`` command line.

Every analysis subcommand works on one run directory (``--run DIR``, see
:mod:`fastsae.rundir`) and picks up what earlier subcommands wrote there:

    fastsae demo                         corpus -> embed -> train x3 -> encode -> cooc -> families
                                         -> split -> interpret -> figures -> report (runs/demo)
    fastsae embed texts.jsonl --run R    texts -> corpus.jsonl + embeddings.npy
    fastsae train --run R --sizes 512:8,1024:16,1536:32
    fastsae encode / cooc / families / split / interpret / report --run R
    fastsae search "query" --run R [--steer "label=2" ...]
    fastsae bench cooc                   C and D + spanning forest on generated codes

``fastsae train DATA.npy --out DIR`` and ``fastsae sweep`` also work on a bare ``.npy`` file.

Exit status: 0 done; 2 a user error, printed as one line ``fastsae CMD: error: ...`` (see
:func:`main`); ``interpret`` also 3 (a budget stopped it) and 4 (the endpoint kept failing).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


from ..errors import UsageError, check_device, is_user_error, user_message


def _bench_cooc(args: argparse.Namespace) -> int:
    from .bench import bench_cooc

    for name in ("rows", "latents", "k", "families", "children"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.k >= args.latents:
        raise UsageError(f"--k {args.k} must be smaller than --latents {args.latents}")
    if not 0.0 <= args.tau < 1.0:
        raise UsageError(f"--tau must be in [0, 1), got {args.tau}")
    res = bench_cooc(args.rows, args.latents, args.k, n_families=args.families, children_per_family=args.children,
                     tau=args.tau, seed=args.seed, out=args.out)
    s, sec = res.summary, res.summary["seconds"]
    print("fastsae bench cooc: planted feature families -> co-occurrence -> maximum spanning forest")
    print(f"  codes            {args.rows:,} rows, k={args.k}, n={args.latents:,} latents, {args.families} planted families")
    print(f"  C and D          {sec['cooccurrence']:.2f} s ({s['pair_updates']:,} pair-updates, "
          f"{s['ns_per_pair_update_per_core']} ns per pair-update per core, {s['threads']} threads)")
    print(f"  spanning forest  {sec['spanning_forest']:.2f} s, {s['forest_edges']:,} edges after tau={args.tau}")
    print(f"  planted parent->child edges in the forest: {s['planted_edges_in_forest']}/"
          f"{s['planted_parent_child_edges']}; families with >= half their children attached to the parent: "
          f"{s['planted_families_recovered']}")
    if args.out:
        print(f"  written to {args.out}/ (cooc.npz, summary.json)")
    return 0


def _train_kwargs(args: argparse.Namespace) -> dict:
    # None: the option was not given, and TrainConfig's own default applies
    kw = {name: getattr(args, name) for name in ("epochs", "batch_size", "lr") if getattr(args, name) is not None}
    kw.update(seed=args.seed,
              aux_alpha=args.aux_alpha, grad_clip=args.grad_clip, standardize=not args.no_standardize,
              log_every=args.log_every, checkpoint_every=args.checkpoint_every, progress=not args.quiet)
    if args.max_steps:
        kw["max_steps"] = args.max_steps
    if args.device:
        kw["device"] = args.device
    if args.compute_dtype:
        kw["compute_dtype"] = args.compute_dtype
    if args.allow_resume_mismatch:
        kw["resume_mismatch"] = "allow"
    return kw


def parse_sizes(text: str) -> list:
    """``--sizes`` (``N:K[,N:K...]``, latents:active) as :class:`~fastsae.pipeline.SAESpec` s;
    :class:`~fastsae.errors.UsageError` for an empty list, a stray comma, an item that is not
    two positive integers, ``K >= N`` or a size given twice."""
    from .pipeline import SAESpec

    if not text or not text.strip():
        raise UsageError("--sizes is empty; give N:K[,N:K...] (latents:active), e.g. 512:8,1024:16")
    specs, seen = [], set()
    for part in text.split(","):
        item = part.strip()
        fields = item.split(":")
        if not item:
            raise UsageError(f"--sizes {text!r}: an empty item (a stray comma?); give N:K[,N:K...]")
        try:
            if len(fields) != 2:
                raise ValueError
            n, k = int(fields[0]), int(fields[1])
        except ValueError:
            raise UsageError(f"--sizes wants N:K[,N:K...] (latents:active, two integers), got {item!r}") from None
        if n < 1 or k < 1:
            raise UsageError(f"--sizes item {item!r}: N and K must be >= 1")
        if k >= n:
            raise UsageError(f"--sizes item {item!r}: K={k} active latents must be fewer than N={n} latents")
        if (n, k) in seen:
            raise UsageError(f"--sizes lists {n}:{k} twice")
        seen.add((n, k))
        name = f"sae{k}" if f"sae{k}" not in {s.name for s in specs} else f"sae{k}_n{n}"
        specs.append(SAESpec(name, n, k))
    return specs


def _train(args: argparse.Namespace) -> int:
    if (args.n_latents is None) != (args.k is None):
        raise UsageError("--n-latents and --k go together (or use --sizes N:K with --run)")
    if args.run:
        from .pipeline import paper_like_sizes, step_train

        if args.data or args.out:
            raise UsageError("give either --run DIR (train on the run's embeddings) or DATA.npy --out DIR, not both")
        if args.sizes is not None and args.n_latents is not None:
            raise UsageError("give --sizes or --n-latents/--k, not both")
        if args.allow_resume_mismatch:
            raise UsageError("--allow-resume-mismatch applies to DATA.npy; with --run, --restart starts over")
        run = _run(args)
        if args.sizes is not None:
            specs = parse_sizes(args.sizes)
        elif args.n_latents is not None:
            specs = parse_sizes(f"{args.n_latents}:{args.k}")
        else:
            X = run.checked_embeddings()
            specs = paper_like_sizes(X.shape[0], int(X.shape[1]))
        step_train(run, specs, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                   device=args.device, force=args.restart, quiet=args.quiet, compute_dtype=args.compute_dtype)
        print(f"SAEs in {run.root}/saes: {', '.join(run.sae_names())}")
        return 0
    from ..sae.trainer import TrainConfig, train

    if args.sizes is not None:
        raise UsageError("--sizes applies with --run DIR; for DATA.npy give --n-latents N --k K")
    if not args.data or not args.out or args.n_latents is None:
        raise UsageError("give DATA.npy --out DIR --n-latents N --k K, or --run DIR")
    _check_npy_input(args.data)
    out = args.out
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out}: exists and is not a directory")
    cfg = TrainConfig(n_latents=args.n_latents, k=args.k, checkpoint_dir=os.path.join(out, "checkpoints"),
                      resume=not args.restart, **_train_kwargs(args))
    res = train(args.data, cfg)
    res.sae.save(os.path.join(out, "model"))
    last = res.history[-1]
    print(f"trained k={args.k} n={args.n_latents}: {res.steps} steps, nMSE (held out) "
          f"{last.get('nmse_eval', last['nmse']):.4f}, dead {last['dead_fraction']:.3f}")
    print(f"model: {out}/model  metrics: {out}/checkpoints/metrics.jsonl")
    return 0


def _check_npy_input(path: str) -> None:
    """A ``DATA.npy`` argument that exists, is a file and holds a 2-D float array (read from its
    header only), checked before the trainer opens it."""
    from .rundir import open_npy

    open_npy(path, what="DATA")


def _run(args: argparse.Namespace, create: bool = False):
    from .rundir import RunDir

    return RunDir.open(args.run, create=create)


def _encode(args: argparse.Namespace) -> int:
    from .pipeline import step_encode

    run = _run(args)
    step_encode(run, args.sae or None, force=args.force, quiet=args.quiet, device=args.device)
    print(f"codes in {run.root}/codes: {', '.join(sorted(p.name for p in (run.root / 'codes').iterdir()))}")
    return 0


def _cooc(args: argparse.Namespace) -> int:
    from .pipeline import step_cooc

    run = _run(args)
    step_cooc(run, args.sae or None, force=args.force, quiet=args.quiet)
    return 0


def _families(args: argparse.Namespace) -> int:
    from .pipeline import step_families

    run = _run(args)
    step_families(run, sae=args.sae, method=args.method, tau=args.tau, iterations=args.iterations,
                  max_density=args.max_density, force=True, quiet=args.quiet)
    print((run.root / "tables" / "table1.md").read_text())
    print(f"families: {run.families_path}")
    return 0


def _split(args: argparse.Namespace) -> int:
    from .pipeline import step_split

    run = _run(args)
    step_split(run, top=args.top, force=True, quiet=args.quiet)
    print(f"splitting: {run.splitting_path}")
    return 0


def parse_steer(items) -> dict:
    """``--steer FEATURE=WEIGHT`` items as ``{feature id or label text: weight}``;
    :class:`~fastsae.errors.UsageError` for an item without ``=``, an empty feature, a weight
    that is not a finite number, or a feature given twice."""
    import math

    steer: dict = {}
    for item in items or []:
        key, sep, val = item.rpartition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--steer wants FEATURE=WEIGHT (a feature id or label text), got {item!r}")
        try:
            weight = float(val)
        except ValueError:
            raise UsageError(f"--steer {item!r}: the weight {val.strip()!r} is not a number") from None
        if not math.isfinite(weight):
            raise UsageError(f"--steer {item!r}: the weight must be finite")
        feature = int(key) if key.isdigit() else key
        if feature in steer:
            raise UsageError(f"--steer gives feature {key!r} twice")
        steer[feature] = weight
    return steer


def _search(args: argparse.Namespace) -> int:
    from .search import search

    res = search(args.query, _run(args), steer=parse_steer(args.steer), top=args.top, sae=args.sae)
    if args.json:
        print(json.dumps({"query": res.query, "active": [a.__dict__ for a in res.active],
                          "steered": [a.__dict__ for a in res.steered],
                          "hits": [h.__dict__ for h in res.hits]}, indent=2))
        return 0
    print(f"query: {res.query}")
    print("active features:")
    for a in res.active:
        print(f"  {a.feature:6d}  {a.activation:7.3f}  {a.label or ''}")
    if args.steer:
        print("after steering:")
        for a in res.steered:
            print(f"  {a.feature:6d}  {a.activation:7.3f}  {a.label or ''}")
    print("nearest documents:")
    for h in res.hits:
        first = h.text.split("\n")[0][:100]
        print(f"  {h.score:6.3f}  #{h.doc:<6d} {first}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .pipeline import run_demo

    if args.docs < 1:
        raise UsageError(f"--docs must be >= 1, got {args.docs}")
    run_demo(args.run, n_docs=args.docs, seed=args.seed, embed_backend=args.embed_backend, epochs=args.epochs,
             llm=args.llm, base_url=args.base_url, force=args.force, quiet=args.quiet, device=args.device)
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from ..sae.sweeps import sweep

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


def _train_default(name: str):
    """A TrainConfig field's default: the CLI states no default of its own."""
    import dataclasses

    from ..sae.trainer import TrainConfig

    return {f.name: f.default for f in dataclasses.fields(TrainConfig)}[name]


def _defaults(step: str) -> dict:
    """The keyword defaults of a run step (or of ``search``): the CLI states none of its own."""
    import inspect

    from . import pipeline, search

    fn = getattr(search, step) if step == "search" else getattr(pipeline, step)
    return {n: p.default for n, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}


def _add_train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=float, default=None,
                   help=f"passes over the data (default {_train_default('epochs'):g}; with --run: about 3000 steps, "
                        "see default_schedule)")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"examples per step (default {_train_default('batch_size')}; with --run: sized to the corpus)")
    p.add_argument("--lr", type=float, default=None,
                   help=f"Adam learning rate (default {_train_default('lr'):g}; with --run: 1e-3 below 100k documents)")
    p.add_argument("--aux-alpha", type=float, default=_train_default("aux_alpha"),
                   help=f"AuxK weight (default {_train_default('aux_alpha'):g})")
    p.add_argument("--grad-clip", type=float, default=_train_default("grad_clip"),
                   help=f"gradient-norm clip (default {_train_default('grad_clip'):g}; 0 = off)")
    p.add_argument("--no-standardize", action="store_true", help="do not standardise inputs")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    p.add_argument("--log-every", type=int, default=_train_default("log_every"), help="steps between metric records")
    p.add_argument("--checkpoint-every", type=int, default=_train_default("checkpoint_every"),
                   help="steps between checkpoints")
    p.add_argument("--seed", type=int, default=_train_default("seed"))
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--compute-dtype", choices=["bfloat16"], default=None,
                   help="mixed precision: encode and decode in bf16, parameters and optimiser in fp32 (GPU fast path)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--allow-resume-mismatch", action="store_true",
                   help="continue checkpoints written with other settings or data (default: refuse, naming them)")


def _add_run(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--run", required=required, default=None, help="run directory (see `fastsae demo`)")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="fastsae", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    sub = ap.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="the whole pipeline on the built-in corpus, ending in a browsable report")
    demo = _defaults("run_demo")
    d.add_argument("--run", default=demo["root"], help=f"run directory (default {demo['root']}; reruns continue it)")
    d.add_argument("--docs", type=int, default=demo["n_docs"],
                   help=f"documents in the generated corpus (default {demo['n_docs']})")
    d.add_argument("--seed", type=int, default=demo["seed"])
    d.add_argument("--embed-backend", choices=["local", "tfidf", "openai"], default=None,
                   help="text embedder (default: local all-MiniLM-L6-v2 when installed, else tfidf)")
    d.add_argument("--epochs", type=float, default=None, help="training epochs per SAE (default: sized to the corpus)")
    d.add_argument("--llm", action="store_true",
                   help="label features with an LLM (OPENAI_API_KEY / OPENAI_BASE_URL) instead of keywords")
    d.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint for --llm / --embed-backend openai")
    d.add_argument("--device", default=None, help="train and encode on cpu, cuda or cuda:N (default: cuda when available)")
    d.add_argument("--force", action="store_true", help="recompute every step")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=_demo)

    try:
        from .embed_cli import add_parser as add_embed
    except ImportError:  # pragma: no cover - the module ships with the package
        add_embed = None
    if add_embed is not None:
        add_embed(sub)

    t = sub.add_parser("train", help="train top-k SAEs: on a run's embeddings (--run) or on a .npy file (resumable)")
    t.add_argument("data", nargs="?", default=None, help="[N, d] float .npy file (memory-mapped, never loaded whole)")
    t.add_argument("--run", default=None, help="train on this run directory's embeddings.npy")
    t.add_argument("--sizes", default=None,
                   help="with --run: SAEs as N:K[,N:K...] (default: three paper-like sizes scaled to the corpus)")
    t.add_argument("--n-latents", type=int, default=None, help="number of latents n")
    t.add_argument("--k", type=int, default=None, help="active latents per example")
    t.add_argument("--out", default=None, help="output directory for DATA.npy (model/, checkpoints/)")
    t.add_argument("--restart", action="store_true", help="ignore existing checkpoints")
    _add_train_options(t)
    t.set_defaults(func=_train)

    s = sub.add_parser("sweep", help="train a (k, n) grid; write Table 2, scaling-law fits and figures")
    s.add_argument("data", help="[N, d] float .npy file")
    s.add_argument("--k", type=int, nargs="+", required=True, help="values of k")
    s.add_argument("--n", type=int, nargs="+", required=True, help="values of n (latents)")
    s.add_argument("--out", required=True, help="sweep directory (one folder per run; reruns resume)")
    _add_train_options(s)
    s.set_defaults(func=_sweep)

    e = sub.add_parser("encode", help="top-k codes of every document under each SAE of a run")
    _add_run(e)
    e.add_argument("--sae", nargs="*", help="SAE names (default: all)")
    e.add_argument("--force", action="store_true", help="recompute existing codes")
    e.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cpu)")
    e.set_defaults(func=_encode)

    c = sub.add_parser("cooc", help="co-occurrence C and activation similarity D (native, exact)")
    _add_run(c)
    c.add_argument("--sae", nargs="*", help="SAE names (default: all)")
    c.add_argument("--force", action="store_true", help="recompute")
    c.set_defaults(func=_cooc)

    f = sub.add_parser("families", help="feature families (paper or precise method), Table 1, Figs. 2/14/16")
    _add_run(f)
    f.add_argument("--sae", default=None, help="SAE to analyse (default: the run's main SAE)")
    fam = _defaults("step_families")
    f.add_argument("--method", choices=["paper", "precise"], default=fam["method"])
    f.add_argument("--tau", type=float, default=fam["tau"],
                   help=f"threshold on normalised co-occurrence (default {fam['tau']}, the paper's)")
    f.add_argument("--iterations", type=int, default=fam["iterations"],
                   help=f"passes after the first (default {fam['iterations']}, the paper's)")
    f.add_argument("--max-density", type=float, default=fam["max_density"],
                   help=f"leave out denser features (default {fam['max_density']}, the authors')")
    f.set_defaults(func=_families)

    sp = sub.add_parser("split", help="feature splitting across the run's SAE sizes (Figs. 6, 13)")
    _add_run(sp)
    sp.add_argument("--top", type=int, default=_defaults("step_split")["top"], help="nearest neighbours kept per feature")
    sp.set_defaults(func=_split)

    from . import interpret_cli, report_cli

    interpret_cli.add_parser(sub)
    report_cli.add_parser(sub)

    q = sub.add_parser("search", help="feature search and steering over a run's corpus")
    q.add_argument("query", help="query text")
    _add_run(q)
    q.add_argument("--steer", action="append", metavar="FEATURE=WEIGHT",
                   help="scale an active feature or add one (id or label text), repeatable")
    q.add_argument("--top", type=int, default=_defaults("search")["top"], help="documents to show")
    q.add_argument("--sae", default=None, help="SAE (default: the run's main SAE)")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=_search)

    b = sub.add_parser("bench", help="quick built-in benchmarks (the full suite lives in benchmarks/)")
    bsub = b.add_subparsers(dest="bench", required=True)
    bc = bsub.add_parser("cooc", help="C and D + spanning forest on generated codes with planted families")
    bc.add_argument("--rows", type=int, default=200_000, help="number of generated documents (default 200000)")
    bc.add_argument("--latents", type=int, default=4096, help="SAE latents n (default 4096)")
    bc.add_argument("--k", type=int, default=32, help="active latents per row (default 32)")
    bc.add_argument("--families", type=int, default=20, help="planted families (default 20)")
    bc.add_argument("--children", type=int, default=6, help="children per planted family (default 6)")
    bc.add_argument("--tau", type=float, default=0.1, help="threshold on the normalised co-occurrence (paper: 0.1)")
    bc.add_argument("--seed", type=int, default=0)
    bc.add_argument("--out", default="", help="write cooc.npz and summary.json here")
    bc.set_defaults(func=_bench_cooc)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run one ``fastsae`` command; returns its exit status.

    The one place that turns user errors into one line on stderr and exit status 2: argument
    errors (:class:`_Parser`), ``--device`` checked against the machine before any work
    (:func:`fastsae.errors.check_device`), and whatever a command raises that
    :func:`fastsae.errors.is_user_error` calls a user error: :class:`~fastsae.errors.UsageError`,
    the package's own ``ValueError``/``TypeError``/``FileNotFoundError`` validation, a file the
    operating system refuses. An exception raised inside a dependency, or of another type, is a
    bug and keeps its traceback (``FASTSAE_DEBUG=1`` shows the traceback of user errors too).
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or an argument error already printed as one line (2)
        return e.code if isinstance(e.code, int) else 2
    try:
        if getattr(args, "device", None) is not None:
            args.device = check_device(args.device)
        return args.func(args)
    except KeyboardInterrupt:
        print(f"fastsae {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if not is_user_error(e) or os.environ.get("FASTSAE_DEBUG"):
            raise
        print(f"fastsae {args.command}: error: {user_message(e)}", file=sys.stderr)
        return 2


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (argparse prints the whole usage block first): the line
    names the problem and points at ``--help``. Subcommand parsers inherit the class."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see `{self.prog} --help`)\n")


if __name__ == "__main__":
    sys.exit(main())
