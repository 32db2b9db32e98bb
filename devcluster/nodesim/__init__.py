"""Node simulator: plays scheduler, kubelet and a trivial volume provisioner for simulated nodes.

Modules, along the simulator's responsibilities: `api` (API client and watches),
`state` (caches, work queue), `simulator` (the controller loop), `scheduling`,
`volumes` (provisioner, volume sources, `projected` files), `lifecycle` (the
kubelet's pod sync, restarts, status), `probes`, `runtime` (processes, mounts:
container-setup.sh, enter_rootfs.py), `images` (directory and OCI images, `oci`
archives in devcluster/oci.py).

The local control plane (devcluster.cluster) has no kubelet, scheduler or container
runtime, and the machines running tests have no Docker. This process fills that gap
against the real API server so the real Job controller, garbage collector and TTL
controller see pods behave like on a cluster:

- registers one Node per `--nodes` name;
- scheduler: binds unscheduled pods (nodeSelector, required node affinity, claim
  existence, ReadWriteOncePod conflicts) or marks them `PodScheduled=False/Unschedulable`;
- kubelet: runs each container of a pod bound to one of its nodes as a local process,
  with the image's and pod's env, command/args semantics, uid/gid, capabilities,
  volumes (a claim is the directory `<volumes-dir>/<namespace>/<claim>`, read-only
  really enforced; emptyDir; configMap, secret, downwardAPI and projected volumes,
  among them the ServiceAccount token from the TokenRequest API, with
  KUBERNETES_SERVICE_HOST/PORT so in-cluster config works), a real termination-message
  file, HTTP/TCP startup, liveness and readiness probes (Ready, restarts), restarts as
  restartPolicy says, `activeDeadlineSeconds`, graceful kill on deletion, and writes pod
  status (phase, conditions, containerStatuses, restartCount, lastState) like a kubelet;
- podgc stand-in: an unscheduled pod that is being deleted is marked Failed (as the
  pod GC controller does), so the Job controller can drop its tracking finalizer;
- provisioner: a Pending PVC gets its directory (mkdir -p only) and `status.phase: Bound`.

Images resolve through the local image store (`images`): directory images
(devcluster/images/), then OCI images named in `*.oci.tar` archives under
`--oci-dir` (what `make image` writes to dist/); an unknown image gives
`ErrImagePull` then `ImagePullBackOff`, and is retried.

Isolation (runtime.py): each container gets a private mount namespace; directory
images see the host filesystem with their volumes mounted over it, OCI images run
chrooted into their unpacked root filesystem (read-only with readOnlyRootFilesystem).
This needs root, or root of a user namespace on the invoking user's subordinate ids
(devcluster/isolation.py, which the cluster and make targets enter); the simulator
refuses to start without it rather than run containers unisolated. Pods share the
host's network, as with `hostNetwork: true`: a probe connects to 127.0.0.1, and two
pods cannot listen on one port.

Simplifications (documented, deliberate): init containers run in order, each to
completion (restarted on failure unless restartPolicy is Never), but sidecars
(restartPolicy Always on an init container) and ephemeral containers are not
simulated; the crash-loop back-off is 1 s doubling to
10 s (the kubelet's 10 s to 5 min, scaled down); env `valueFrom` supports secretKeyRef,
configMapKeyRef (a missing one waits in CreateContainerConfigError, as the kubelet does) and
simple fieldRefs, and `envFrom` is skipped, both with a warning; projected tokens are written
once and not rotated; exec and gRPC probes are ignored with a warning; resources,
tolerations, taints and events are not simulated. A subPath must
already exist in the volume (a kubelet would create it, which would change the claim).
A volume mounted inside another volume's mount point shadows that mount point's
directory with a tmpfs if the inner mount point does not already exist there.

Usage: python -m devcluster.nodesim --kubeconfig PATH --volumes-dir DIR --images-dir DIR
                                    --nodes a,b --log-dir DIR
       [--oci-dir DIR] [--state-dir DIR] [--scheduler-name NAME] [--no-provisioner]
Runs until SIGTERM/SIGINT, then kills every container process it started and exits
(containers also get SIGKILL via setpriv --pdeathsig if the simulator itself is killed).
`--scheduler-name`/`--no-provisioner` let a second simulator share a cluster (tests).
"""
