"""``fastsae report``: build the static HTML explorer of a run directory.

Wired into the main command line by ``fastsae.cli`` through :func:`add_parser`::

    fastsae report --run DIR [--top-docs N] [--max-features N] [--out PATH] [--open]
"""

from __future__ import annotations

import argparse
import os
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``report`` subcommand on an ``argparse`` subparsers object; its handler
    (``args.func``) returns the exit code."""
    p = subparsers.add_parser(
        "report",
        help="write RUN/report/index.html, a static explorer of features, families and figures",
        description="Write RUN/report/index.html: a static explorer (opens from disk, no server) of the "
                    "features, their top documents, families, splitting across sizes and the run's figures.")
    p.add_argument("--run", required=True, help="run directory")
    import inspect

    from ..report import build_report

    top_docs = inspect.signature(build_report).parameters["top_docs"].default  # not restated here
    p.add_argument("--top-docs", type=int, default=top_docs, help=f"top documents shown per feature (default {top_docs})")
    p.add_argument("--max-features", type=int, default=None,
                   help="details only for the N most active features (default: all)")
    p.add_argument("--out", default=None, help="output .html file or directory (default RUN/report/index.html)")
    p.add_argument("--open", action="store_true", help="open the report in a web browser")
    p.set_defaults(func=run_report)
    return p


def run_report(args: argparse.Namespace) -> int:
    from ..report import build_report

    try:
        path = build_report(args.run, out=args.out, top_docs=args.top_docs, max_features=args.max_features)
    except Exception as e:  # the CLI's one rule for what is a user error (fastsae.errors)
        from ..errors import is_user_error, user_message

        if not is_user_error(e) or os.environ.get("FASTSAE_DEBUG"):
            raise
        print(f"fastsae report: error: {user_message(e)}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    if args.open:
        import webbrowser

        if not webbrowser.open(path.resolve().as_uri()):
            print(f"could not start a browser; open {path.resolve().as_uri()}", file=sys.stderr)
    return 0
