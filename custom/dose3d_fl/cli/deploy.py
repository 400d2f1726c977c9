"""The deployment commands of ``dose3d``: ``poc up``, ``poc submit``, ``poc status``, ``poc down`` and ``provision``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from dose3d_fl.cli.common import fail, patient_counts

if TYPE_CHECKING:
    from dose3d_fl.deploy.poc import PocConfig


def _poc_config(args: argparse.Namespace) -> PocConfig:
    from dose3d_fl.deploy.poc import PocConfig, site_names

    sites = site_names(args.sites) if getattr(args, "sites", None) else PocConfig().sites
    patients = tuple(args.patients) if getattr(args, "patients", None) else None
    return PocConfig(
        root=args.root,
        sites=sites,
        port=getattr(args, "port", 8002),
        patients=patients,
        seed=getattr(args, "seed", 0),
    )


def _cmd_poc_up(args: argparse.Namespace) -> int:
    from dose3d_fl.deploy.poc import PROJECT_ADMIN, PocError, poc_up

    config = _poc_config(args)
    try:
        kits = poc_up(config, on_progress=print)
    except (PocError, ValueError, FileNotFoundError) as err:
        return fail(str(err))
    print(f"POC running: server localhost:{kits.fed_learn_port}, clients {', '.join(kits.clients)}")
    print(f"admin console: {kits.admins[PROJECT_ADMIN] / 'startup' / 'fl_admin.sh'} (see poc/README.md)")
    print(f"submit a job: dose3d poc submit seg_fedavg --wait --root {args.root}")
    print(f"stop it with: dose3d poc down --root {args.root}")
    return 0


def _cmd_poc_submit(args: argparse.Namespace) -> int:
    from dose3d_fl.deploy.admin import SUBMIT_ERRORS
    from dose3d_fl.deploy.poc import PocError, poc_submit, resolve_job

    try:
        job = resolve_job(args.job)
        outcome = poc_submit(
            _poc_config(args),
            job,
            wait=args.wait,
            timeout=args.timeout,
            on_status=lambda status, seconds: print(f"[{seconds:6.0f} s] {status}", flush=True),
            on_progress=lambda line: print(f"  server: {line}", flush=True),
            admin_name=args.admin,
        )
    except (PocError, TimeoutError, *SUBMIT_ERRORS) as err:
        return fail(str(err))
    print(f"job {outcome.job_id}: {outcome.status}")
    if outcome.result_dir is not None:
        print(f"result: {outcome.result_dir}")
    return 0 if outcome.completed or not args.wait else 1


def _cmd_poc_status(args: argparse.Namespace) -> int:
    from dose3d_fl.deploy.poc import poc_status

    status = poc_status(_poc_config(args))
    for name, (pid, alive) in status.processes.items():
        print(f"{name:<24} pid {pid:<8} {'running' if alive else 'stopped'}")
    if status.error:
        print(status.error)
        return 1
    print(f"connected clients: {', '.join(status.clients) or '(none)'}")
    for job in status.jobs:
        print(f"job {job['job_id']}  {job['name']}  {job['status']}")
    return 0


def _cmd_poc_down(args: argparse.Namespace) -> int:
    from dose3d_fl.deploy.poc import PocError, poc_down

    try:
        pids = poc_down(_poc_config(args))
    except PocError as err:
        return fail(str(err))
    print(f"stopped {len(pids)} process(es): {pids}" if pids else "no POC process was running")
    return 0


def _cmd_provision(args: argparse.Namespace) -> int:
    from dose3d_fl.deploy.provision import ProvisionConfig, provision

    try:
        kits = provision(
            ProvisionConfig(
                project_file=args.project,
                workspace=args.workspace,
                server_host=args.server_host,
                fed_learn_port=args.port,
            )
        )
    except (RuntimeError, ValueError, FileNotFoundError) as err:
        return fail(str(err))
    print(f"server kit: {kits.server}")
    for name, kit in {**kits.clients, **kits.admins}.items():
        print(f"{name} kit: {kit}")
    print("give each participant its own kit only; sites continue with sites/DEPLOY.md")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``poc`` (``up``, ``submit``, ``status``, ``down``) and ``provision`` to the ``dose3d`` sub-commands."""
    poc = sub.add_parser(
        "poc", help="a federation on this host: NVFlare POC with real processes"
    ).add_subparsers(dest="poc_command", required=True)
    root_help = "POC folder (default runs/poc)"
    up = poc.add_parser("up", help="prepare the POC workspace and data, start server and clients")
    up.add_argument("--root", type=Path, default=Path("runs/poc"), help=root_help)
    up.add_argument("--sites", type=int, default=3, help="number of sites hospital-a, ... (default 3)")
    up.add_argument("--port", type=int, default=8002, help="server port on localhost (default 8002)")
    up.add_argument(
        "--patients",
        type=patient_counts,
        default=None,
        help="synthetic patients per site when data are missing",
    )
    up.add_argument("--seed", type=int, default=0, help="synthetic data seed")
    up.set_defaults(func=_cmd_poc_up)
    submit = poc.add_parser("submit", help="submit a job folder through the FLARE API")
    submit.add_argument("job", help="job folder, or a job name under jobs/ (e.g. seg_fedavg)")
    submit.add_argument(
        "--wait", action="store_true", help="wait, download the result, exit 0 only if completed"
    )
    submit.add_argument(
        "--timeout",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="with --wait: give up after SECONDS and say why the job has not finished, e.g. the sites it "
        "still needs (default 0: no limit)",
    )
    submit.add_argument(
        "--admin", default="admin@dose3d.org", help="submit as this POC admin (default: the project admin)"
    )
    submit.add_argument("--root", type=Path, default=Path("runs/poc"), help=root_help)
    submit.set_defaults(func=_cmd_poc_submit)
    status = poc.add_parser("status", help="processes, connected clients and jobs")
    status.add_argument("--root", type=Path, default=Path("runs/poc"), help=root_help)
    status.set_defaults(func=_cmd_poc_status)
    down = poc.add_parser("down", help="stop every POC process (jobs included) by PID")
    down.add_argument("--root", type=Path, default=Path("runs/poc"), help=root_help)
    down.set_defaults(func=_cmd_poc_down)

    prov = sub.add_parser(
        "provision", help="startup kits for a real federation (nvflare provision + site policy)"
    )
    prov.add_argument("-p", "--project", type=Path, default=Path("server/project.yml"), help="project file")
    prov.add_argument(
        "-w", "--workspace", type=Path, default=Path("runs/provision"), help="output (default runs/provision)"
    )
    prov.add_argument("--server-host", default=None, help="host clients connect to, if not the server's name")
    prov.add_argument("--port", type=int, default=None, help="server port (default: the project's)")
    prov.set_defaults(func=_cmd_provision)
