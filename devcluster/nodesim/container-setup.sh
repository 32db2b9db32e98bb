#!/bin/bash
# Container set-up, run by the node simulator inside the container's private mount namespace (as
# root there), before it execs the container's command with its identity switched.
#
#   container-setup.sh STAGE ROOTFS ROOTMODE WORKDIR {KIND SRC DST MODE}... -- ARGV...
#
# STAGE is a scratch directory of the container. ROOTFS empty: a directory image, the container
# sees the host filesystem with its volumes mounted over it. ROOTFS set: an OCI image's unpacked
# root filesystem, mounted at STAGE/root read-only (ROOTMODE ro, readOnlyRootFilesystem) or under
# a tmpfs overlay (rw) with /proc and a minimal /dev; DSTs and WORKDIR are then paths inside it
# (symlinks already resolved inside the image by the simulator) and ARGV chroots into STAGE/root.
# KIND is dir|file (image: a directory image's files, laid back only where a volume hides them),
# MODE is ro|rw. Everything it mounts disappears with the namespace. A failure before ARGV starts
# is written to STAGE/start-error (the container's StartError) and exits 128.
set -eu
container_path=${PATH-}
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
stage=$1 rootfs=$2 rootmode=$3 workdir=$4
shift 4
stage_path=$stage
# Every host path this script needs (its stage, each volume's source) is opened first and used
# through /proc/self/fd: a container mount over an ancestor (an emptyDir at /tmp, say) would
# otherwise hide paths that later mounts still need. `mount -c` keeps those paths as given; `-n` leaves the
# host's /run/mount/utab alone (not writable in a user namespace, and these mounts die with the namespace).
exec {stage_fd}<"$stage"
stage=/proc/self/fd/$stage_fd
declare -a sources=()
ops=("$@")
i=0
while [ "${ops[$i]}" != -- ]; do
  exec {fd}<"${ops[$((i + 1))]}"
  sources+=("/proc/self/fd/$fd")
  i=$((i + 4))
done
n=0
shadowed=
mounting=
# A failure before the command starts is the runtime's, not the container's: like runc, name the mount
# being set up, and leave the message where the simulator reports it as the container's StartError.
die() {
  msg=${mounting:+error mounting \"$mounting\" to rootfs at \"$dst\": }$*
  echo "nodesim: $msg" >&2
  echo "$msg" >"$stage/start-error" || true
  exit 128
}
set -E
trap 'die "$BASH_COMMAND failed"' ERR
# Replace directory $1 (in this namespace only) by a tmpfs holding bind mounts of
# its original entries, so mount points can be created in it without host writes.
shadow() {
  n=$((n + 1)); t=$stage/shadow$n
  mkdir -p "$t"
  mount -n -c -t tmpfs -o "mode=$(stat -c %a "$1")" nodesim-shadow "$t"
  chown "$(stat -c %u:%g "$1")" "$t"
  for e in "$1"/* "$1"/.[!.]* "$1"/..?*; do
    [ -e "$e" ] || [ -L "$e" ] || continue
    b=${e##*/}
    if [ -L "$e" ]; then ln -s "$(readlink "$e")" "$t/$b"
    elif [ -d "$e" ]; then mkdir "$t/$b"; mount -n -c --rbind "$e" "$t/$b"
    else : >"$t/$b"; mount -n -c --bind "$e" "$t/$b"; fi
  done
  mount -n -c --move "$t" "$1"
  shadowed="$shadowed
$1"
}
# A minimal /dev like an OCI runtime gives a container (hides the host's disks), at $1.
container_dev() {
  n=$((n + 1)); t=$stage/dev$n
  mkdir -p "$t"
  mount -n -c -t tmpfs -o mode=755,nosuid nodesim-dev "$t"
  for d in null zero full random urandom tty ptmx; do
    [ -e "/dev/$d" ] || continue
    : >"$t/$d"; mount -n -c --bind "/dev/$d" "$t/$d"
  done
  for d in pts shm mqueue; do
    [ -d "/dev/$d" ] || continue
    mkdir "$t/$d"; mount -n -c --rbind "/dev/$d" "$t/$d"
  done
  ln -s /proc/self/fd "$t/fd"; ln -s /proc/self/fd/0 "$t/stdin"
  ln -s /proc/self/fd/1 "$t/stdout"; ln -s /proc/self/fd/2 "$t/stderr"
  mount -n -c --move "$t" "$1"
  shadowed="$shadowed
$1"
}
# Make $2 exist as a mount point of kind $1 (dir|file).
mount_point() {
  if [ "$1" = dir ] && [ -d "$2" ] && [ ! -L "$2" ]; then return 0; fi
  if [ "$1" = file ] && [ -f "$2" ] && [ ! -L "$2" ]; then return 0; fi
  if [ -e "$2" ] || [ -L "$2" ]; then die "mount point $2 exists but is not a $1"; fi
  a=${2%/*}
  while [ -n "$a" ] && [ ! -d "$a" ]; do a=${a%/*}; done
  if [ -z "$a" ] && [ -n "$root" ]; then
    a=$root  # inside an image's root filesystem the root itself can be shadowed
  elif [ -z "$a" ]; then
    # Directly below /: shadowing / is not possible, create an empty host directory.
    top=${2#/}; top=/${top%%/*}
    [ "$top" = "$2" ] && [ "$1" = file ] && die "cannot create file mount point $2 directly below /"
    mkdir -p "$top" || die "cannot create mount point $top directly below / (not writable without real root)"
    a=$top
  fi
  case "$shadowed
" in
    *"
$a
"*) ;;
    *) shadow "$a" ;;
  esac
  if [ "$1" = dir ]; then mkdir -p "$2"; else mkdir -p "${2%/*}"; : >"$2"; fi
}
root=
if [ -n "$rootfs" ]; then
  # The image's root filesystem: read-only, or writable through an overlay whose upper layer is a
  # tmpfs (the unpacked image is shared by every container of that image and is never written).
  root=$stage_path/root
  mkdir -p "$root"
  mounting=$rootfs dst=/
  if [ "$rootmode" = ro ]; then
    mount -n -c --bind "$rootfs" "$root"
    mount -n -c -o remount,bind,ro "$root"
  else
    mkdir -p "$stage/rw"
    mount -n -c -t tmpfs -o mode=755 nodesim-rw "$stage/rw"
    mkdir "$stage/rw/upper" "$stage/rw/work"
    mount -n -c -t overlay -o "lowerdir=$rootfs,upperdir=$stage_path/rw/upper,workdir=$stage_path/rw/work" \
      nodesim-root "$root"
  fi
  mounting= dst=/proc
  mount_point dir "$root/proc"
  mount -n -c --rbind /proc "$root/proc"
  [ -d "$root/dev" ] || mount_point dir "$root/dev"
fi
container_dev "$root/dev"
k=0
while [ "$1" != -- ]; do
  kind=$1 dst=$root$3 mode=$4
  shift 4
  if [ "$kind" = image ]; then
    # Only when a volume hides it; the shadow this needs then stands over that volume's directory.
    if [ -d "$dst" ]; then k=$((k + 1)); continue; fi
    kind=dir
  fi
  mounting=${ops[$((k * 4 + 1))]}
  mount_point "$kind" "$dst"
  mount -n -c --bind "${sources[$k]}" "$dst"
  if [ "$mode" = ro ]; then mount -n -c -o remount,bind,ro "$dst"; fi
  mounting=
  k=$((k + 1))
done
shift
workdir=$root$workdir
if [ ! -d "$workdir" ]; then mount_point dir "$workdir"; fi
if [ "$rootmode" = ro ] && [ -n "$root" ]; then
  # Mount points made in a read-only root filesystem stood up a tmpfs over their parent: read-only too.
  while IFS= read -r d; do
    case "$d" in "$root" | "$root"/*) [ "$d" = "$root/dev" ] || mount -n -c -o remount,ro,bind "$d" ;; esac
  done <<<"$shadowed"
fi
# Close every host fd: the container must not reach the writable originals behind its mounts.
for src in "${sources[@]}" "$stage"; do
  eval "exec ${src##*/}<&-"
done
# With an image root filesystem ARGV chroots and changes to WORKDIR itself (enter_rootfs.py).
[ -n "$root" ] || cd "$workdir"
PATH=$container_path
exec "$@"
