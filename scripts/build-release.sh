#!/usr/bin/env bash
# Builds httpraft as it was released: `scripts/build-release.sh 0.1.0` checks the release's
# commit (from RELEASES) out of this repository's history into target/releases/<version>/src,
# builds it there in release mode, and prints the path of its httpraft binary. A binary
# already built for that commit is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
version="${1:?usage: scripts/build-release.sh VERSION (one of RELEASES)}"
commit="$(awk -v v="$version" '$1 == v { print $2 }' RELEASES)"
if [ -z "$commit" ]; then
    echo "build-release: $version is not in RELEASES" >&2
    exit 2
fi
if ! git cat-file -e "$commit^{commit}" 2>/dev/null; then
    echo "build-release: commit $commit of $version is not in this clone's history (a shallow clone? run git fetch --unshallow)" >&2
    exit 2
fi
root="target/releases/$version"
mkdir -p "$root"
# One build at a time per release: a second caller waits, then finds the binary built.
exec 9>"$root/.lock"
flock 9
bin="$root/target/release/httpraft"
stamp="$root/commit"
if [ -x "$bin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$commit" ]; then
    echo "$PWD/$bin"
    exit 0
fi
rm -rf "$root/src"
mkdir -p "$root/src"
git archive "$commit" | tar -x -C "$root/src"
# The release's own lock file and toolchain file pin what it was built with (this
# repository's .cargo/config.toml applies too: it only adds a cfg flag).
(cd "$root/src" && CARGO_TARGET_DIR="$PWD/../target" cargo build --release --locked -p httpraft >&2)
echo "$commit" > "$stamp"
echo "$PWD/$bin"
