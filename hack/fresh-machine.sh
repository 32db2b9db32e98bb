#!/usr/bin/env bash
# The README's two commands as a new user runs them, on this machine: a throwaway clone in a private (0700)
# home directory, empty caches (Go modules and build cache, pip, ~/.cache/slot-operator), nothing but the
# machine's toolchains on PATH. Prints the time of each phase and the per-binary build times.
#
#   hack/fresh-machine.sh [--user] [--source DIR] [--ref REF] [--test-runs N] [--logs DIR] [--keep]
#
# Everything runs in a private mount namespace whose /usr, /etc and /var are overlays on the host's: there,
# uidmap and buildah are removed first if the host has them (the make targets must install them), and whatever
# the run installs, or writes to /etc (an account, /etc/subuid), is gone with the namespace. The host and the
# other users of the machine see none of it.
# As root (default): the commands run as root with HOME in a new 0700 directory under /home.
# --user: the same as a temporary ordinary account (useradd, 0700 home, a subordinate id range of 65536 in
# /etc/subuid and /etc/subgid). An ordinary user cannot install packages: what the README names for them
# (uidmap, buildah, mmdebstrap) is installed first, as an administrator would.
# Phases: clone, `make demo` (cold), `make test` (N times, default 1), `make demo` again (warm).
# Run it as root (it creates the namespace, the home directory or the account). Exit 0 only when every phase
# passed.
set -uo pipefail

args=("$@")
source_repo=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
ref=HEAD
as_user=0
test_runs=1
keep=0
logs=
while [ $# -gt 0 ]; do
  case $1 in
    --user) as_user=1 ;;
    --source) source_repo=$2; shift ;;
    --ref) ref=$2; shift ;;
    --test-runs) test_runs=$2; shift ;;
    --logs) logs=$2; shift ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "fresh-machine: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$(id -u)" != 0 ]; then
  echo "fresh-machine: run as root: it creates a private home directory (and, with --user, an account)" >&2
  exit 2
fi
case $test_runs in ''|*[!0-9]*) echo "fresh-machine: --test-runs takes a number, not '$test_runs'" >&2; exit 2 ;; esac
commit=$(git -C "$source_repo" rev-parse --verify "$ref^{commit}") || {
  echo "fresh-machine: $source_repo has no commit $ref" >&2
  exit 2
}
logs=${logs:-/tmp/fresh-machine-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$logs"

if [ -z "${FRESH_MACHINE_LAYERS:-}" ]; then
  # Outside: make the overlays' upper layers, run this script again in a new mount namespace, then drop them.
  # Runs at the same time (root and --user, say) each hold a slice of the id ranges below, by a lock.
  for slice in 1 2 3; do
    exec {slice_lock}>"/tmp/fresh-machine-slice-$slice.lock"
    flock --nonblock "$slice_lock" && break
    exec {slice_lock}>&-
    slice=
  done
  [ -n "$slice" ] || { echo "fresh-machine: three runs are going already" >&2; exit 2; }
  layers=$(mktemp -d /tmp/fresh-machine-layers.XXXXXX) || exit 1
  # bash reads a script as it runs it: the run uses a copy, so editing or checking out this file cannot break it.
  cp "$0" "$layers/fresh-machine.sh"
  FRESH_MACHINE_SLICE=$slice FRESH_MACHINE_LAYERS=$layers unshare --mount --propagation private -- \
    bash "$layers/fresh-machine.sh" "${args[@]}" --source "$source_repo" --logs "$logs"
  status=$?
  rm -rf "$layers"
  exit "$status"
fi
for dir in usr etc var; do
  mkdir -p "$FRESH_MACHINE_LAYERS/$dir/upper" "$FRESH_MACHINE_LAYERS/$dir/work"
  mount -t overlay fresh-machine -o "lowerdir=/$dir,upperdir=$FRESH_MACHINE_LAYERS/$dir/upper,workdir=$FRESH_MACHINE_LAYERS/$dir/work" "/$dir" || exit 1
done
# Container storage on a plain directory (overlay storage cannot sit on an overlay), as on a fresh machine.
mkdir -p "$FRESH_MACHINE_LAYERS/containers" /var/lib/containers
mount --bind "$FRESH_MACHINE_LAYERS/containers" /var/lib/containers || exit 1
# Accounts made in here (--user's, the suite's rootless test's) exist only in here: their uids, gids and
# subordinate ranges come from ranges the host never hands out, so nothing outside takes them for its own (a
# test elsewhere that kills every process of "its" temporary uid, say), and they touch nothing outside.
slice=$FRESH_MACHINE_SLICE
uid_min=$(( 61000 + slice * 1000 )) sys_min=$(( 65000 + slice * 100 )) sub_min=$(( 700000000 + slice * 50000000 ))
sed -i -E "s/^(UID_MIN|GID_MIN)\s.*/\1 $uid_min/; s/^(UID_MAX|GID_MAX)\s.*/\1 $(( uid_min + 999 ))/;
  s/^(SUB_UID_MIN|SUB_GID_MIN)\s.*/\1 $sub_min/; s/^(SUB_UID_MAX|SUB_GID_MAX)\s.*/\1 $(( sub_min + 49999999 ))/" \
  /etc/login.defs
printf 'SYS_UID_MIN %s\nSYS_UID_MAX %s\nSYS_GID_MIN %s\nSYS_GID_MAX %s\n' "$sys_min" "$(( sys_min + 99 ))" \
  "$sys_min" "$(( sys_min + 99 ))" >>/etc/login.defs

say() { printf '[fresh-machine] %s\n' "$*" | tee -a "$logs/summary.txt"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }'; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

say "commit $(git -C "$source_repo" log -1 --format='%h %s' "$commit")"
say "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), load $(load)"
installed=$(dpkg-query -W -f '${Package} ${Status}\n' uidmap buildah 2>/dev/null | awk '/ installed$/ { print $1 }')
if [ -n "$installed" ]; then
  say "removing $(echo $installed) in this namespace only (the host keeps them)"
  DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq $installed >"$logs/apt-remove.log" 2>&1 || exit 1
fi
for tool in newuidmap newgidmap buildah; do
  if found=$(command -v "$tool"); then
    say "$tool is still on PATH ($found): this run does not prove that make installs it"
  fi
done

if [ "$as_user" = 1 ]; then
  account=fresh$$
  home=/home/$account
  useradd --create-home --home-dir "$home" --shell /bin/bash "$account" || exit 1
  grep -q "^$account:" /etc/subuid && grep -q "^$account:" /etc/subgid || {
    say "useradd gave $account no subordinate id range"
    exit 1
  }
  say "account $account (uid $(id -u "$account")), subordinate ids: $(grep "^$account:" /etc/subuid)"
  say "installing uidmap buildah mmdebstrap for $account (what the README has an ordinary user install)"
  { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq uidmap buildah mmdebstrap ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq uidmap buildah mmdebstrap; }
  } >"$logs/apt-user-tools.log" 2>&1 || { say "apt-get install failed: see $logs/apt-user-tools.log"; exit 1; }
  user_path=/usr/local/go/bin:/usr/local/bin:/usr/bin:/bin
else
  account=root
  home=$(mktemp -d /home/fresh-root.XXXXXX) || exit 1
  user_path=$PATH
fi
chmod 0700 "$home"
clone=$home/slot-operator
say "home $home (mode $(stat -c %a "$home")), clone $clone, logs $logs"

cleanup() {
  # A cluster a failed phase left running: its processes stop (root may signal the account's too); root then
  # removes the whole home, the claims' files of other uids included.
  if [ -f "$clone/.cluster/state.json" ] && [ -x "$clone/.venv/bin/python" ]; then
    ( cd "$clone" && .venv/bin/python -m devcluster.cluster down ) >"$logs/cluster-down.log" 2>&1 ||
      say "stopping the cluster failed: see $logs/cluster-down.log"
  fi
  if [ "$keep" = 1 ]; then
    say "kept $home"
  elif [ "$as_user" = 1 ]; then
    pkill -KILL -u "$account" 2>/dev/null
    userdel --remove "$account" 2>/dev/null
    rm -rf "$home"
  else
    rm -rf "$home"
  fi
}
trap cleanup EXIT

# The user's own environment, as after a login: no variable of this session leaks in.
as_new_user() {
  local run=()
  [ "$as_user" = 1 ] && run=(runuser -u "$account" --)
  "${run[@]}" env -i HOME="$home" USER="$account" LOGNAME="$account" PATH="$user_path" LANG=C.UTF-8 TERM=dumb \
    SHELL=/bin/bash "$@"
}

status=0
results=()
phase() {
  local name=$1; shift
  local log=$logs/$name.log started rc
  say "$name: started (load $(load))"
  started=$(now)
  # The CPU time of the phase's processes (the cluster's daemons, in their own sessions, aside): on a busy machine,
  # what it would at least take alone on its cores is that divided by the core count. `times` counts this shell's
  # waited-for children, so it runs here, not in a subshell.
  times >"$logs/.cpu-before"
  ( cd "$clone" && as_new_user "$@" ) >"$log" 2>&1
  rc=$?
  times >"$logs/.cpu-after"
  local took cpu; took=$(since "$started")
  cpu=$(cat "$logs/.cpu-before" "$logs/.cpu-after" | awk '
    function s(t) { split(t, p, /[ms]/); return p[1] * 60 + p[2] }
    NR == 2 || NR == 4 { total[NR] = s($1) + s($2) }
    END { printf "%.0f", total[4] - total[2] }')
  results+=("$(printf '%-14s %6ss  cpu %6ss  exit %s' "$name" "$took" "${cpu:-?}" "$rc")")
  say "$name: exit $rc after ${took}s, ${cpu:-?}s of CPU (load $(load)); log $log"
  grep -hE '\[devcluster.build\] .*built .*in |a first run on a fresh|^\[host-tools\] installed' "$log" |
    sed 's/^/    /' | tee -a "$logs/summary.txt"
  grep -hE '^=+ .*(passed|failed|error).* =+$' "$log" | tail -1 | sed 's/^/    /' | tee -a "$logs/summary.txt"
  if [ "$rc" != 0 ]; then
    status=1
    tail -25 "$log" | sed 's/^/    | /' | tee -a "$logs/summary.txt"
  fi
  return "$rc"
}

started=$(now)
git clone --quiet --no-local "$source_repo" "$clone" && git -C "$clone" checkout --quiet "$commit" || exit 1
[ "$as_user" = 1 ] && chown -R "$account:" "$clone"
results+=("$(printf '%-14s %6ss' clone "$(since "$started")")")

phase demo-cold make demo
for run in $(seq 1 "$test_runs"); do
  phase "test-$run" make test
done
phase demo-warm make demo

say "summary ($account, $(nproc) cores, load now $(load)):"
for line in "${results[@]}"; do say "  $line"; done
exit "$status"
