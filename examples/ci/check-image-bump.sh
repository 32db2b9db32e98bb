#!/bin/sh
# Check a tag-bump pull request against the fleet before it merges: find the new agent image in the
# diff between BASE and HEAD, probe it against the Slots with `kubectl slot check` (a SlotImageCheck,
# docs/design.md §2.5), leave a JUnit report and a summary table, and fail with the plugin's exit code:
# 0 every selected Slot would be Ready; 64/66/65 the worst verdict (ImageBroken, NeedsReauth, NeedsInit);
# 1 no answer will come; 3 the check did not finish within CHECK_TIMEOUT.
#
# Usage: check-image-bump.sh BASE [HEAD]      run the check (HEAD defaults to HEAD)
#        check-image-bump.sh --find BASE [HEAD]   only print the new image reference(s), one a line
#
# The new image is what an added line of the diff sets, in any YAML file:
#   - a kustomize `images:` entry (name/newName with newTag or digest), e.g. `newTag: sha-4d5e6f-codex`;
#   - an `image:` line (a Slot's spec.image, a container's image) that names a tag or a digest.
# Run it in the repository that holds those files (the GitOps repository), with BASE fetched.
#
# Environment (all optional):
#   IMAGE_NAME       only this image repository counts (e.g. ghcr.io/example/agent-shell; default: any)
#   CHECK_NAMESPACE  the Slots' namespace (default: the kubeconfig context's)
#   SLOT_SELECTOR    which Slots, kubectl's label syntax (default: every Slot of the namespace)
#   CHECK_AS         UID:GID the new image runs as, when it is not the Slots' (e.g. 10001:10001)
#   CHECK_TIMEOUT    how long to wait for the answer (default 30m)
#   CHECK_NAME       the SlotImageCheck's name (default: ci-<GITHUB_RUN_ID>-<GITHUB_RUN_ATTEMPT>)
#   JUNIT_FILE       where the JUnit report goes (default: slot-image-check.junit.xml)
#   GITHUB_STEP_SUMMARY  set by GitHub Actions: the table is appended to it as Markdown
#   KUBECTL          the kubectl to run (default: kubectl; the kubectl-slot plugin must be on PATH)
#   KUBECONFIG       read by kubectl: the cluster whose Slots are checked, as an identity that may create,
#                    get, list and watch slotimagechecks in their namespace
set -eu

find_only=false
if [ "${1:-}" = "--find" ]; then
    find_only=true
    shift
fi
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 [--find] BASE [HEAD]" >&2
    exit 1
fi
base=$1
head=${2:-HEAD}

# The line numbers (in HEAD) of the lines the diff adds to one file.
added_lines() {
    git diff --no-color --no-ext-diff -U0 "$base" "$head" -- "$1" |
        awk '/^@@ / { split($3, range, ","); start = substr(range[1], 2); count = (range[2] == "" ? 1 : range[2]);
                      for (i = 0; i < count; i++) print start + i }'
}

# The image references that the added lines of one file set: a changed `image:` line, or a kustomize
# images entry with a changed name, newName, newTag or digest (the whole entry, read from HEAD).
images_set_in() {
    lines=$(added_lines "$1")
    [ -n "$lines" ] || return 0
    git show "$head:$1" | awk -v lines="$lines" '
        function value(text) {
            sub(/^[^:]*:[ \t]*/, "", text); sub(/[ \t]+#.*$/, "", text); sub(/[ \t]+$/, "", text)
            gsub(/^["\047]|["\047]$/, "", text)
            return text
        }
        function flush() {
            if (entry && hit && (tag != "" || digest != "")) {
                print (newname != "" ? newname : name) (digest != "" ? "@" digest : ":" tag)
            }
            entry = 0; hit = 0; name = ""; newname = ""; tag = ""; digest = ""
        }
        BEGIN { n = split(lines, list, "\n"); for (i = 1; i <= n; i++) added[list[i]] = 1 }
        /^[ \t]*#/ { next }
        /^[^ \t-]/ { flush() }
        /^[ \t]*-[ \t]+name:/ { flush(); entry = 1; name = value($0); hit = (FNR in added); next }
        entry && /^[ \t]+newName:/ { newname = value($0); hit = hit || (FNR in added); next }
        entry && /^[ \t]+newTag:/ { tag = value($0); hit = hit || (FNR in added); next }
        entry && /^[ \t]+digest:/ { digest = value($0); hit = hit || (FNR in added); next }
        /^[ \t]*(-[ \t]+)?image:[ \t]*[^ \t]/ && (FNR in added) {
            ref = value($0)
            if (ref ~ /@/ || ref ~ /:[^\/]*$/) print ref
        }
        END { flush() }'
}

# Every distinct new image reference of the pull request (only IMAGE_NAME's, when set).
new_images() {
    git diff --no-color --no-ext-diff --name-only --diff-filter=AMR "$base" "$head" -- '*.yaml' '*.yml' |
        while IFS= read -r file; do images_set_in "$file"; done |
        while IFS= read -r ref; do
            # The repository: without @digest, and without :tag (a registry's :port is followed by a /).
            repository=$(printf '%s\n' "${ref%@*}" | sed 's/:[^:/]*$//')
            if [ -z "${IMAGE_NAME:-}" ] || [ "$repository" = "$IMAGE_NAME" ]; then printf '%s\n' "$ref"; fi
        done | sort -u
}

images=$(new_images)
if $find_only; then
    [ -z "$images" ] || printf '%s\n' "$images"
    exit 0
fi

summary() {
    [ -z "${GITHUB_STEP_SUMMARY:-}" ] || printf '%s\n' "$@" >>"$GITHUB_STEP_SUMMARY"
}

if [ -z "$images" ]; then
    echo "No agent image changed between $base and $head: nothing to check."
    summary "### Slot image check" "" "No agent image changed in this pull request: nothing to check."
    exit 0
fi
if [ "$(printf '%s\n' "$images" | wc -l)" -gt 1 ]; then
    echo "This pull request sets more than one new image; check one at a time (IMAGE_NAME, SLOT_SELECTOR):" >&2
    printf '  %s\n' $images >&2
    exit 1
fi
image=$images
name=${CHECK_NAME:-ci-${GITHUB_RUN_ID:-$(date +%s)}-${GITHUB_RUN_ATTEMPT:-1}}
junit=${JUNIT_FILE:-slot-image-check.junit.xml}

set -- slot check --image "$image" --name "$name"
[ -z "${CHECK_NAMESPACE:-}" ] || set -- "$@" -n "$CHECK_NAMESPACE"
[ -z "${SLOT_SELECTOR:-}" ] || set -- "$@" -l "$SLOT_SELECTOR"
[ -z "${CHECK_AS:-}" ] || set -- "$@" --as "$CHECK_AS"

echo "Checking $image against the Slots (slotimagecheck/$name)..."
code=0
"${KUBECTL:-kubectl}" "$@" --wait --timeout "${CHECK_TIMEOUT:-30m}" -o junit >"$junit" || code=$?
# The same check once more, as the table (the plugin waits on the check of that name, it probes nothing).
table=$("${KUBECTL:-kubectl}" "$@" --wait --timeout 1m -o table) || true
printf '%s\n' "$table"
summary "### Slot image check: \`$image\`" "" '```' "$table" '```' ""
case $code in
    0) verdict="every selected Slot would be Ready: safe to merge" ;;
    64 | 65 | 66) verdict="a Slot would need a human first (exit $code): do what the table says before this merges" ;;
    3) verdict="the check did not finish within ${CHECK_TIMEOUT:-30m} (exit 3)" ;;
    *) verdict="no answer (exit $code): see the message above" ;;
esac
echo "$verdict"
summary "$verdict"
exit "$code"
