"""python -m serving: run a server, or manage the deployments of a running one over HTTP.

    python -m serving run [options]                 (serving.run: start the server)
    python -m serving deploy NAME PATH [--max-instances 2 ...]
    python -m serving delete NAME
    python -m serving status

deploy, delete and status need only the standard library. --url (default
http://127.0.0.1:8343) names the server; --api-key (or env BAS_API_KEY) its key.
Exit status: 0 done, 1 the server refused (its message is printed), 2 bad usage, 3 no
server answers at --url.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys

from serving.client import Client, ServerError, Unreachable

DEFAULT_URL = "http://127.0.0.1:8343"
EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["run"]:
        return _run(argv[1:])
    args = _parser().parse_args(argv)
    client = Client(args.url, api_key=args.api_key or os.environ.get("BAS_API_KEY") or None,
                    timeout=args.timeout)
    try:
        if args.command == "deploy":
            spec = {key: getattr(args, key) for key in _SPEC}
            answer = client.deploy(args.name, _server_path(args.path), **spec)
            print(f"deployed {args.name}")
        elif args.command == "delete":
            answer = client.delete(args.name)
            print(f"deleted {args.name}")
            return 0
        else:
            answer = client.status()
        print(json.dumps(answer, indent=2, sort_keys=True))
        return 0
    except ServerError as exc:
        print(f"error: the server refused ({exc.status}): {exc.message}", file=sys.stderr)
        return EXIT_REFUSED
    except Unreachable as exc:
        print(f"error: {exc}; is the server running? (python -m serving run)",
              file=sys.stderr)
        return EXIT_UNREACHABLE


# deploy's options: name -> (type, help)
_SPEC = {
    "min_instances": (int, "instances kept loaded even when idle (default 0)"),
    "max_instances": (int, "most instances at a time"),
    "target_concurrency": (int, "requests one instance serves at a time before another starts"),
    "keep_alive": (float, "seconds an idle instance stays loaded"),
    "max_prompt_tokens": (int, "longest prompt accepted (default: the model's context)"),
    "max_tokens": (int, "most tokens one request may generate"),
    "queue_limit": (int, "requests that may wait; more get 429"),
}


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=DEFAULT_URL, help=f"the server (default {DEFAULT_URL})")
    common.add_argument("--api-key", default=None, help="the server's API key (env BAS_API_KEY)")
    common.add_argument("--timeout", type=float, default=600.0,
                        help="seconds to wait for the answer (a deploy may load a model)")
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("run", help="start the server (serving.run; see run --help)")
    deploy = commands.add_parser("deploy", parents=[common], help="deploy a model")
    deploy.add_argument("name")
    deploy.add_argument("path", help="the model's directory or checkpoint, as the server sees it")
    for key, (kind, text) in _SPEC.items():
        deploy.add_argument("--" + key.replace("_", "-"), type=kind, default=None, help=text,
                            metavar="SECONDS" if kind is float else "N")
    delete = commands.add_parser("delete", parents=[common], help="delete a deployment")
    delete.add_argument("name")
    commands.add_parser("status", parents=[common], help="the server's deployments and workers")
    return parser


def _server_path(path: str) -> str:
    """A local path made absolute (the server's working directory is not ours); a URL, or a
    path that exists only on the server, as given."""
    if "://" not in path and os.path.exists(path):
        return os.path.abspath(path)
    return path


def _run(argv: list[str]) -> int:
    if importlib.util.find_spec("serving.run") is None:
        print("error: serving.run is not part of this installation", file=sys.stderr)
        return EXIT_USAGE
    from serving.run import main as run_main

    result = run_main(argv)
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
