"""`python -m devcluster.nodesim`: wire the simulator's parts together and run until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import pathlib
import shutil
import signal
import sys
import tempfile
import threading

from devcluster import isolation, nodesim
from devcluster.nodesim.api import Kube
from devcluster.nodesim.images import ImageStore, OciStore
from devcluster.nodesim.lifecycle import Kubelet
from devcluster.nodesim.runtime import ContainerRunner
from devcluster.nodesim.scheduling import SCHEDULER_NAME, Scheduler
from devcluster.nodesim.simulator import Simulator
from devcluster.nodesim.state import State
from devcluster.nodesim.volumes import Provisioner, Volumes

LOG = logging.getLogger("nodesim")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(nodesim.__doc__ or "").split("\n\n")[0])
    parser.add_argument("--kubeconfig", type=pathlib.Path, required=True)
    parser.add_argument(
        "--volumes-dir", type=pathlib.Path, required=True, help="claims live at <volumes-dir>/<namespace>/<claim>"
    )
    parser.add_argument("--images-dir", type=pathlib.Path, required=True, help="root of the local image store")
    parser.add_argument(
        "--oci-dir", type=pathlib.Path, default=None, help="OCI images: the *.oci.tar archives in this directory"
    )
    parser.add_argument("--nodes", required=True, help="comma-separated simulated node names")
    parser.add_argument(
        "--log-dir", type=pathlib.Path, required=True, help="container logs go to <log-dir>/<ns>_<pod>_<container>.log"
    )
    parser.add_argument(
        "--state-dir",
        type=pathlib.Path,
        default=None,
        help="per-pod scratch (emptyDirs, termination files); default: a temp dir removed at exit",
    )
    parser.add_argument(
        "--registry-faults",
        type=pathlib.Path,
        default=None,
        help="a JSON file {image reference: error} read on every pull: those pulls fail with that error, as a "
        "registry that rate-limits or is down would (tests inject registry trouble through it)",
    )
    parser.add_argument(
        "--scheduler-name", default=SCHEDULER_NAME, help="schedule only pods with this spec.schedulerName"
    )
    parser.add_argument(
        "--provisioner",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="bind Pending PVCs to directories under --volumes-dir",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s nodesim %(levelname)s %(message)s")
    nodes = [n.strip() for n in args.nodes.split(",") if n.strip()]
    if not nodes:
        parser.error("--nodes needs at least one name")
    try:
        how = isolation.require()
    except isolation.IsolationUnavailable as exc:
        LOG.error("refusing to run containers unisolated: %s", exc)
        return 2
    own_state = args.state_dir is None
    state_dir = pathlib.Path(tempfile.mkdtemp(prefix="nodesim-")) if own_state else args.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o755)  # containers switch uid and must reach their emptyDirs
    stop = threading.Event()
    # Signals only set a flag; the main thread does the orderly shutdown.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    state = State(kube=Kube(args.kubeconfig), nodes=nodes)
    oci_store = OciStore(args.oci_dir.resolve(), state_dir / "images") if args.oci_dir else None
    volumes_dir = args.volumes_dir.resolve()
    runner = ContainerRunner(state, volumes=Volumes(state, volumes_dir=volumes_dir), log_dir=args.log_dir.resolve())
    sim = Simulator(
        state,
        scheduler=Scheduler(state, scheduler_name=args.scheduler_name),
        provisioner=Provisioner(state, volumes_dir=volumes_dir, enabled=args.provisioner),
        runner=runner,
        kubelet=Kubelet(
            state,
            runner=runner,
            images=ImageStore(args.images_dir, oci_store=oci_store, faults=args.registry_faults),
            state_dir=state_dir.resolve(),
        ),
        isolated_as=how,
    )
    try:
        while not stop.is_set():
            try:
                sim.start()
                break
            except Exception as exc:  # API server not reachable yet: keep trying until stopped
                LOG.warning("start-up failed (%s: %s); retrying in 2s", type(exc).__name__, exc)
                stop.wait(2)
        while not stop.wait(1.0):
            pass
    finally:
        sim.shutdown()
        if own_state:
            shutil.rmtree(state_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
