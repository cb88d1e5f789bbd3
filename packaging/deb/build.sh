#!/usr/bin/env bash
# Build the .deb: the binary, its man page and shell completions (generated
# from the binary), the systemd unit, the config as a conffile.
#   packaging/deb/build.sh                 release build, target/debian/*.deb
#   packaging/deb/build.sh --profile dev   the debug build (what the tests package)
# Extra arguments go to cargo deb (e.g. --output DIR).
set -euo pipefail
cd "$(dirname "$0")/../.."
profile=release
if [ "${1:-}" = --profile ]; then
    profile=$2
    shift 2
fi
dir=$profile
[ "$profile" = dev ] && dir=debug
target=${CARGO_TARGET_DIR:-target}
cargo build --quiet --profile "$profile" -p tanova-sync
bin=$target/$dir/tanova-sync
out=packaging/deb/generated
mkdir -p "$out"
"$bin" man | gzip -9n >"$out/tanova-sync.1.gz"
"$bin" completions bash >"$out/tanova-sync.bash"
"$bin" completions zsh >"$out/_tanova-sync"
"$bin" completions fish >"$out/tanova-sync.fish"
cargo deb --quiet -p tanova-sync --no-build --profile "$profile" "$@"
