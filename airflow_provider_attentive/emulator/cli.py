"""``attentive-emulator`` console script: run the emulator as a standalone process."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from .control import CONTROL_PREFIX, CONTROL_ROUTES
from .endpoints import API_ROUTES, ENDPOINT_NAMES
from .faults import FaultConfig
from .jobs import JobSettings
from .keys import ALL_SCOPES, KeySpec, mask_api_key
from .limits import DEFAULT_LIMITS, validate_limits
from .server import EmulatorServer

__all__ = ["KEYS_ENV", "build_parser", "main"]

KEYS_ENV = "ATTENTIVE_EMULATOR_KEYS"


def _parse_key(value: str, company_name: str) -> tuple[str, KeySpec]:
    # "key" -> all scopes, "key:" -> no scopes, "key:a,b" -> those scopes.
    key, sep, scopes = value.partition(":")
    if not key:
        raise argparse.ArgumentTypeError("--key needs a non-empty key before ':'")
    scope_list = [s.strip() for s in scopes.split(",") if s.strip()] if sep else list(ALL_SCOPES)
    return key, KeySpec(scopes=scope_list, company_name=company_name)


def _parse_pair(value: str, what: str) -> tuple[str, str]:
    name, sep, rest = value.partition("=")
    if not sep or not name or not rest:
        raise argparse.ArgumentTypeError(f"{what} must look like NAME=VALUE, got {value!r}")
    return name, rest


def _epilog() -> str:
    api = [f"  {r.method:<6} {r.path:<44} {r.name}" for r in API_ROUTES.by_name.values()]
    control = [f"  {r.method:<6} {CONTROL_PREFIX + r.path:<44} {r.description}" for r in CONTROL_ROUTES]
    return "\n".join(["API endpoints (method, path, name):", *api, "", "control and inspection routes:", *control])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="attentive-emulator",
        description="Local emulator of the Attentive REST API: v1 (attributes, events, subscriptions) and "
        "v2 (bulk attribute jobs, segments).",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765, help="0 picks a free port (printed on start)")
    p.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="KEY[:SCOPE,SCOPE]",
        help="API key to accept (repeatable). Without ':' the key gets all scopes. "
        f"Keys can also come from ${KEYS_ENV} as JSON {{key: {{scopes, company_name, v2_access}}}}. "
        "Default: test-key with all scopes.",
    )
    p.add_argument("--company-name", default="Emulated Co", help="companyName returned by /v1/me")
    p.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="ENDPOINT=N",
        help=f"requests per second per key (repeatable; '*' = all). Endpoints: {', '.join(ENDPOINT_NAMES)}",
    )
    p.add_argument(
        "--sign-up-source",
        action="append",
        default=[],
        metavar="ID=TYPE",
        help="map a signUpSourceId to MARKETING/TRANSACTIONAL/CHECKOUT_ABANDONED (default: MARKETING)",
    )
    faults = p.add_argument_group("fault injection (applies to API calls, never to control routes)")
    faults.add_argument("--latency-ms", type=float, default=0.0)
    faults.add_argument("--jitter-ms", type=float, default=0.0)
    faults.add_argument("--error-rate", type=float, default=0.0)
    faults.add_argument("--drop-rate", type=float, default=0.0)
    faults.add_argument("--drop-after-apply-rate", type=float, default=0.0)
    faults.add_argument("--hang-rate", type=float, default=0.0)
    faults.add_argument("--hang-s", type=float, default=30.0)
    faults.add_argument("--non-json-rate", type=float, default=0.0)
    faults.add_argument(
        "--apply-then-5xx-rate", type=float, default=0.0, help="share of requests applied, then answered 504"
    )
    faults.add_argument("--fault-endpoints", default=None, help="comma-separated endpoint names")
    faults.add_argument("--seed", type=int, default=None)
    jobs = p.add_argument_group("v2 bulk jobs")
    jobs.add_argument("--job-delay-s", type=float, default=JobSettings.delay_s, help="seconds until a job completes")
    jobs.add_argument("--job-pending-s", type=float, default=JobSettings.pending_s, help="seconds a job is PENDING")
    jobs.add_argument(
        "--hold-jobs", action="store_true", help="keep jobs IN_PROGRESS until POST /_emulator/jobs/release"
    )
    jobs.add_argument("--job-fail-rate", type=float, default=0.0, help="share of jobs that end FAILED")
    jobs.add_argument("--results-drop-rate", type=float, default=0.0, help="share of results lines left out")
    jobs.add_argument("--results-garble-rate", type=float, default=0.0, help="share of results lines cut (not JSON)")
    p.add_argument("--log-requests", action="store_true", help="log every API request to stderr")
    return p


def _config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    keys: dict[str, KeySpec] = {}
    for value in args.key:
        try:
            key, spec = _parse_key(value, args.company_name)
        except argparse.ArgumentTypeError as exc:
            parser.error(str(exc))
        keys[key] = spec
    env_keys = os.environ.get(KEYS_ENV)
    if env_keys:
        try:
            for key, spec in json.loads(env_keys).items():
                keys[key] = KeySpec(
                    scopes=spec.get("scopes", ALL_SCOPES),
                    company_name=spec.get("company_name", args.company_name),
                    application_name=spec.get("application_name", "Attentive Emulator"),
                    v2_access=bool(spec.get("v2_access", True)),
                )
        except (ValueError, AttributeError, TypeError) as exc:
            parser.error(f"${KEYS_ENV} must be JSON {{key: {{scopes, company_name}}}}: {exc}")
    if not keys:
        keys["test-key"] = KeySpec(scopes=ALL_SCOPES, company_name=args.company_name)
    try:
        limits = {}
        for value in args.limit:
            name, n = _parse_pair(value, "--limit")
            limits[name] = int(n)
        limits = validate_limits(limits, DEFAULT_LIMITS)
        sources = dict(_parse_pair(v, "--sign-up-source") for v in args.sign_up_source)
        faults = FaultConfig.from_mapping(
            {
                "latency_ms": args.latency_ms,
                "jitter_ms": args.jitter_ms,
                "error_rate": args.error_rate,
                "drop_rate": args.drop_rate,
                "drop_after_apply_rate": args.drop_after_apply_rate,
                "hang_rate": args.hang_rate,
                "hang_s": args.hang_s,
                "non_json_rate": args.non_json_rate,
                "apply_then_5xx_rate": args.apply_then_5xx_rate,
                "endpoints": args.fault_endpoints.split(",") if args.fault_endpoints else None,
                "seed": args.seed,
            }
        )
        jobs = JobSettings.from_mapping(
            {
                "delay_s": args.job_delay_s,
                "pending_s": args.job_pending_s,
                "hold": args.hold_jobs,
                "fail_rate": args.job_fail_rate,
                "drop_line_rate": args.results_drop_rate,
                "garble_line_rate": args.results_garble_rate,
            }
        )
    except (ValueError, argparse.ArgumentTypeError) as exc:
        parser.error(str(exc))
    return {"keys": keys, "limits": limits, "sign_up_sources": sources, "faults": faults, "jobs": jobs}


async def _serve(args: argparse.Namespace, config: dict[str, Any]) -> int:
    server = EmulatorServer(log_requests=args.log_requests, **config)
    await server.start(args.host, args.port)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    keys = ", ".join(mask_api_key(k) for k in config["keys"])
    # Exactly one line on stdout: Emulator.spawn and scripts parse the URL out of it.
    print(f"attentive-emulator listening on {server.url}", flush=True)
    print(f"attentive-emulator keys: {keys}", file=sys.stderr, flush=True)
    await stop.wait()
    await server.close()
    print("attentive-emulator stopped", file=sys.stderr, flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``attentive-emulator`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = _config(args, parser)
    try:
        return asyncio.run(_serve(args, config))
    except OSError as exc:
        print(f"attentive-emulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
